"""The running total of stored bytes per scope: what the quota counts, kept by SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orfs.emulator.store import NewFile, QuotaExceeded, Scope, Store

A = Scope("")
B = Scope("6f1c1d3e-8a4b-4c47-9d2e-0a5b7c9d1e2f")
B_OPENAI = Scope(B.workspace, "openai")


def true_sum(data_dir: Path, scope: Scope) -> int:
    """SUM(size) of the live files, straight from the database (the old way)."""
    with sqlite3.connect(data_dir / "emulator.sqlite3") as db:
        row = db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE workspace = ?"
                         " AND provider = ? AND deleted = 0",
                         (scope.workspace, scope.provider)).fetchone()
    return int(row[0])


def add(store: Store, scope: Scope, size: int, name: str = "f") -> str:
    return store.add_bytes(scope, b"x" * size, filename=name, mime_type="text/plain",
                           downloadable=True).id


def test_used_follows_adds_and_deletes_per_scope(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        assert store.used(A) == 0 and store.remaining(A) == store.quota
        ids = [add(store, A, n) for n in (10, 20, 30)]
        add(store, B, 7)
        add(store, B_OPENAI, 5)
        assert (store.used(A), store.used(B), store.used(B_OPENAI)) == (60, 7, 5)
        assert store.delete(A, ids[1]) is not None
        assert store.delete(A, ids[1]) is None  # a second delete changes nothing
        assert store.delete(B, ids[0]) is None  # another scope's id: nothing
        assert store.used(A) == 40 == true_sum(tmp_path, A)
        assert store.used(B) == 7 == true_sum(tmp_path, B)
        add(store, A, 0)
        assert store.used(A) == 40
    finally:
        store.close()


def test_used_is_kept_across_restart(tmp_path: Path) -> None:
    store = Store(tmp_path, quota=100)
    ids = [add(store, A, 30) for _ in range(3)]
    store.delete(A, ids[0])
    add(store, B, 99)
    store.close()

    store = Store(tmp_path, quota=100)
    try:
        assert (store.used(A), store.used(B)) == (60, 99)
        with pytest.raises(QuotaExceeded):
            add(store, A, 41)
        add(store, A, 40)  # exactly full
        store.delete(A, ids[1])
    finally:
        store.close()
    store = Store(tmp_path, quota=100)
    try:
        assert store.used(A) == 70 == true_sum(tmp_path, A)
    finally:
        store.close()


def test_a_database_from_before_the_total_gets_it_at_open(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ids = [add(store, A, 11) for _ in range(4)]
    add(store, B_OPENAI, 3)
    store.delete(A, ids[2])
    store.close()
    with sqlite3.connect(tmp_path / "emulator.sqlite3") as db:  # as an older version left it
        db.executescript("DROP TRIGGER usage_insert; DROP TRIGGER usage_delete;"
                         " DROP TABLE usage;")
    store = Store(tmp_path)
    try:
        assert (store.used(A), store.used(B_OPENAI), store.used(B)) == (33, 3, 0)
        store.delete(A, ids[0])
        assert store.used(A) == 22
    finally:
        store.close()


def test_two_stores_on_one_directory_agree(tmp_path: Path) -> None:
    # Tests seed a running emulator's data directory through a second Store.
    first, second = Store(tmp_path), Store(tmp_path)
    try:
        fid = add(second, A, 500)
        assert first.used(A) == 500
        first.delete(A, fid)
        assert second.used(A) == 0
    finally:
        first.close()
        second.close()


def test_add_many_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path, quota=100)
    try:
        def temps(*sizes: int) -> list[NewFile]:
            out = []
            for i, n in enumerate(sizes):
                t = store.temp_path()
                t.write_bytes(b"y" * n)
                out.append(NewFile(t, f"n{i}", "text/plain", n))
            return out

        with pytest.raises(QuotaExceeded, match="the files need 101"):
            store.add_many(A, temps(50, 51), downloadable=True)
        assert store.used(A) == 0 and store.page(A, after_seq=None, limit=10)[0] == []
        assert list(store.blobs_dir.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []
        recs = store.add_many(A, temps(50, 50), downloadable=True)
        assert [r.filename for r in recs] == ["n0", "n1"] and recs[0].seq < recs[1].seq
        assert recs[0].created_us < recs[1].created_us
        assert [r.id for r in store.page(A, after_seq=None, limit=10)[0]] == [r.id for r in recs]
        assert all(store.blob_path(r.id).read_bytes() == b"y" * 50 for r in recs)
        assert list(store.tmp_dir.iterdir()) == []
    finally:
        store.close()


def test_a_create_never_scans_the_files(tmp_path: Path) -> None:
    # O(1) per create, whatever the store holds: the quota comes from one row of
    # `usage`, never from a SUM over `files`.
    store = Store(tmp_path)
    try:
        for i in range(50):
            add(store, A, 1, f"f{i}")
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        fid = add(store, A, 1)
        store.delete(A, fid)
        store.used(A)
        store._db.set_trace_callback(None)
        assert statements and not [s for s in statements if "SUM(" in s.upper()]
        plan = store._db.execute(
            "EXPLAIN QUERY PLAN SELECT bytes FROM usage WHERE workspace = ? AND provider = ?",
            ("", "")).fetchall()
        assert "PRIMARY KEY" in str(plan) or "USING" in str(plan), plan
    finally:
        store.close()
