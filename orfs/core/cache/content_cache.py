"""The content cache: file bytes on disk, keyed by file id (the developer note is
docs/CACHE.md).

Content behind a file id never changes, so bytes are cached by id and kept across mounts
under ``root/content/``, one sparse file per id of the file's full size. The cache knows
which byte ranges of it are present (entry.py, ranges.py). A read fetches only what it
is missing, widened to whole blocks, with ranged requests (fetcher.py, writers.py);
a sequential reader also gets a window ahead of it that grows (readahead.py), fetched
by several streams at once. Every fetch runs in the nursery of :meth:`ContentCache.run`,
not in the reader's task, so it goes on when the last handle closes and stops at unmount.

`ContentCache` owns the table of entries and every change to it: open and close, what
a fetch brings, adopt, drop, eviction (the order is budget.py's).

Invariants (single trio thread; each numbered step has no ``await`` inside it):

1. ``ContentCache.need`` starts fetches only for bytes that are neither present nor in a
   running fetch of the entry, so no byte is requested twice while a request for it
   runs, however many readers and read-aheads race.
2. A fetch wakes every reader waiting on it when it finishes or fails (inflight.py).
   Its bytes join the entry's present ranges in the same step that removes it from the
   entry's fetches, so a reader always finds a byte in one or the other.
3. The index lists a range as present only after an fsync of the file that holds it
   (the ranges are taken before the fsync starts), and says ``complete`` only after an
   fsync of a complete file. So after a crash, whatever the index says is on disk. A
   cached file is used only if its size on disk equals the recorded size.
4. Eviction removes unpinned entries with no fetch running, downloadable ones before
   adopted uploads (budget.py). An id deleted (through the mount, or elsewhere once the
   namespace notices) is dropped: at once, or at the last close of the handles that
   still read it.
5. A fetch's file descriptor belongs to its writer's task (writers.py).
6. Direct writes: the bytes of a fetch below ``memory_start`` are in the file, the rest
   up to ``reached`` in its ring of buffers (writers.py); the ring goes back to the pool
   once the file has every byte of the fetch.

Known limits: two processes sharing one cache directory would undo each other's index
(the mount is expected to be the only user of its cache dir).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import trio

from orfs.api.models import RemoteFile
from orfs.core.cache.budget import victims
from orfs.core.cache.buffers import BufferPool
from orfs.core.cache.disk import disk_name, fsync_path, unlink_quietly
from orfs.core.cache.entry import Entry
from orfs.core.cache.errors import ContentUnavailable
from orfs.core.cache.fetcher import Fetcher
from orfs.core.cache.handle import CacheHandle
from orfs.core.cache.index import reconcile
from orfs.core.cache.inflight import Download, InFlight
from orfs.core.cache.readahead import BLOCK, PART_MAX, PART_MIN, align_down, align_up
from orfs.core.cache.source import DownloadClient
from orfs.core.state import State, make_private_dir

log = logging.getLogger(__name__)

# How often last-access times are written to the index (they are only an LRU hint).
ATIME_FLUSH_SECONDS = 30.0
# A finished download is fsynced once nobody reads it, or after this many seconds.
SYNC_DELAY_MAX = 10.0
# Present ranges of partly fetched files are fsynced and recorded this long after they
# changed (batched: one fsync for many fetches).
RANGES_SYNC_DELAY = 1.0
# A fetch that failed keeps what arrived, in whole pages (O_DIRECT's unit), so the next
# fetch from there starts aligned.
_PAGE = 4096


class ContentCache:
    """File bytes by id on disk, LRU-evicted above ``max_size`` (adopted uploads last);
    see the module doc."""

    def __init__(self, root: Path, max_size: int, client: DownloadClient, state: State,
                 download_streams: int = 4) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self._client = client
        self._state = state
        self._content_dir = self.root / "content"
        self._partial_dir = self.root / "partial"
        self._pool = BufferPool()  # direct writes: page-aligned buffers, reused
        make_private_dir(self.root)
        make_private_dir(self._content_dir)
        make_private_dir(self._partial_dir)
        self._fetcher = Fetcher(client, self._pool, download_streams)
        self._nursery: trio.Nursery | None = None
        self._entries: dict[str, Entry] = {}
        self._used = 0  # bytes of complete entries in _entries
        self._dirty_atimes: dict[str, float] = {}
        self._active = InFlight()  # downloads whose bytes are in partial/
        self._unsynced: set[Entry] = set()  # complete entries awaiting their fsync
        self._dirty: set[Entry] = set()  # partial entries whose ranges changed
        self._dirty_wake = trio.Event()
        self._last_time = 0.0
        # statistics
        self._downloads_started = 0
        self._downloads_joined = 0
        self._downloads_failed = 0
        self._hits = 0
        self._evictions = 0
        self._evicted_bytes = 0
        self._adopted = 0
        self._adopted_evictions = 0
        self._discarded = 0
        self._open_handles = 0
        self._load()

    # ---- start-up ------------------------------------------------------------------

    def _load(self) -> None:
        """Reconcile the index with the disk: keep only complete, intact entries."""
        self._entries, self._used, self._discarded = reconcile(
            self._state, self._content_dir, self._partial_dir)
        self._evict()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the download tasks until cancelled (at unmount)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._record_ranges_loop)
                task_status.started()
                while True:
                    await trio.sleep(ATIME_FLUSH_SECONDS)
                    self.flush()
        finally:
            self._nursery = None
            # Unmounting: what waited for its fsync gets it now, so it stays cached.
            for entry in list(self._unsynced):
                self._sync_and_record(entry, self._path(entry))
            self._unsynced.clear()
            for entry in list(self._dirty):
                self._record_ranges(entry, entry.present.dumps())
            self._dirty.clear()
            self.flush()

    def flush(self) -> None:
        """Write the batched last-access times to the index."""
        if self._dirty_atimes:
            atimes, self._dirty_atimes = self._dirty_atimes, {}
            try:
                self._state.content_touch(atimes)
            except Exception:
                log.exception("could not record cache access times")

    # ---- queries -------------------------------------------------------------------

    def _now(self) -> float:
        """Wall-clock time, strictly increasing, so LRU order has no ties."""
        now = max(time.time(), self._last_time + 1e-6)
        self._last_time = now
        return now

    def _path(self, entry: Entry) -> Path:
        return self._content_dir / entry.name

    def is_cached(self, file_id: str) -> bool:
        """A complete, intact copy is present (costs one stat)."""
        entry = self._entries.get(file_id)
        if entry is None or not entry.complete or entry.dropped:
            return False
        try:
            return os.stat(self._path(entry)).st_size == entry.size
        except OSError:
            return False

    def usage(self) -> tuple[int, int]:
        """(bytes used, including downloads in flight; max_size)."""
        return self._used + self._active.arrived(), self.max_size

    def adopted_bytes(self) -> int:
        """Bytes held that the API will not serve again (adopted uploads)."""
        return sum(e.size for e in self._entries.values() if e.complete and e.adopted)

    def fetch_counts(self) -> dict[str, int]:
        """What the status shows of the fetches: bytes received, requests made, fetches
        running now, and whether the server was found to ignore ranges."""
        return {"downloaded": self._fetcher.bytes_downloaded,
                "download_requests": self._fetcher.requests,
                "downloads_in_flight": self._active.running(),
                "ranges_off": int(self._fetcher.ranged is False)}

    def statistics(self) -> dict[str, int]:
        used, limit = self.usage()
        return {
            "entries": sum(1 for e in self._entries.values() if e.complete),
            "partial_entries": sum(1 for e in self._entries.values()
                                   if not e.complete and e.present),
            "bytes_used": used,
            "adopted_bytes": self.adopted_bytes(),
            "max_size": limit,
            "open_handles": self._open_handles,
            "downloads_in_flight": self._active.running(),
            "downloads_started": self._downloads_started,
            "downloads_joined": self._downloads_joined,
            "downloads_completed": self._fetcher.completed,
            "downloads_failed": self._downloads_failed,
            "download_resumes": self._fetcher.resumes,
            "bytes_downloaded": self._fetcher.bytes_downloaded,
            "download_requests": self._fetcher.requests,
            "ranges_off": int(self._fetcher.ranged is False),
            "hits": self._hits,
            "evictions": self._evictions,
            "evicted_bytes": self._evicted_bytes,
            "adopted_evictions": self._adopted_evictions,
            "adopted": self._adopted,
            "discarded": self._discarded,
        }

    # ---- open / close ----------------------------------------------------------------

    async def open(self, file: RemoteFile) -> CacheHandle:
        """Pin ``file``'s entry and return a handle. Fetches nothing: reads fetch what
        they miss (`need`)."""
        # Checkpoint first: everything below is one synchronous step.
        await trio.lowlevel.checkpoint()
        if self._nursery is None:
            raise RuntimeError("ContentCache.run() is not running")
        now = self._now()
        entry = self._entries.get(file.id)
        fd = -1
        if entry is not None and entry.complete:
            fd = self._open_complete(entry)
            if fd < 0:
                entry = None  # it was damaged and has been discarded
            else:
                self._hits += 1
        if entry is not None and fd < 0:
            fd = self._open_partial(entry)
            if fd < 0:
                entry = None
        if entry is None:
            entry = Entry(file.id, disk_name(file.id), file.size, complete=False, atime=now)
            self._entries[file.id] = entry
            fd = self._create_sparse(entry)
        entry.dropped = False
        entry.pins += 1
        self._open_handles += 1
        entry.atime = now
        self._dirty_atimes[entry.file_id] = now
        return CacheHandle(self, entry, fd)

    def _open_complete(self, entry: Entry) -> int:
        """An fd on a complete entry, or -1 after discarding it as damaged."""
        try:
            fd = os.open(self._path(entry), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            actual: int | None = None
        else:
            actual = os.fstat(fd).st_size
            if actual == entry.size:
                return fd
            os.close(fd)
        log.warning("cache entry %s is damaged (size on disk %s, recorded %d); "
                    "downloading it again", entry.file_id, actual, entry.size)
        self._discarded += 1
        self._forget(entry)
        return -1

    def _open_partial(self, entry: Entry) -> int:
        """An fd on a partly present entry's file, or -1 after forgetting it (its file
        is gone: nothing of it can be served)."""
        try:
            return os.open(self._path(entry), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if entry.pins == 0 and not entry.fetches:
                self._forget(entry)
                return -1
            raise

    def _create_sparse(self, entry: Entry) -> int:
        """Create the entry's file, all holes, at its full size; an fd to read it."""
        path = self._path(entry)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, entry.size)
            if entry.size == 0:
                self._now_complete(entry)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def unpin(self, entry: Entry) -> None:
        entry.pins -= 1
        self._open_handles -= 1
        if entry.pins > 0 or self._entries.get(entry.file_id) is not entry:
            return
        if entry.dropped:
            self._forget(entry)
        elif not entry.complete and not entry.present and not entry.fetches:
            self._forget(entry)  # nothing arrived; nothing to keep
        else:
            self._evict()

    # ---- fetches ---------------------------------------------------------------------

    def need(self, entry: Entry, offset: int, end: int, ahead: int,
             part: int = PART_MAX) -> list[Download]:
        """Have ``[offset, max(end, ahead))`` present or in flight, widened to whole
        blocks, new fetches in parts of about ``part`` bytes; return the fetches that
        still have to bring part of ``[offset, end)`` (one synchronous step:
        invariant 1)."""
        if entry.complete or self._nursery is None:
            return []
        lo = align_down(offset)
        mid = align_up(end, entry.size)
        hi = align_up(max(end, ahead), entry.size)
        started = self._downloads_started
        # What the read waits for first, in requests of its own, so it is not held up
        # by a bigger part; then the window ahead.
        for a, b in self._missing(entry, lo, mid):
            self._start_fetches(entry, a, b, part)
        for a, b in self._missing(entry, mid, hi):
            self._start_fetches(entry, a, b, part)
        if self._downloads_started == started and not entry.present.covers(offset, end):
            self._downloads_joined += 1
        waits = []
        pos = offset
        while pos < end:
            pos = entry.present.run_from(pos)
            if pos >= end:
                break
            d = entry.fetch_at(pos)
            if d is None:
                break  # cannot happen: [offset, end) was just asked for
            if d.reached < min(end, d.end if d.end is not None else end):
                waits.append(d)
            if d.end is None:
                break
            pos = d.end
        return waits

    def _missing(self, entry: Entry, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` neither present nor in a running fetch."""
        out = []
        for a, b in entry.present.gaps(lo, hi):
            pos = a
            for d in entry.fetches:
                d_end = d.end if d.end is not None else max(b, entry.size)
                if d_end <= pos or d.start >= b:
                    continue
                if d.start > pos:
                    out.append((pos, d.start))
                pos = max(pos, d_end)
            if pos < b:
                out.append((pos, b))
        return out

    def _start_fetches(self, entry: Entry, a: int, b: int, part: int = PART_MAX) -> None:
        """Fetch ``[a, b)``: in equal parts of about ``part`` bytes (at most PART_MAX)
        that end on blocks (or, with ranges off, in one stream up to what is already
        there)."""
        if self._fetcher.ranged is False:
            nxt = [x for x in (entry.present.next_start(a),
                               *(d.start for d in entry.fetches if d.start > a))
                   if x is not None]
            self._start_fetch(entry, a, min(nxt) if nxt else None)
            return
        part = max(BLOCK, min(part, PART_MAX))
        if b >= entry.size and b - a > BLOCK:
            # The rest of the file: one part per stream, so they all end together
            # instead of one long part finishing alone.
            part = max(PART_MIN, -(-(b - a) // self._fetcher.streams))
        count = max(1, min(-(-(b - a) // part), (b - a) // BLOCK))
        start = a
        for i in range(1, count + 1):
            stop = b if i == count else align_down(a + (b - a) * i // count)
            if stop > start:
                self._start_fetch(entry, start, None if stop >= entry.size else stop)
                start = stop

    def _start_fetch(self, entry: Entry, start: int, end: int | None) -> None:
        assert self._nursery is not None
        # Room first, so the directory holds no more than the limit (invariant 4).
        self._evict(incoming=(entry.size if end is None else end) - start)
        download = Download(self._path(entry), start, end, file_size=entry.size)
        entry.add_fetch(download)
        self._active.add(download)
        if entry.limiter is None:
            entry.limiter = trio.CapacityLimiter(self._fetcher.streams)
        self._downloads_started += 1
        log.debug("fetch %s [%d, %s) started", entry.file_id, start, end)
        self._nursery.start_soon(self._run_fetch, entry, download)

    async def _run_fetch(self, entry: Entry, download: Download) -> None:
        assert self._nursery is not None and entry.limiter is not None
        done = await self._fetcher.fetch(
            self._nursery, entry.file_id, download, entry.limiter,
            failed=lambda error: self._fetch_failed(entry, download, error),
            sized=lambda size: self._resize(entry, size))
        if done:
            self._fetch_done(entry, download)

    def _live(self, entry: Entry) -> bool:
        return self._entries.get(entry.file_id) is entry

    def _add_present(self, entry: Entry, start: int, end: int) -> None:
        if not entry.complete and self._live(entry):
            end = min(end, entry.size)
            self._used += entry.present.add(start, end)
            self._mark_dirty(entry)

    def _fetch_done(self, entry: Entry, download: Download) -> None:
        """Every byte of a fetch is in the file (one synchronous step: invariant 2)."""
        self._active.discard(download)
        entry.remove_fetch(download)
        if download.end is None and download.reached < entry.size:
            self._resize(entry, download.reached)  # the file ended sooner than listed
        self._add_present(entry, download.start, download.reached)
        download.finish(None)
        if (self._live(entry) and not entry.complete
                and entry.present.covers(0, entry.size)):
            self._now_complete(entry)
        self._evict()

    def _fetch_failed(self, entry: Entry, download: Download,
                      error: ContentUnavailable) -> None:
        self._active.discard(download)
        entry.remove_fetch(download)
        if download.written and download.kept:
            # What arrived is in the file (the writer finished): keep its whole pages,
            # or all of it if all of its range arrived.
            keep = download.reached
            if keep < (entry.size if download.end is None else download.end):
                keep -= (keep - download.start) % _PAGE
            self._add_present(entry, download.start, keep)
        download.finish(error)
        self._downloads_failed += 1
        log.warning("download %s failed at byte %d: %s",
                    entry.file_id, download.reached, error.reason)
        if (self._live(entry) and not entry.complete
                and entry.present.covers(0, entry.size)):
            self._now_complete(entry)
        if (self._live(entry) and not entry.complete and entry.pins == 0
                and not entry.present and not entry.fetches):
            self._forget(entry)

    def _resize(self, entry: Entry, size: int) -> None:
        """The server says the file has ``size`` bytes, not what was listed."""
        if size == entry.size or not self._live(entry) or entry.complete:
            return
        log.warning("file %s: listed as %d bytes, the server has %d; keeping what it has",
                    entry.file_id, entry.size, size)
        try:
            os.truncate(self._path(entry), size)
        except OSError as exc:
            log.warning("could not resize the cache file of %s: %s", entry.file_id, exc)
        before = entry.present.total
        entry.present.clip(size)
        self._used -= before - entry.present.total
        entry.size = size
        for d in entry.fetches:
            d.file_size = size
        self._mark_dirty(entry)

    def _now_complete(self, entry: Entry) -> None:
        """Every byte is present: served as a complete file from now on; the index says
        so after an fsync (invariant 3)."""
        self._used -= entry.present.total
        entry.complete = True
        entry.present = type(entry.present)()
        self._used += entry.size
        self._dirty.discard(entry)
        self._unsynced.add(entry)
        if self._nursery is not None:
            self._nursery.start_soon(self._sync_when_idle, entry)

    # ---- the index of present ranges ---------------------------------------------------

    def _mark_dirty(self, entry: Entry) -> None:
        if not entry.complete:
            self._dirty.add(entry)
            self._dirty_wake.set()

    async def _record_ranges_loop(self) -> None:
        """Record the present ranges of partly fetched files, a little after they
        change: the ranges first, then an fsync, then the index (invariant 3)."""
        while True:
            await self._dirty_wake.wait()
            await trio.sleep(RANGES_SYNC_DELAY)
            self._dirty_wake = trio.Event()
            batch, self._dirty = self._dirty, set()
            for entry in batch:
                if not self._live(entry) or entry.complete:
                    continue
                ranges = entry.present.dumps()
                path = self._path(entry)
                with trio.CancelScope(shield=True):  # short; lets unmount keep them
                    synced = await trio.to_thread.run_sync(fsync_path, path)
                if synced and self._live(entry) and not entry.complete:
                    self._state.content_put(entry.file_id, size=entry.size, complete=False,
                                            atime=entry.atime, adopted=entry.adopted,
                                            ranges=ranges)

    def _record_ranges(self, entry: Entry, ranges: str) -> None:
        if self._live(entry) and not entry.complete and fsync_path(self._path(entry)):
            self._state.content_put(entry.file_id, size=entry.size, complete=False,
                                    atime=entry.atime, adopted=entry.adopted, ranges=ranges)

    async def _sync_when_idle(self, entry: Entry) -> None:
        """The fsync of a finished download, once no handle reads it (invariant 3)."""
        with trio.move_on_after(SYNC_DELAY_MAX):
            while entry.pins > 0 and self._entries.get(entry.file_id) is entry:
                await trio.sleep(0.05)
        if entry not in self._unsynced:
            return  # removed meanwhile, or synced at unmount
        path = self._path(entry)
        with trio.CancelScope(shield=True):  # short; lets unmount keep the entry
            synced = await trio.to_thread.run_sync(fsync_path, path)
        self._unsynced.discard(entry)
        if synced:
            self._sync_and_record(entry, path, already_synced=True)

    # ---- adopt / drop / evict --------------------------------------------------------

    def adopt(self, file_id: str, staged: Path, size: int) -> None:
        """Make ``staged`` (just uploaded as ``file_id``) the complete content of that id.

        The file is renamed, so it must be on the cache's filesystem. It is complete in
        memory at once; the index records it after an fsync in the background. The
        entry is marked adopted: the API never serves an upload's bytes, so eviction
        keeps it longer than anything that can be downloaded again (invariant 4).
        """
        actual = os.stat(staged).st_size
        if actual != size:
            log.warning("adopting %s: staged file has %d bytes, expected %d",
                        file_id, actual, size)
            size = actual
        entry = self._entries.get(file_id)
        if entry is None:
            entry = Entry(file_id, disk_name(file_id), size, complete=False, atime=self._now())
            self._entries[file_id] = entry
        path = self._path(entry)
        os.chmod(staged, 0o600)
        if not entry.complete:
            self._evict(incoming=size)  # room first (see _evict)
        os.replace(staged, path)
        self._used -= entry.held
        entry.present = type(entry.present)()
        self._dirty.discard(entry)
        entry.complete = True
        entry.size = size
        entry.adopted = True
        entry.dropped = False
        entry.atime = self._now()
        self._used += size
        self._adopted += 1
        # A fetch in flight of the same id writes into the file this one replaced, and
        # finds the entry complete when it ends (_add_present keeps nothing of it).
        if self._nursery is not None:
            self._nursery.start_soon(self._sync_adopted, entry)
        else:
            self._sync_and_record(entry, path)
        self._evict()

    async def _sync_adopted(self, entry: Entry) -> None:
        path = self._path(entry)
        with trio.CancelScope(shield=True):  # short; lets unmount keep the entry
            await trio.to_thread.run_sync(fsync_path, path)
        self._sync_and_record(entry, path, already_synced=True)

    def _sync_and_record(self, entry: Entry, path: Path, already_synced: bool = False) -> None:
        if self._entries.get(entry.file_id) is not entry or not entry.complete:
            return  # dropped or evicted meanwhile
        synced = already_synced or fsync_path(path)
        self._state.content_put(entry.file_id, size=entry.size, complete=synced,
                                atime=entry.atime, adopted=entry.adopted)

    def drop(self, file_id: str) -> None:
        """Remove the bytes of ``file_id`` (now, or at the last close if it is open)."""
        entry = self._entries.get(file_id)
        if entry is None:
            self._state.content_remove(file_id)
            return
        if entry.pins > 0:
            entry.dropped = True
        else:
            self._forget(entry)

    def deleted_elsewhere(self, file_id: str) -> None:
        """``file_id`` no longer exists remotely: its bytes go now, or at the last close
        of the handles that still read it (they keep reading what is present; what is
        still downloading keeps arriving while the server sends it)."""
        if file_id in self._entries:
            self.drop(file_id)

    def _forget(self, entry: Entry) -> None:
        """Take ``entry`` out of the cache: index, disk, memory; stop its download."""
        if self._entries.get(entry.file_id) is entry:
            del self._entries[entry.file_id]
        self._unsynced.discard(entry)
        self._dirty.discard(entry)
        self._dirty_atimes.pop(entry.file_id, None)
        self._state.content_remove(entry.file_id)
        self._used -= entry.held
        entry.complete = False
        entry.present = type(entry.present)()
        unlink_quietly(self._path(entry))
        for download in list(entry.fetches):
            download.cancel_scope.cancel()

    def _evict(self, incoming: int = 0) -> None:
        """Bring usage under the limit by removing unpinned complete entries, in the
        order `budget.victims` gives (invariant 4).

        ``incoming``: bytes about to be moved into ``content/``; room is made first, so
        the directory never holds more than the limit, not even between two syscalls.
        """
        used, limit = self.usage()
        for entry in victims(self._entries.values(), used + incoming, limit,
                             self.adopted_bytes):
            if entry.adopted:
                self._adopted_evictions += 1
                log.info("evicting %s (%d bytes) from the cache: it was uploaded through "
                         "this mount and the API does not serve it, so it can no longer "
                         "be read back (--cache-max-size %d is smaller than the uploads "
                         "it holds)", entry.file_id, entry.held, limit)
            self._evict_entry(entry)

    def _evict_entry(self, entry: Entry) -> None:
        self._evictions += 1
        self._evicted_bytes += entry.held
        log.debug("evicting %s (%d bytes)", entry.file_id, entry.held)
        self._forget(entry)

