"""The emulator's persistent state: file metadata in SQLite, bytes in blob files.

Layout under the data directory::

    emulator.sqlite3     metadata (one row per file ever created, see below)
    blobs/<file id>      the bytes of each live file (named by id, never by filename)
    tmp/                 uploads being received; emptied at start

A storage scope is a (workspace, provider) pair: each workspace has its own
files, and each provider (OpenRouter storage, openai, anthropic) is its own store
inside it, as BYOK storage lives with that provider. The quota is per scope.

The bytes stored per scope (what the quota counts) are kept in the ``usage``
table, maintained by triggers in the same transaction as each insert and
deletion: a create costs O(1) SQL whatever the store holds, the total survives
restarts, and stays exact when a second Store opens the same database (tests
seed that way). A database from before that table gets it filled once at open.

Deleted files keep their row as a tombstone (bytes removed, never listed or
served) so an ``after``/``after_id`` naming a file deleted between two pages
still pages on from the right place.

One SQLite connection, shared by the event loop and worker threads under a
lock: every statement is small, so contention is not a concern.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_QUOTA = 10 * 1024**3
ID_PREFIX = "or_file_"
_ID_ALPHABET = string.digits + string.ascii_letters  # base62
_ID_LENGTH = 24

_SCHEMA = ["""
CREATE TABLE IF NOT EXISTS files (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order, never reused
    id           TEXT NOT NULL UNIQUE,
    workspace    TEXT NOT NULL,                      -- '' = the key's default workspace
    provider     TEXT NOT NULL,                      -- '' = OpenRouter storage
    filename     TEXT NOT NULL,
    mime_type    TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created_us   INTEGER NOT NULL,                   -- microseconds since the epoch, UTC
    downloadable INTEGER NOT NULL,
    deleted      INTEGER NOT NULL DEFAULT 0
);
""", """
CREATE INDEX IF NOT EXISTS files_scope ON files (workspace, provider, deleted, seq)
""", """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
""", """
CREATE TABLE IF NOT EXISTS usage (
    workspace TEXT NOT NULL,
    provider  TEXT NOT NULL,
    bytes     INTEGER NOT NULL,                      -- SUM(size) of the live files
    PRIMARY KEY (workspace, provider)
) WITHOUT ROWID
""", """
CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON files WHEN NEW.deleted = 0
BEGIN
    INSERT INTO usage (workspace, provider, bytes) VALUES (NEW.workspace, NEW.provider, NEW.size)
    ON CONFLICT (workspace, provider) DO UPDATE SET bytes = bytes + excluded.bytes;
END
""", """
CREATE TRIGGER IF NOT EXISTS usage_delete AFTER UPDATE OF deleted ON files
WHEN OLD.deleted = 0 AND NEW.deleted != 0
BEGIN
    UPDATE usage SET bytes = bytes - OLD.size
    WHERE workspace = OLD.workspace AND provider = OLD.provider;
END
"""]
# Fills the usage table of a database created before it existed.
_FILL_USAGE = """
INSERT INTO usage (workspace, provider, bytes)
SELECT workspace, provider, SUM(size) FROM files WHERE deleted = 0 GROUP BY workspace, provider
"""
_COLUMNS = "seq, id, workspace, provider, filename, mime_type, size, created_us, downloadable"


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """Where a file lives: a workspace ('' = default) and a provider ('' = OpenRouter)."""

    workspace: str = ""
    provider: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class FileRecord:
    seq: int
    id: str
    scope: Scope
    filename: str
    mime_type: str
    size: int
    created_us: int
    downloadable: bool

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_us / 1_000_000, tz=UTC)

    @property
    def created_at_iso(self) -> str:
        """ISO 8601 UTC with microseconds and a ``Z``, as the service writes it."""
        seconds, micros = divmod(self.created_us, 1_000_000)
        base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{base}.{micros:06d}Z"

    @property
    def created_unix(self) -> int:
        return self.created_us // 1_000_000


class QuotaExceeded(Exception):
    """Storing the file would take its scope past the quota."""


@dataclasses.dataclass(frozen=True, slots=True)
class NewFile:
    """A received temp file to adopt, with what the row records of it."""

    temp: Path
    filename: str
    mime_type: str
    size: int


# Random bytes to base62 in one C call: bytes 248..255 are dropped (248 = 4 * 62,
# so every character stays equally likely), the rest map to b % 62.
_ID_TABLE = bytes(ord(_ID_ALPHABET[b % 62]) for b in range(256))
_ID_REJECT = bytes(range(248, 256))


def new_file_id() -> str:
    while True:  # 32 bytes leave fewer than 24 characters about once in a million draws
        chars = secrets.token_bytes(32).translate(_ID_TABLE, _ID_REJECT)
        if len(chars) >= _ID_LENGTH:
            return ID_PREFIX + chars[:_ID_LENGTH].decode("ascii")


def _record(row: tuple[int, str, str, str, str, str, int, int, int]) -> FileRecord:
    seq, fid, workspace, provider, filename, mime, size, created_us, downloadable = row
    return FileRecord(seq, fid, Scope(workspace, provider), filename, mime, size, created_us,
                      bool(downloadable))


class Store:
    """Files of every scope, persisted under ``data_dir``."""

    def __init__(self, data_dir: Path, quota: int = DEFAULT_QUOTA) -> None:
        self.data_dir = data_dir
        self.quota = quota
        self.blobs_dir = data_dir / "blobs"
        self.tmp_dir = data_dir / "tmp"
        for d in (data_dir, self.blobs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # uploads cut short by a previous stop
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / "emulator.sqlite3", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL without a sync per commit: a crash of the process loses nothing, a
        # power cut may lose the last commits but never corrupts. Right for an
        # emulator, and it takes the fsync out of every create.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("BEGIN IMMEDIATE")  # two processes opening at once: one at a time
        try:
            had_usage = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage'"
            ).fetchone() is not None
            for statement in _SCHEMA:
                self._db.execute(statement)
            if not had_usage:
                self._db.execute(_FILL_USAGE)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        row = self._db.execute("SELECT MAX(created_us) FROM files").fetchone()
        self._last_us: int = row[0] or 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- temporary files ------------------------------------------------------

    def temp_path(self) -> Path:
        """A fresh path in tmp/ for an upload being received."""
        return self.tmp_dir / f"upload-{secrets.token_hex(8)}"

    def blob_path(self, file_id: str) -> Path:
        # Ids are generated here (prefix + base62), so they are safe file names;
        # the caller only passes ids read back from the database.
        return self.blobs_dir / file_id

    # -- queries ---------------------------------------------------------------

    def used(self, scope: Scope) -> int:
        """Bytes of the scope's live files (one primary-key lookup)."""
        with self._lock:
            return self._used(scope)

    def _used(self, scope: Scope) -> int:
        row = self._db.execute(
            "SELECT bytes FROM usage WHERE workspace = ? AND provider = ?",
            (scope.workspace, scope.provider),
        ).fetchone()
        return int(row[0]) if row else 0

    def remaining(self, scope: Scope) -> int:
        return max(0, self.quota - self.used(scope))

    def _live_row(self, scope: Scope, file_id: str) -> Any:
        """The row of a live file of ``scope`` (caller holds the lock), or None."""
        return self._db.execute(
            f"SELECT {_COLUMNS} FROM files"
            " WHERE id = ? AND workspace = ? AND provider = ? AND deleted = 0",
            (file_id, scope.workspace, scope.provider),
        ).fetchone()

    def get(self, scope: Scope, file_id: str) -> FileRecord | None:
        with self._lock:
            row = self._live_row(scope, file_id)
        return _record(row) if row else None

    def seq_of(self, scope: Scope, file_id: str) -> int | None:
        """The position of a file of this scope, deleted or not (for ``after``)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM files WHERE id = ? AND workspace = ? AND provider = ?",
                (file_id, scope.workspace, scope.provider),
            ).fetchone()
        return int(row[0]) if row else None

    def page(self, scope: Scope, *, after_seq: int | None, limit: int,
             descending: bool = False) -> tuple[list[FileRecord], bool]:
        """Up to ``limit`` live files after position ``after_seq``, and whether more follow."""
        if descending:
            cond, order = "seq < ?", "DESC"
            bound = after_seq if after_seq is not None else 2**63 - 1
        else:
            cond, order = "seq > ?", "ASC"
            bound = after_seq if after_seq is not None else 0
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM files"
                f" WHERE workspace = ? AND provider = ? AND deleted = 0 AND {cond}"
                f" ORDER BY seq {order} LIMIT ?",
                (scope.workspace, scope.provider, bound, limit + 1),
            ).fetchall()
        records = [_record(r) for r in rows]
        return records[:limit], len(records) > limit

    # -- changes ---------------------------------------------------------------

    def add(self, scope: Scope, temp: Path, *, filename: str, mime_type: str, size: int,
            downloadable: bool) -> FileRecord:
        """Adopt a received temp file as a new file of ``scope``.

        The temp file is moved into blobs/ (or removed on failure). Raises
        QuotaExceeded when the scope has no room for ``size`` more bytes.
        """
        return self.add_many(scope, [NewFile(temp, filename, mime_type, size)],
                             downloadable=downloadable)[0]

    def add_many(self, scope: Scope, files: Sequence[NewFile], *,
                 downloadable: bool) -> list[FileRecord]:
        """Adopt received temp files as new files of ``scope``, all or none, in order.

        One transaction, so thousands of small files cost one commit. The temp
        files are moved into blobs/ (or removed on failure). Raises
        QuotaExceeded, storing nothing, when the scope has no room for them all.
        """
        # Bytes first, outside the lock: a crash before the rows commit leaves
        # orphan blobs, never a row without bytes. Ids are random (a collision
        # would fail the UNIQUE constraint and undo it all).
        placed: list[tuple[str, NewFile]] = []
        records: list[FileRecord] = []
        try:
            for nf in files:
                file_id = new_file_id()
                os.replace(nf.temp, self.blob_path(file_id))
                placed.append((file_id, nf))
            with self._lock:
                used = self._used(scope)
                needed = sum(nf.size for nf in files)
                if used + needed > self.quota:
                    what = "the file needs" if len(files) == 1 else "the files need"
                    raise QuotaExceeded(
                        f"workspace storage quota exceeded: {used} of {self.quota} bytes used,"
                        f" {what} {needed}"
                    )
                self._db.execute("BEGIN")
                try:
                    for file_id, nf in placed:
                        # Creation times never repeat or go backwards, so
                        # (created_at, id) order and the sequence order are the same.
                        created_us = max(time.time_ns() // 1000, self._last_us + 1)
                        self._last_us = created_us
                        cur = self._db.execute(
                            "INSERT INTO files (id, workspace, provider, filename, mime_type,"
                            " size, created_us, downloadable) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (file_id, scope.workspace, scope.provider, nf.filename,
                             nf.mime_type, nf.size, created_us, int(downloadable)),
                        )
                        assert cur.lastrowid is not None
                        records.append(FileRecord(cur.lastrowid, file_id, scope, nf.filename,
                                                  nf.mime_type, nf.size, created_us,
                                                  downloadable))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except BaseException:
            for file_id, _ in placed:
                self.blob_path(file_id).unlink(missing_ok=True)
            raise
        finally:
            for nf in files:
                nf.temp.unlink(missing_ok=True)
        return records

    def add_bytes(self, scope: Scope, data: bytes, *, filename: str, mime_type: str,
                  downloadable: bool) -> FileRecord:
        """Store small in-memory content (seeding)."""
        temp = self.temp_path()
        temp.write_bytes(data)
        return self.add(scope, temp, filename=filename, mime_type=mime_type, size=len(data),
                        downloadable=downloadable)

    def delete(self, scope: Scope, file_id: str) -> FileRecord | None:
        """Delete a live file; None when the scope has no such file."""
        with self._lock:
            row = self._live_row(scope, file_id)
            if row is None:
                return None
            self._db.execute("UPDATE files SET deleted = 1 WHERE id = ?", (file_id,))
        # An open download keeps reading the unlinked blob until it finishes.
        self.blob_path(file_id).unlink(missing_ok=True)
        return _record(row)

    # -- small persistent settings (seeding marker) ----------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
