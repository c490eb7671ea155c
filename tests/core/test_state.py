"""The mount's small SQLite state: overrides, upload journal, errors log, modes."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from orfs.core.state import JournalEntry, Override, State


@pytest.fixture
def state(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = State(tmp_path / "cache")
    yield s
    s.close()


def test_database_and_directory_are_private(tmp_path: Path) -> None:
    root = tmp_path / "new" / "cache"
    s = State(root)
    s.set_override("f", mode=0o644)  # forces a WAL write
    try:
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        for p in root.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert (root / "state.db").exists()
    finally:
        s.close()


def test_override_merges_fields(state: State) -> None:
    assert state.get_override("f1") is None
    state.set_override("f1", mode=0o600)
    state.set_override("f1", mtime_ns=123, atime_ns=456)
    assert state.get_override("f1") == Override(mode=0o600, mtime_ns=123, atime_ns=456)
    state.set_override("f1", mode=0o640)
    assert state.get_override("f1") == Override(mode=0o640, mtime_ns=123, atime_ns=456)


def test_override_moves_to_the_new_id_and_drops(state: State) -> None:
    state.set_override("old", mode=0o600, mtime_ns=5)
    state.move_override("old", "new")
    assert state.get_override("old") is None
    assert state.get_override("new") == Override(mode=0o600, mtime_ns=5, atime_ns=None)
    state.move_override("absent", "new")  # nothing to move: keeps what new has
    assert state.get_override("new") is not None
    state.drop_override("new")
    assert state.get_override("new") is None


def test_overrides_survive_reopen(tmp_path: Path) -> None:
    s = State(tmp_path)
    s.set_override("f", mode=0o600)
    s.close()
    s = State(tmp_path)
    assert s.get_override("f") == Override(mode=0o600)
    s.close()


def test_journal_round_trip_across_reopen(tmp_path: Path) -> None:
    s = State(tmp_path)
    a = JournalEntry(key="k1", filename="dir/a\x00b.txt", staged=str(tmp_path / "s1"),
                     state="pending", created=1.0, mode=0o644, mtime_ns=99)
    b = JournalEntry(key="k2", filename="b.csv", staged=str(tmp_path / "s2"),
                     state="uploading", replaces="file_old", created=2.0)
    s.journal_add(b)
    s.journal_add(a)
    s.journal_update("k2", state="failed", error="HTTP 400: unsupported type")
    s.close()

    s = State(tmp_path)
    entries = s.journal_entries()
    assert entries == [
        a,
        JournalEntry(key="k2", filename="b.csv", staged=str(tmp_path / "s2"),
                     state="failed", error="HTTP 400: unsupported type",
                     replaces="file_old", created=2.0),
    ]
    s.journal_remove("k1")
    assert [e.key for e in s.journal_entries()] == ["k2"]
    s.close()


def test_journal_rejects_unknown_fields_and_states(state: State) -> None:
    state.journal_add(JournalEntry(key="k", filename="f", staged="/s", state="pending"))
    with pytest.raises(TypeError):
        state.journal_update("k", colour="red")
    with pytest.raises(ValueError):
        state.journal_update("k", state="done")
    with pytest.raises(ValueError):
        state.journal_add(JournalEntry(key="x", filename="f", staged="/s",
                                       state="bogus"))  # type: ignore[arg-type]


def test_recent_errors_keeps_the_last_hour(state: State) -> None:
    now = time.time()
    state.record_error("old", when=now - 7200)
    state.record_error("first")
    state.record_error("second")
    assert [m for _, m in state.recent_errors()] == ["first", "second"]
    assert [m for _, m in state.recent_errors(seconds=3 * 3600)] == ["old", "first", "second"]
    t, _ = state.recent_errors()[0]
    assert abs(t - now) < 60


def test_content_index_round_trip(state: State) -> None:
    state.content_put("a", size=10, complete=False, atime=1.0)
    state.content_put("a", size=12, complete=True, atime=2.0)
    state.content_touch({"a": 3.0, "missing": 4.0})
    rec = state.content_get("a")
    assert rec is not None and (rec.size, rec.complete, rec.atime) == (12, True, 3.0)
    assert [r.file_id for r in state.content_records()] == ["a"]
    state.content_remove("a")
    assert state.content_get("a") is None


def test_ages_survive_reopen_and_drop(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    s = State(tmp_path)
    s.set_age("b", (when, "a"))
    s.set_age("c", (when, "c"))
    s.drop_ages(["c", "never"])
    s.close()
    s = State(tmp_path)
    assert s.ages == {"b": (when, "a")}
    s.drop_ages(["b"])
    s.close()
    assert State(tmp_path).ages == {}


def test_a_database_of_schema_3_gains_the_ages_table(tmp_path: Path) -> None:
    import sqlite3
    from datetime import UTC, datetime

    s = State(tmp_path)
    s.close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript("DROP TABLE ages; PRAGMA user_version=3;")
    db.close()
    s = State(tmp_path)
    assert s.ages == {}
    s.set_age("b", (datetime(2024, 5, 1, tzinfo=UTC), "a"))
    s.close()
    assert State(tmp_path).ages.keys() == {"b"}
