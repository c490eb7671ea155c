"""Small persistent state of one mount, kept in its cache directory.

One SQLite database, ``root/state.db`` (WAL, 0600, in a 0700 directory), holds:

- the content index of :class:`orfs.core.cache.ContentCache` (size, complete flag,
  last access and whether the bytes were adopted from an upload, per file id);
- per-file attribute overrides (chmod and utimens, which the API cannot store);
- per-file names a file was created with, where the service stored another;
- per-file ages: the place in the duplicate order a rewrite inherited from the file it
  replaced (``orfs.core.names.layout``);
- the upload journal, so pending uploads survive a crash;
- a short log of recent errors for ``orfs status``.

Every call is synchronous: SQLite answers these in well under a millisecond, so the
core calls them straight from its trio handlers. Nothing here ever stores the API key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

DB_NAME = "state.db"
SCHEMA_VERSION = 4
# The error log is for "what went wrong lately"; older lines are pruned on insert.
ERROR_KEEP_SECONDS = 24 * 3600
ERROR_KEEP_ROWS = 1000

# queued: closed, durable, waiting for its background upload (--uploads async).
JournalState = Literal["pending", "queued", "uploading", "failed"]
JOURNAL_STATES: frozenset[str] = frozenset({"pending", "queued", "uploading", "failed"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS content (
    id       TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    atime    REAL NOT NULL,
    adopted  INTEGER NOT NULL DEFAULT 0,
    ranges   TEXT
);
CREATE TABLE IF NOT EXISTS created_names (
    id       TEXT PRIMARY KEY,
    filename TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ages (
    id       TEXT PRIMARY KEY,
    created  TEXT NOT NULL,
    tie      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS overrides (
    id       TEXT PRIMARY KEY,
    mode     INTEGER,
    mtime_ns INTEGER,
    atime_ns INTEGER
);
CREATE TABLE IF NOT EXISTS journal (
    key      TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    staged   TEXT NOT NULL,
    state    TEXT NOT NULL,
    error    TEXT,
    replaces TEXT,
    created  REAL NOT NULL,
    mode     INTEGER,
    mtime_ns INTEGER,
    attempted REAL,
    closed   REAL,
    next_try REAL
);
CREATE TABLE IF NOT EXISTS errors (
    time     REAL NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_time ON errors(time);
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Override:
    """What chmod/utimens set on a file id through this mount (None: not set)."""

    mode: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class JournalEntry:
    """One upload that has not finished yet.

    ``filename`` is the raw remote name; ``staged`` the path of the staged bytes;
    ``replaces`` the id of the remote file to delete once the upload succeeded.
    """

    key: str
    filename: str
    staged: str
    state: JournalState
    error: str | None = None
    replaces: str | None = None
    created: float = 0.0
    mode: int | None = None
    mtime_ns: int | None = None
    # Wall time the current upload's first attempt started (None: never sent). An
    # upload that failed ambiguously, or a mount that died mid-upload, may have landed:
    # the next attempt first looks for a file of this name and size created since.
    attempted: float | None = None
    # Wall time of the close (flush) that made the staged bytes final; None while a
    # writer may still be adding to them. After a crash only closed files are uploaded.
    closed: float | None = None
    # Wall time a failed upload is tried again (async: a transient failure); None: not
    # by itself. Kept so that the next mount goes on trying it.
    next_try: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ContentRecord:
    """The content index's row for one file id."""

    file_id: str
    size: int
    complete: bool
    atime: float
    # The bytes came from an upload through this mount (ContentCache.adopt): the API
    # will not serve them again, so eviction takes them last. False for rows written
    # before the column existed (schema 2): they count as downloadable again.
    adopted: bool = False
    # Of an entry that is not complete: the byte ranges present in its sparse file, as
    # `orfs.core.cache.ranges.RangeSet.dumps` writes them (recorded only after an fsync
    # of the file). None for rows written before the column existed (schema 3).
    ranges: str | None = None


_JOURNAL_FIELDS = tuple(f.name for f in dataclasses.fields(JournalEntry))
_JOURNAL_UPDATABLE = frozenset(_JOURNAL_FIELDS) - {"key"}


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700; tighten it if it already exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


class State:
    """The mount's SQLite state; see the module docstring.

    The connection is shared by the trio thread and, occasionally, worker threads, so
    every statement runs under one lock (cheap: there is no contention to speak of).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        make_private_dir(self.root)
        self.path = self.root / DB_NAME
        # Create the file 0600 before SQLite does: SQLite gives the -wal and -shm files
        # the mode of the database file, so this keeps all three private.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power loss may lose the last commits, never corrupts.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            # Columns added after version 1: a journal of an older mount gains
            # them empty, which restore_journal reads as "unknown" and treats with care.
            have = {r[1] for r in self._db.execute("PRAGMA table_info(journal)")}
            for column in ("attempted", "closed", "next_try"):
                if column not in have:
                    self._db.execute(f"ALTER TABLE journal ADD COLUMN {column} REAL")
            # Added in version 3: an older mount did not record which bytes came from an
            # upload, so its rows count as downloadable again (plain LRU, as before).
            have = {r[1] for r in self._db.execute("PRAGMA table_info(content)")}
            if "adopted" not in have:
                self._db.execute(
                    "ALTER TABLE content ADD COLUMN adopted INTEGER NOT NULL DEFAULT 0")
            # Added in version 4: the present ranges of a partly fetched file.
            if "ranges" not in have:
                self._db.execute("ALTER TABLE content ADD COLUMN ranges TEXT")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # Ids that have an override, in memory: readdir asks for every file's
            # override, and almost none has one (a set lookup instead of a query).
            self._override_ids: set[str] = {
                r[0] for r in self._db.execute("SELECT id FROM overrides")}
            # The names files were created with, where the service stored another
            # (control characters): few, and asked for at every listing.
            self.created_names: dict[str, str] = dict(
                self._db.execute("SELECT id, filename FROM created_names").fetchall())
            # Added in version 4 (an older mount's database gains the table empty): the
            # age a rewrite is ordered by among its duplicates, that of the file it
            # replaced. Few (rewrites of duplicates that still exist), asked at listing.
            self.ages: dict[str, tuple[datetime, str]] = {
                r[0]: (datetime.fromisoformat(r[1]), r[2])
                for r in self._db.execute("SELECT id, created, tie FROM ages")}
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists() and side.stat().st_mode & 0o077:
                os.chmod(side, 0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, tuple(params))

    def _many(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, (tuple(r) for r in rows))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- content index -------------------------------------------------------------

    def content_records(self) -> list[ContentRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, size, complete, atime, adopted, ranges FROM content").fetchall()
        return [_content_record(r) for r in rows]

    def content_get(self, file_id: str) -> ContentRecord | None:
        with self._lock:
            r = self._db.execute(
                "SELECT id, size, complete, atime, adopted, ranges FROM content WHERE id = ?",
                (file_id,),
            ).fetchone()
        return None if r is None else _content_record(r)

    def content_put(self, file_id: str, *, size: int, complete: bool, atime: float,
                    adopted: bool = False, ranges: str | None = None) -> None:
        self._run(
            "INSERT OR REPLACE INTO content (id, size, complete, atime, adopted, ranges) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, size, int(complete), atime, int(adopted),
             None if complete else ranges),
        )

    def content_touch(self, atimes: Mapping[str, float]) -> None:
        """Record many last-access times in one transaction (the cache batches them)."""
        if atimes:
            self._many(
                "UPDATE content SET atime = ? WHERE id = ?",
                ((t, fid) for fid, t in atimes.items()),
            )

    def content_remove(self, file_id: str) -> None:
        self._run("DELETE FROM content WHERE id = ?", (file_id,))

    # ---- names files were created with ----------------------------------------------

    def set_created_name(self, file_id: str, filename: str) -> None:
        self._run("INSERT OR REPLACE INTO created_names (id, filename) VALUES (?, ?)",
                  (file_id, filename))
        self.created_names[file_id] = filename

    def drop_created_name(self, file_id: str) -> None:
        if self.created_names.pop(file_id, None) is not None:
            self._run("DELETE FROM created_names WHERE id = ?", (file_id,))

    # ---- ages in the duplicate order ------------------------------------------------

    def set_age(self, file_id: str, age: tuple[datetime, str]) -> None:
        """Order ``file_id`` among its duplicates as if created at ``age`` (a time and
        the id that breaks ties): the age of the file it replaced."""
        self._run("INSERT OR REPLACE INTO ages (id, created, tie) VALUES (?, ?, ?)",
                  (file_id, age[0].isoformat(), age[1]))
        self.ages[file_id] = age

    def drop_ages(self, file_ids: Iterable[str]) -> None:
        doomed = [i for i in file_ids if self.ages.pop(i, None) is not None]
        if doomed:
            self._many("DELETE FROM ages WHERE id = ?", ((i,) for i in doomed))

    # ---- attribute overrides -------------------------------------------------------

    def get_override(self, file_id: str) -> Override | None:
        if file_id not in self._override_ids:
            return None
        with self._lock:
            r = self._db.execute(
                "SELECT mode, mtime_ns, atime_ns FROM overrides WHERE id = ?", (file_id,)
            ).fetchone()
        return None if r is None else Override(r[0], r[1], r[2])

    def set_override(
        self,
        file_id: str,
        *,
        mode: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
    ) -> None:
        """Merge: a field given as None keeps its previous value."""
        self._run(
            """INSERT INTO overrides (id, mode, mtime_ns, atime_ns) VALUES (?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET
                 mode = coalesce(excluded.mode, mode),
                 mtime_ns = coalesce(excluded.mtime_ns, mtime_ns),
                 atime_ns = coalesce(excluded.atime_ns, atime_ns)""",
            (file_id, mode, mtime_ns, atime_ns),
        )
        self._override_ids.add(file_id)

    def move_override(self, old_id: str, new_id: str) -> None:
        """Give ``new_id`` what was set on ``old_id`` (a replaced file keeps it)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                row = self._db.execute(
                    "SELECT mode, mtime_ns, atime_ns FROM overrides WHERE id = ?", (old_id,)
                ).fetchone()
                if row is not None and old_id != new_id:
                    self._db.execute(
                        "INSERT OR REPLACE INTO overrides (id, mode, mtime_ns, atime_ns) "
                        "VALUES (?, ?, ?, ?)",
                        (new_id, *row),
                    )
                    self._db.execute("DELETE FROM overrides WHERE id = ?", (old_id,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if row is not None and old_id != new_id:
                self._override_ids.add(new_id)
                self._override_ids.discard(old_id)

    def drop_override(self, file_id: str) -> None:
        self._run("DELETE FROM overrides WHERE id = ?", (file_id,))
        self._override_ids.discard(file_id)

    # ---- upload journal ------------------------------------------------------------

    def journal_add(self, entry: JournalEntry) -> None:
        """Add (or replace) the entry with this key."""
        _check_journal_state(entry.state)
        cols = ", ".join(_JOURNAL_FIELDS)
        marks = ", ".join("?" for _ in _JOURNAL_FIELDS)
        self._run(
            f"INSERT OR REPLACE INTO journal ({cols}) VALUES ({marks})",
            (getattr(entry, f) for f in _JOURNAL_FIELDS),
        )

    def journal_update(self, key: str, *, durable: bool = False, **fields: Any) -> None:
        """Change some fields of an entry; unknown field names are a TypeError.

        ``durable``: the change is on disk when this returns (the write-ahead log is
        fsync'ed at this commit, as if ``synchronous=FULL``), so a crash or a power
        loss right after cannot lose it. It costs an fsync: the async close uses it,
        once per closed file; every other change is ``synchronous=NORMAL``, which a
        crash of the process never loses either."""
        unknown = set(fields) - _JOURNAL_UPDATABLE
        if unknown:
            raise TypeError(f"not journal fields: {sorted(unknown)}")
        if "state" in fields:
            _check_journal_state(fields["state"])
        if not fields:
            return
        names = sorted(fields)
        assignments = ", ".join(f"{n} = ?" for n in names)
        sql = f"UPDATE journal SET {assignments} WHERE key = ?"
        params = (*(fields[n] for n in names), key)
        if not durable:
            self._run(sql, params)
            return
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute(sql, params)
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def journal_remove(self, key: str) -> None:
        self._run("DELETE FROM journal WHERE key = ?", (key,))

    def journal_entries(self) -> list[JournalEntry]:
        """Every entry, oldest first."""
        cols = ", ".join(_JOURNAL_FIELDS)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {cols} FROM journal ORDER BY created, key"
            ).fetchall()
        return [JournalEntry(*r) for r in rows]

    # ---- recent errors -------------------------------------------------------------

    def record_error(self, message: str, *, when: float | None = None) -> None:
        now = time.time() if when is None else when
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO errors (time, message) VALUES (?, ?)", (now, message)
                )
                self._db.execute(
                    "DELETE FROM errors WHERE time < ?", (now - ERROR_KEEP_SECONDS,)
                )
                self._db.execute(
                    "DELETE FROM errors WHERE rowid IN (SELECT rowid FROM errors "
                    "ORDER BY time DESC LIMIT -1 OFFSET ?)",
                    (ERROR_KEEP_ROWS,),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def recent_errors(self, seconds: float = 3600) -> list[tuple[float, str]]:
        """Errors of the last ``seconds``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT time, message FROM errors WHERE time >= ? ORDER BY time, rowid",
                (time.time() - seconds,),
            ).fetchall()
        return [(float(t), str(m)) for t, m in rows]


def _content_record(r: tuple[Any, ...]) -> ContentRecord:
    return ContentRecord(r[0], int(r[1]), bool(r[2]), float(r[3]), bool(r[4]), r[5])


def _check_journal_state(state: object) -> None:
    if state not in JOURNAL_STATES:
        raise ValueError(f"journal state must be one of {sorted(JOURNAL_STATES)}: {state!r}")
