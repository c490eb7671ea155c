"""The content cache: file bytes on disk, keyed by file id (the developer note is
docs/CACHE.md).

Content behind a file id never changes, so bytes are cached by id and kept across mounts
under ``root/content/``. Opening an entry that is not cached starts one streamed
download into a temporary file under ``root/partial/`` (fetcher.py, writers.py); reads
wait only for their own range (inflight.py, handle.py). Every download runs in the
nursery of :meth:`ContentCache.run`, not in the opener's task, so it keeps going when
the last handle closes (``cat`` opening twice does not restart it) and stops at unmount
(the partial file is discarded by the next mount: index.py).

`ContentCache` owns the table of entries and every change to it: open and close, the
install of a finished download, adopt, drop, eviction (the order is budget.py's).

Invariants (single trio thread; each numbered step has no ``await`` inside it):

1. ``ContentCache.open`` checkpoints first and then, synchronously, pins the entry and
   either opens the complete file, joins the download in flight, or starts one. So
   there is at most one live download per file id however many opens race.
2. A download wakes every reader when it finishes or fails (inflight.py).
3. A temporary file becomes ``content/<name>`` by rename once every byte has arrived,
   and the index says ``complete`` only after an fsync of it, so after a crash an entry
   is either complete and intact or discarded. That fsync waits until no handle has
   the entry open (at most ``SYNC_DELAY_MAX``), or runs at unmount: it competes for the
   disk and a core with the read that is usually still going. A cached file is used
   only if the index says complete AND its size on disk equals the recorded size.
4. Eviction removes unpinned complete entries only, downloadable ones before adopted
   uploads (budget.py). An id deleted (through the mount, or elsewhere once the
   namespace notices) is dropped: at once, or at the last close of the handles that
   still read it.
5. A download's file descriptor belongs to its writer's task (writers.py).
6. Direct writes: the bytes of a download below ``memory_start`` are in the file, the
   rest up to ``arrived`` in its ring of buffers (writers.py); the ring goes back to
   the pool only once the file has every byte and no handle reads it.

Known limits: two processes sharing one cache directory would discard each other's
partial downloads at start (the mount is expected to be the only user of its cache dir).
Partial downloads are not resumed across mounts.
"""

from __future__ import annotations

import logging
import os
import tempfile
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
from orfs.core.cache.source import DownloadClient
from orfs.core.state import State, make_private_dir

log = logging.getLogger(__name__)

# How often last-access times are written to the index (they are only an LRU hint).
ATIME_FLUSH_SECONDS = 30.0
# A finished download is fsynced once nobody reads it, or after this many seconds.
SYNC_DELAY_MAX = 10.0


class ContentCache:
    """File bytes by id on disk, LRU-evicted above ``max_size`` (adopted uploads last);
    see the module doc."""

    def __init__(self, root: Path, max_size: int, client: DownloadClient, state: State) -> None:
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
        self._fetcher = Fetcher(client, self._pool)
        self._nursery: trio.Nursery | None = None
        self._entries: dict[str, Entry] = {}
        self._used = 0  # bytes of complete entries in _entries
        self._dirty_atimes: dict[str, float] = {}
        self._active = InFlight()  # downloads whose bytes are in partial/
        self._unsynced: set[Entry] = set()  # installed downloads awaiting their fsync
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

    def statistics(self) -> dict[str, int]:
        used, limit = self.usage()
        return {
            "entries": sum(1 for e in self._entries.values() if e.complete),
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
            "hits": self._hits,
            "evictions": self._evictions,
            "evicted_bytes": self._evicted_bytes,
            "adopted_evictions": self._adopted_evictions,
            "adopted": self._adopted,
            "discarded": self._discarded,
        }

    # ---- open / close ----------------------------------------------------------------

    async def open(self, file: RemoteFile) -> CacheHandle:
        """Pin ``file``'s entry and return a handle; start (or join) its download if
        it is not complete. Does not wait for the download."""
        # Checkpoint first: everything below is one synchronous step (invariant 1).
        await trio.lowlevel.checkpoint()
        if self._nursery is None:
            raise RuntimeError("ContentCache.run() is not running")
        now = self._now()
        entry = self._entries.get(file.id)
        fd = -1
        download: Download | None = None
        if entry is not None and entry.complete:
            fd = self._open_complete(entry)
            if fd < 0:
                entry = None  # it was damaged and has been discarded
            else:
                self._hits += 1
        if entry is None:
            entry = Entry(file.id, disk_name(file.id), file.size, complete=False, atime=now)
            self._entries[file.id] = entry
        if fd < 0:
            download = entry.download
            if download is None or download.error is not None:
                download = self._start_download(entry, file)
            else:
                self._downloads_joined += 1
            fd = os.open(download.temp_path, os.O_RDONLY | os.O_CLOEXEC)
            download.readers += 1
        entry.dropped = False
        entry.pins += 1
        self._open_handles += 1
        entry.atime = now
        self._dirty_atimes[entry.file_id] = now
        return CacheHandle(self._unpin, entry, download, fd)

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

    def _unpin(self, entry: Entry) -> None:
        entry.pins -= 1
        self._open_handles -= 1
        if entry.pins > 0 or self._entries.get(entry.file_id) is not entry:
            return
        if entry.dropped:
            self._forget(entry)
        elif not entry.complete and entry.download is None:
            self._forget(entry)  # its download failed; nothing to keep
        else:
            self._evict()

    # ---- downloads -------------------------------------------------------------------

    def _start_download(self, entry: Entry, file: RemoteFile) -> Download:
        assert self._nursery is not None
        fd, temp = tempfile.mkstemp(prefix=entry.name + ".", dir=self._partial_dir)
        download = Download(Path(temp))
        entry.download = download
        self._active.add(download)
        self._downloads_started += 1
        log.debug("download %s (%d bytes expected) started", file.id, file.size)
        self._nursery.start_soon(self._run_download, entry, download, fd, file.size)
        return download

    async def _run_download(
        self, entry: Entry, download: Download, fd: int, expected: int
    ) -> None:
        assert self._nursery is not None
        done = await self._fetcher.fetch(
            self._nursery, entry.file_id, download, fd, expected,
            failed=lambda error: self._abandon(entry, download, error))
        if done and self._install_download(entry, download, synced=False):
            # The fsync comes later (invariant 3).
            self._unsynced.add(entry)
            self._nursery.start_soon(self._sync_when_idle, entry)

    def _abandon(self, entry: Entry, download: Download, error: ContentUnavailable) -> None:
        unlink_quietly(download.temp_path)  # open handles keep their own fds
        self._active.discard(download)
        download.finish(error)
        self._downloads_failed += 1
        log.warning("download %s failed after %d bytes: %s",
                    entry.file_id, download.arrived, error.reason)
        if entry.download is download:
            entry.download = None
        if (self._entries.get(entry.file_id) is entry and not entry.complete
                and entry.pins == 0):
            self._forget(entry)

    def _install_download(self, entry: Entry, download: Download, synced: bool) -> bool:
        """Move a finished download into ``content/`` (one synchronous step); False if
        it was not kept."""
        self._active.discard(download)
        if entry.download is download:
            entry.download = None
        live = self._entries.get(entry.file_id) is entry
        if not live or entry.complete or entry.dropped:
            # Removed meanwhile, or adopted from an upload while it downloaded.
            unlink_quietly(download.temp_path)
            if live and entry.dropped and entry.pins == 0:
                self._forget(entry)
            return False
        self._evict(incoming=download.arrived)
        try:
            os.rename(download.temp_path, self._path(entry))
        except OSError as exc:
            log.warning("could not keep the download of %s: %s", entry.file_id, exc)
            unlink_quietly(download.temp_path)
            if entry.pins == 0:
                self._forget(entry)
            return False
        entry.complete = True
        entry.size = download.arrived
        self._used += entry.size
        # Complete in the index only once the bytes are on disk (invariant 3).
        self._state.content_put(entry.file_id, size=entry.size, complete=synced,
                                atime=entry.atime, adopted=entry.adopted)
        self._dirty_atimes.pop(entry.file_id, None)
        self._evict()
        return True

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
        if entry.complete:
            self._used -= entry.size
        entry.complete = True
        entry.size = size
        entry.adopted = True
        entry.dropped = False
        entry.atime = self._now()
        self._used += size
        self._adopted += 1
        # An in-flight download of the same id finds the entry complete and discards
        # its copy (_install_download).
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
        self._dirty_atimes.pop(entry.file_id, None)
        self._state.content_remove(entry.file_id)
        if entry.complete:
            entry.complete = False
            self._used -= entry.size
            unlink_quietly(self._path(entry))
        if entry.download is not None and not entry.download.finished:
            entry.download.cancel_scope.cancel()

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
                         "it holds)", entry.file_id, entry.size, limit)
            self._evict_entry(entry)

    def _evict_entry(self, entry: Entry) -> None:
        self._evictions += 1
        self._evicted_bytes += entry.size
        log.debug("evicting %s (%d bytes)", entry.file_id, entry.size)
        self._forget(entry)

