"""The persistent content cache: file bytes on disk, keyed by file id.

Content behind a file id never changes, so bytes are cached by id and kept across mounts
under ``root/content/``. Opening an entry that is not cached starts one streamed
download into a temporary file under ``root/partial/``, written with O_DIRECT (the bytes
skip the page cache: the reader's FUSE page cache is the copy in memory), the newest
bytes served from memory; reads wait only for their own range. Every download runs in
the nursery of :meth:`ContentCache.run`, not in the opener's task, so it keeps going
when the last handle closes (``cat`` opening twice does not restart it) and stops at
unmount (the partial file is discarded by the next mount).

Invariants (single trio thread; each numbered step has no ``await`` inside it):

1. ``ContentCache.open`` checkpoints first and then, synchronously, pins the entry and
   either opens the complete file, joins the download in flight, or starts one. So
   there is at most one live download per file id however many opens race.
2. A download wakes its waiters after each chunk only when the smallest waited-for end
   has arrived (a heap peek per chunk), and wakes all of them when it finishes or
   fails, so no reader can hang on a dead download.
3. A temporary file becomes ``content/<name>`` by rename once every byte has arrived,
   and the index says ``complete`` only after an fsync of it, so after a crash an entry
   is either complete and intact or discarded. That fsync waits until no handle has
   the entry open (at most ``SYNC_DELAY_MAX``), or runs at unmount: it competes for the
   disk and a core with the read that is usually still going. A cached file is used
   only if the index says complete AND its size on disk equals the recorded size.
4. Eviction removes least-recently-opened complete entries that no handle pins; an
   entry bigger than the limit is served while open and evicted at its last close.
   Entries come in two classes, kept in the index: bytes that can be downloaded again,
   and adopted bytes (uploaded through the mount: the API never serves them, so the
   cache holds the only copy the mount can read back). Every evictable entry of the
   first class goes before any adopted one, and adopted entries go (oldest first) only
   while adopted bytes alone exceed the limit: open files and downloads in flight may
   pass it for a while, as they always could, but never cost an upload its bytes.
   An id deleted (through the mount, or elsewhere once the namespace notices) is
   dropped: at once, or at the last close of the handles that still read it.
5. A download's file descriptor belongs to its writer's task (``_DirectWriter`` or
   ``_ChunkWriter``), which closes it only after its last write (or fsync) thread
   returned: nothing else closes it, so a worker thread never writes to a reused
   descriptor number.
6. Direct writes: the bytes of a download below ``memory_start`` are in the file, the
   rest up to ``arrived`` in its ring of buffers (see ``_DirectWriter``); the ring goes
   back to the pool only once the file has every byte and no handle reads it.

Known limits: two processes sharing one cache directory would discard each other's
partial downloads at start (the mount is expected to be the only user of its cache dir).
Partial downloads are not resumed across mounts.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import hashlib
import heapq
import logging
import mmap
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import trio

from orfs.api.errors import (
    ApiError,
    BadRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    Unreachable,
)
from orfs.api.models import RemoteFile
from orfs.core.state import State, make_private_dir

log = logging.getLogger(__name__)

# How often last-access times are written to the index (they are only an LRU hint).
ATIME_FLUSH_SECONDS = 30.0
# A dropped stream is resumed from where it stopped this many times (the client has
# already retried transient errors before the body started).
MAX_RESUMES = 1
# A finished download is fsynced once nobody reads it, or after this many seconds.
SYNC_DELAY_MAX = 10.0
# Errors after which resuming the stream may help.
_RESUMABLE = (Unreachable, ProtocolError, ServerError, RateLimited)
# Write downloads with O_DIRECT from a few reused page-aligned buffers, in worker
# threads, and answer reads of what is still in those buffers from memory (see
# _DirectWriter); where the filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some
# network filesystems), or with this off, chunks are written as they come (_ChunkWriter).
# Why: a buffered write fills new page-cache pages, one copy of the whole file that the
# reader's own (FUSE) page cache already holds; on the benchmark's VM those new pages
# cost 7x an O_DIRECT write (docs/PERFORMANCE.md). Both ways are tested.
DIRECT_WRITES = True
BUFFER_SIZE = 1024 * 1024  # one FUSE read request, at most
RING_BUFFERS = 3           # per download: one filling, the others being written or read
POOL_KEEP = 8              # idle buffers kept for the next downloads (already touched)
RINGS_MAX = 16             # downloads with a ring at once (48 MiB); more write plainly
_ALIGN = 4096              # O_DIRECT offsets and lengths: a multiple of the block size
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")


class DownloadStream(Protocol):
    """What ``client.download(...)`` yields."""

    @property
    def size(self) -> int | None: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...


class DownloadClient(Protocol):
    """The part of the API client this module uses."""

    def download(
        self, file_id: str, offset: int = 0
    ) -> AbstractAsyncContextManager[DownloadStream]: ...


class ContentUnavailable(Exception):
    """The bytes of a file cannot be had: its download failed or was stopped.

    ``not_downloadable`` is True when the API refused to serve the file (400): the core
    answers EACCES for it and EIO otherwise. ``cause`` is the client's error, if any.
    """

    def __init__(
        self,
        reason: str,
        *,
        not_downloadable: bool = False,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_downloadable = not_downloadable
        self.cause = cause

    @property
    def errno(self) -> int:
        return errno.EACCES if self.not_downloadable else errno.EIO

    def fresh(self) -> ContentUnavailable:
        """A new instance to raise (re-raising one instance grows its traceback)."""
        return ContentUnavailable(
            self.reason, not_downloadable=self.not_downloadable, cause=self.cause
        )


def disk_name(file_id: str) -> str:
    """The file name under ``content/`` for an id: the id itself when it is a tame
    name, else ``~`` + its SHA-256 (``~`` never starts a tame name, so no clash)."""
    if _SAFE_NAME.fullmatch(file_id):
        return file_id
    return "~" + hashlib.sha256(file_id.encode("utf-8", "surrogatepass")).hexdigest()


class _Download:
    """One streamed download into a temporary file, and the readers waiting on it."""

    __slots__ = ("temp_path", "arrived", "finished", "error", "cancel_scope", "_waiters",
                 "_seq", "woke", "memory", "readers", "written")

    def __init__(self, temp_path: Path) -> None:
        self.temp_path = temp_path
        self.arrived = 0  # bytes written to temp_path, contiguous from 0
        self.finished = False  # no more bytes will arrive (success or failure)
        self.error: ContentUnavailable | None = None
        self.cancel_scope = trio.CancelScope()
        self._waiters: list[tuple[int, int, trio.Event]] = []  # heap by wanted end
        self._seq = 0
        self.woke = False  # advance woke a reader since the downloader last looked
        # Direct writes: the ring that holds the newest bytes (see _DirectWriter), until
        # the file has every byte and no handle reads it; None otherwise.
        self.memory: _DirectWriter | None = None
        self.readers = 0  # handles that read through this download
        self.written = False  # every byte is in the file (the writer closed it)

    def release(self) -> None:
        """The handle of a reader closed, or the writer finished: once both are true,
        the ring's buffers go back to the pool."""
        if self.memory is not None and self.written and self.readers == 0:
            self.memory.release()
            self.memory = None

    def advance(self, n: int) -> None:
        """Called by the downloader after each chunk: cheap unless a waiter is due."""
        self.arrived += n
        w = self._waiters
        if w and w[0][0] <= self.arrived:
            while w and w[0][0] <= self.arrived:
                heapq.heappop(w)[2].set()
            self.woke = True

    def finish(self, error: ContentUnavailable | None) -> None:
        self.finished = True
        self.error = error
        for _, _, event in self._waiters:
            event.set()
        self._waiters.clear()

    def first_due(self, n: int) -> int:
        """How many of the next ``n`` bytes complete the range the first waiting reader
        wants, if fewer than ``n`` do (else 0): write those first, and it can reply
        before the rest of the chunk is written."""
        w = self._waiters
        if w:
            k = w[0][0] - self.arrived
            if 0 < k < n:
                return k
        return 0

    async def wait_for(self, end: int) -> None:
        """Return once ``end`` bytes have arrived or the download finished."""
        if self.finished or self.arrived >= end:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self._seq += 1
        heapq.heappush(self._waiters, (end, self._seq, event))
        await event.wait()


class _Writer(abc.ABC):
    """What both ways of writing a download share: the descriptor they own (invariant
    5), the error that stops them, and the end: an fsync if asked, then the close."""

    inline: bool

    def __init__(self, fd: int, download: _Download) -> None:
        self._fd = fd
        self._download = download
        self.accepted = 0  # bytes taken so far
        self.error: OSError | None = None
        self.synced = False
        self.closed = trio.Event()
        self._sync = False

    @abc.abstractmethod
    def put(self, chunk: bytes | memoryview) -> bool:
        """Take ``chunk``; True if the caller must ``wait_space`` before more."""
        ...

    @abc.abstractmethod
    async def wait_space(self) -> None:
        ...

    @abc.abstractmethod
    async def wait_drained(self) -> None:
        """Wait until every byte taken is in the file (but what ``close`` writes)."""
        ...

    @abc.abstractmethod
    def close(self, *, sync: bool) -> None:
        """Finish writing (and fsync if ``sync``), then close; ``closed`` says when."""
        ...

    @abc.abstractmethod
    async def run(self) -> None:
        ...

    def _failure(self) -> ContentUnavailable:
        assert self.error is not None
        return ContentUnavailable(f"cannot write to the cache: {self.error.strerror}",
                                  cause=self.error)

    async def _sync_if_asked(self) -> None:
        if self._sync and self.error is None:
            try:
                await trio.to_thread.run_sync(os.fsync, self._fd)
                self.synced = True
            except OSError as exc:
                log.warning("could not fsync a download: %s", exc)

    def _closed(self) -> None:
        os.close(self._fd)
        self._download.written = True
        self._download.release()
        self.closed.set()


class _ChunkWriter(_Writer):
    """Writes a download's chunks to its file as they come (one ``os.write`` each, no
    fsync per chunk) and advances the download; ``run`` does the final fsync and the
    close."""

    inline = True

    def __init__(self, fd: int, download: _Download) -> None:
        super().__init__(fd, download)
        self._closing = trio.Event()

    def put(self, chunk: bytes | memoryview) -> bool:
        """Write ``chunk``; True if the caller should ``wait_space`` before more."""
        if self.error is not None:
            raise self._failure()
        try:
            _write_all(self._fd, chunk)
        except OSError as exc:
            self.error = exc
            raise self._failure() from exc
        self.accepted += len(chunk)
        self._download.advance(len(chunk))
        return False

    async def wait_space(self) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_drained(self) -> None:
        """Wait until every byte taken is in the file."""
        await trio.lowlevel.checkpoint()

    def close(self, *, sync: bool) -> None:
        """Stop (after an fsync if ``sync``), then close."""
        self._sync = sync
        self._closing.set()

    async def run(self) -> None:
        try:
            await self._closing.wait()
            await self._sync_if_asked()
        finally:
            self._closed()


class _BufferPool:
    """Page-aligned buffers of ``BUFFER_SIZE`` (anonymous mmaps), reused from one
    download to the next: memory already touched is cheap to fill, a fresh page costs a
    fault (and, on a VM whose host took the page back, much more). At most ``keep``
    stay allocated while idle."""

    def __init__(self, keep: int = POOL_KEEP, rings: int | None = None) -> None:
        self._keep = keep
        self._free: list[tuple[mmap.mmap, memoryview]] = []
        self._rings_left = RINGS_MAX if rings is None else rings  # see reserve_ring

    def reserve_ring(self) -> bool:
        """Room for one more download's ring? Memory stays bounded however many files
        are read at once: past ``rings`` the others write plainly (`_ChunkWriter`)."""
        if self._rings_left <= 0:
            return False
        self._rings_left -= 1
        return True

    def return_ring(self) -> None:
        self._rings_left += 1

    def take(self) -> tuple[mmap.mmap, memoryview]:
        if self._free:
            return self._free.pop()
        buf = mmap.mmap(-1, BUFFER_SIZE)
        return buf, memoryview(buf)

    def give(self, item: tuple[mmap.mmap, memoryview]) -> None:
        if len(self._free) < self._keep:
            self._free.append(item)
        else:
            item[1].release()
            item[0].close()

    def __len__(self) -> int:
        return len(self._free)


class _DirectWriter(_Writer):
    """Writes a download with O_DIRECT through a ring of ``RING_BUFFERS`` page-aligned
    buffers, and serves reads of the bytes still in the ring from memory.

    ``put`` copies a chunk into the buffer being filled (the download advances at once:
    readers are answered from memory); a full buffer is written by the ``run`` task in a
    worker thread (``os.pwrite`` at its offset), so the event loop never waits for the
    disk; the last, partial buffer is written rounded up to the block size and the file
    then truncated to its length. The file's bytes never pass through the page cache:
    the reader's FUSE page cache is the one copy in memory.

    Invariants (one trio thread): a buffer is refilled only after its previous contents'
    write returned, so every byte below `memory_start` is in the file and every byte in
    ``[memory_start, arrived)`` is in the ring; the buffers go back to the pool only when
    the file has every byte and no handle reads the download (`_Download.release`).
    """

    inline = False

    def __init__(self, fd: int, download: _Download, pool: _BufferPool) -> None:
        super().__init__(fd, download)  # fd: opened with O_DIRECT
        self._buffered = False  # O_DIRECT refused after all: plain writes (see _write)
        self._pool = pool
        self._slots: list[tuple[mmap.mmap, memoryview]] = []
        self._index = 0    # number of the buffer being filled, counted from the start
        self._fill = 0     # bytes in it
        self._written = 0  # buffers written to the file, counted from the start
        self._rest: memoryview | None = None  # the part of a chunk waiting for a buffer
        self._closing = False
        self._wake = trio.Event()
        self._space = trio.Event()
        self._drained = trio.Event()
        download.memory = self

    # ---- filling ---------------------------------------------------------------------

    def put(self, chunk: bytes | memoryview) -> bool:
        """Take ``chunk``; True if part of it waits for a buffer (``wait_space``)."""
        if self.error is not None:
            raise self._failure()
        self.accepted += len(chunk)
        self._rest = self._copy_in(memoryview(chunk))
        return self._rest is not None

    def _copy_in(self, data: memoryview) -> memoryview | None:
        while data:
            if self._fill == 0 and self._index - self._written >= RING_BUFFERS:
                return data  # that buffer's previous contents are not in the file yet
            view = self._slot(self._index)
            n = min(len(data), BUFFER_SIZE - self._fill)
            view[self._fill:self._fill + n] = data[:n]
            self._fill += n
            data = data[n:]
            if self._fill == BUFFER_SIZE:
                self._index += 1
                self._fill = 0
                self._wake.set()
            self._download.advance(n)
        return None

    def _slot(self, k: int) -> memoryview:
        i = k % RING_BUFFERS
        if i == len(self._slots):
            self._slots.append(self._pool.take())
        return self._slots[i][1]

    async def wait_space(self) -> None:
        while self._rest is not None and self.error is None:
            self._space = trio.Event()
            await self._space.wait()
            if self.error is None:
                self._rest = self._copy_in(self._rest)
        if self.error is not None:
            raise self._failure()

    async def wait_drained(self) -> None:
        """Wait until every full buffer is in the file (the partial last one is written
        by ``close``)."""
        while self._written < self._index and self.error is None:
            self._drained = trio.Event()
            await self._drained.wait()
        if self.error is not None:
            raise self._failure()
        await trio.lowlevel.checkpoint()

    def close(self, *, sync: bool) -> None:
        """Write the last buffer (and fsync if ``sync``), then close the file."""
        self._closing = True
        self._sync = sync
        self._wake.set()

    # ---- reading ---------------------------------------------------------------------

    @property
    def memory_start(self) -> int:
        """Where the bytes still in the ring begin (see the invariants)."""
        last = self._index if self._fill else self._index - 1  # the last buffer begun
        return max(0, last - RING_BUFFERS + 1) * BUFFER_SIZE

    def read(self, fd: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of what has arrived (short at its end): from the
        ring, and what left it from the file through ``fd``."""
        end = min(offset + size, self._download.arrived)
        if offset >= end:
            return b""
        start = self.memory_start
        if end <= start:
            return os.pread(fd, end - offset, offset)
        if offset < start:
            return os.pread(fd, start - offset, offset) + self._copy_out(start, end)
        return self._copy_out(offset, end)

    def _copy_out(self, start: int, end: int) -> bytes:
        parts = []
        while start < end:
            k, at = divmod(start, BUFFER_SIZE)
            n = min(end - start, BUFFER_SIZE - at)
            parts.append(self._slots[k % RING_BUFFERS][1][at:at + n])
            start += n
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        slots, self._slots = self._slots, []
        for item in slots:
            self._pool.give(item)
        self._pool.return_ring()

    # ---- writing ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                if self._written < self._index and self.error is None:
                    # Every full buffer not yet written, in one call: the disk's latency
                    # is paid once for them all.
                    first, end = self._written, self._index
                    views = [self._slots[k % RING_BUFFERS][1] for k in range(first, end)]
                    try:
                        await self._write(views, first * BUFFER_SIZE)
                    except OSError as exc:
                        self.error = exc
                    else:
                        self._written = end
                    self._space.set()
                    self._drained.set()
                    continue
                if self._closing:
                    break
                self._wake = trio.Event()
                await self._wake.wait()
            if self.error is None and self._fill:
                await self._write_last()
            await self._sync_if_asked()
        finally:
            self._closed()

    async def _write_last(self) -> None:
        at = self._index * BUFFER_SIZE
        size = -(-self._fill // _ALIGN) * _ALIGN
        view = self._slots[self._index % RING_BUFFERS][1]
        try:
            await self._write([view[:size]], at)
            os.ftruncate(self._fd, at + self._fill)
        except OSError as exc:
            self.error = exc

    async def _write(self, views: list[memoryview], offset: int) -> None:
        try:
            await trio.to_thread.run_sync(_pwritev_all, self._fd, views, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL or self._buffered:
                raise
            # The filesystem took O_DIRECT at open but not this write (a block size
            # above ours, say): go on with plain writes of the same buffers.
            log.info("O_DIRECT writes refused by the cache's filesystem (%s): plain "
                     "writes", exc.strerror)
            fd = os.open(self._download.temp_path, os.O_WRONLY | os.O_CLOEXEC)
            os.close(self._fd)
            self._fd, self._buffered = fd, True
            await trio.to_thread.run_sync(_pwritev_all, self._fd, views, offset)


def _open_direct(path: Path) -> int:
    """An O_DIRECT descriptor for writing ``path``, or -1 where it is refused."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or not DIRECT_WRITES:
        return -1
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | flag)
    except OSError as exc:
        log.debug("no O_DIRECT for the cache (%s): plain writes", exc.strerror)
        return -1


@dataclasses.dataclass(eq=False)
class _Entry:
    file_id: str
    name: str
    size: int  # recorded size when complete; the expected size while downloading
    complete: bool
    atime: float
    adopted: bool = False  # bytes from an upload: the API will not serve them again
    pins: int = 0
    dropped: bool = False  # remove once no handle pins it
    download: _Download | None = None


class CacheHandle:
    """An open entry: pins it against eviction until :meth:`close`."""

    def __init__(
        self, cache: ContentCache, entry: _Entry, download: _Download | None, fd: int
    ) -> None:
        self._cache = cache
        self._entry = entry
        self._download = download
        self._fd = fd

    @property
    def file_id(self) -> str:
        return self._entry.file_id

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, as soon as they have arrived.

        Short at the end of the file, ``b''`` past it. Raises
        :class:`ContentUnavailable` if the download failed before the range arrived.
        """
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        dl = self._download
        if dl is not None and not (dl.finished and dl.error is None):
            end = offset + size
            if dl.arrived < end and not dl.finished:
                await dl.wait_for(end)
            if dl.error is not None and dl.arrived < end:
                raise dl.error.fresh()
        # A range that has arrived is read at once, with no checkpoint: pyfuse3 yields
        # between requests anyway, and a read is one copy from memory or the page cache.
        if self._fd < 0:
            raise ValueError("read from a closed CacheHandle")
        memory = dl.memory if dl is not None else None
        if memory is not None:
            return memory.read(self._fd, offset, size)
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        """Unpin the entry. Synchronous and idempotent."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
        finally:
            if self._download is not None:
                self._download.readers -= 1
                self._download.release()
            self._cache._unpin(self._entry)

    def __repr__(self) -> str:
        return f"<CacheHandle {self._entry.file_id} fd={self._fd}>"


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
        self._pool = _BufferPool()  # direct writes: page-aligned buffers, reused
        make_private_dir(self.root)
        make_private_dir(self._content_dir)
        make_private_dir(self._partial_dir)
        self._nursery: trio.Nursery | None = None
        self._entries: dict[str, _Entry] = {}
        self._used = 0  # bytes of complete entries in _entries
        self._dirty_atimes: dict[str, float] = {}
        self._active: set[_Download] = set()  # downloads whose bytes are in partial/
        self._unsynced: set[_Entry] = set()  # installed downloads awaiting their fsync
        self._last_time = 0.0
        # statistics
        self._downloads_started = 0
        self._downloads_joined = 0
        self._downloads_completed = 0
        self._downloads_failed = 0
        self._resumes = 0
        self._bytes_downloaded = 0
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
        for leftover in os.scandir(self._partial_dir):
            unlink_quietly(Path(leftover.path))
        on_disk: dict[str, int] = {}
        for item in os.scandir(self._content_dir):
            try:
                on_disk[item.name] = item.stat(follow_symlinks=False).st_size
            except OSError:
                continue
        kept: set[str] = set()
        for rec in self._state.content_records():
            name = disk_name(rec.file_id)
            if rec.complete and on_disk.get(name) == rec.size:
                self._entries[rec.file_id] = _Entry(
                    rec.file_id, name, rec.size, complete=True, atime=rec.atime,
                    adopted=rec.adopted,
                )
                self._used += rec.size
                kept.add(name)
            else:
                if rec.complete:
                    log.warning("cache entry %s is damaged (size on disk %s, recorded %d); "
                                "discarding it", rec.file_id, on_disk.get(name), rec.size)
                    self._discarded += 1
                self._state.content_remove(rec.file_id)
        for name in on_disk.keys() - kept:
            unlink_quietly(self._content_dir / name)
        log.debug("content cache: %d entries, %d bytes", len(self._entries), self._used)
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

    def _path(self, entry: _Entry) -> Path:
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
        in_flight = sum(d.arrived for d in self._active)
        return self._used + in_flight, self.max_size

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
            "downloads_in_flight": sum(1 for d in self._active if not d.finished),
            "downloads_started": self._downloads_started,
            "downloads_joined": self._downloads_joined,
            "downloads_completed": self._downloads_completed,
            "downloads_failed": self._downloads_failed,
            "download_resumes": self._resumes,
            "bytes_downloaded": self._bytes_downloaded,
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
        download: _Download | None = None
        if entry is not None and entry.complete:
            fd = self._open_complete(entry)
            if fd < 0:
                entry = None  # it was damaged and has been discarded
            else:
                self._hits += 1
        if entry is None:
            entry = _Entry(file.id, disk_name(file.id), file.size, complete=False, atime=now)
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
        return CacheHandle(self, entry, download, fd)

    def _open_complete(self, entry: _Entry) -> int:
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

    def _unpin(self, entry: _Entry) -> None:
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

    def _start_download(self, entry: _Entry, file: RemoteFile) -> _Download:
        assert self._nursery is not None
        fd, temp = tempfile.mkstemp(prefix=entry.name + ".", dir=self._partial_dir)
        download = _Download(Path(temp))
        entry.download = download
        self._active.add(download)
        self._downloads_started += 1
        log.debug("download %s (%d bytes expected) started", file.id, file.size)
        self._nursery.start_soon(self._run_download, entry, download, fd, file.size)
        return download

    async def _run_download(
        self, entry: _Entry, download: _Download, fd: int, expected: int
    ) -> None:
        assert self._nursery is not None
        # The writer task owns its fd from here on and closes it (invariant 5).
        writer: _Writer
        direct = -1
        if self._pool.reserve_ring():
            direct = _open_direct(download.temp_path)
            if direct < 0:
                self._pool.return_ring()
        if direct >= 0:
            os.close(fd)
            writer = _DirectWriter(direct, download, self._pool)
        else:
            writer = _ChunkWriter(fd, download)
        self._nursery.start_soon(writer.run)
        failure: ContentUnavailable | None = None
        try:
            with download.cancel_scope:
                await self._stream(entry.file_id, download, writer, expected)
                await writer.wait_drained()
            if download.cancel_scope.cancelled_caught:
                failure = ContentUnavailable("download stopped: the file was removed")
        except ContentUnavailable as exc:
            failure = exc
        except BaseException:
            # Cancelled at unmount (or a bug): never leave a reader waiting.
            writer.close(sync=False)
            self._abandon(entry, download, ContentUnavailable("download stopped: unmounting"))
            raise
        if failure is not None:
            # Let what did arrive reach the file first: readers of it are still served.
            writer.close(sync=False)
            try:
                await writer.closed.wait()
            finally:
                self._abandon(entry, download, failure)
            return
        if download.arrived != expected:
            log.warning("file %s: listed as %d bytes but %d arrived; keeping what arrived",
                        entry.file_id, expected, download.arrived)
        # Every byte is in the file: readers stop waiting now, before the fsync.
        download.finish(None)
        self._downloads_completed += 1
        log.debug("download %s finished: %d bytes", entry.file_id, download.arrived)
        writer.close(sync=False)  # the fsync comes later (invariant 3)
        with trio.CancelScope(shield=True):  # only the last write; keep the entry
            await writer.closed.wait()
        if self._install_download(entry, download, synced=False):
            self._unsynced.add(entry)
            self._nursery.start_soon(self._sync_when_idle, entry)

    async def _stream(
        self, file_id: str, download: _Download, writer: _Writer, expected: int
    ) -> None:
        resumes = 0
        while True:
            start = writer.accepted
            try:
                async with self._client.download(file_id, offset=start) as stream:
                    if start == 0 and stream.size is not None and stream.size != expected:
                        log.warning("file %s: listed as %d bytes, server sends %d",
                                    file_id, expected, stream.size)
                    async for chunk in stream.iter_bytes():
                        self._bytes_downloaded += len(chunk)
                        data: bytes | memoryview = chunk
                        first = download.first_due(len(chunk)) if writer.inline else 0
                        if first:
                            # A reader waits for a range that ends inside this chunk
                            # (chunks reach 1 MiB): write up to that end, let it reply,
                            # then the rest (the first read of a file waits ~1 ms less).
                            data = memoryview(chunk)
                            writer.put(data[:first])
                            data = data[first:]
                            await _let_readers_reply(download)
                        if writer.put(data):
                            await writer.wait_space()
                        await _let_readers_reply(download)
                return
            except ContentUnavailable:
                raise
            except BadRequest as exc:
                raise ContentUnavailable(
                    f"not downloadable: {exc.message}", not_downloadable=True, cause=exc
                ) from exc
            except NotFound as exc:
                raise ContentUnavailable("the file no longer exists", cause=exc) from exc
            except _RESUMABLE as exc:
                if resumes >= MAX_RESUMES:
                    raise ContentUnavailable(f"download failed: {exc}", cause=exc) from exc
                resumes += 1
                self._resumes += 1
                log.info("download %s dropped at byte %d (%s); resuming",
                         file_id, writer.accepted, exc)
            except ApiError as exc:
                raise ContentUnavailable(f"download failed: {exc}", cause=exc) from exc
            except Exception as exc:
                # The client promises ApiError; anything else must still wake readers.
                log.exception("download %s failed unexpectedly", file_id)
                raise ContentUnavailable(f"download failed: {exc!r}", cause=exc) from exc

    def _abandon(self, entry: _Entry, download: _Download, error: ContentUnavailable) -> None:
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

    def _install_download(self, entry: _Entry, download: _Download, synced: bool) -> bool:
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

    async def _sync_when_idle(self, entry: _Entry) -> None:
        """The fsync of a finished download, once no handle reads it (invariant 3)."""
        with trio.move_on_after(SYNC_DELAY_MAX):
            while entry.pins > 0 and self._entries.get(entry.file_id) is entry:
                await trio.sleep(0.05)
        if entry not in self._unsynced:
            return  # removed meanwhile, or synced at unmount
        path = self._path(entry)
        with trio.CancelScope(shield=True):  # short; lets unmount keep the entry
            synced = await trio.to_thread.run_sync(_fsync_path, path)
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
            entry = _Entry(file_id, disk_name(file_id), size, complete=False, atime=self._now())
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

    async def _sync_adopted(self, entry: _Entry) -> None:
        path = self._path(entry)
        with trio.CancelScope(shield=True):  # short; lets unmount keep the entry
            await trio.to_thread.run_sync(_fsync_path, path)
        self._sync_and_record(entry, path, already_synced=True)

    def _sync_and_record(self, entry: _Entry, path: Path, already_synced: bool = False) -> None:
        if self._entries.get(entry.file_id) is not entry or not entry.complete:
            return  # dropped or evicted meanwhile
        synced = already_synced or _fsync_path(path)
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

    def _forget(self, entry: _Entry) -> None:
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
        """Bring usage under the limit by removing unpinned complete entries: first those
        that can be downloaded again, least recently opened first; then adopted ones,
        oldest first, but only while adopted bytes alone exceed the limit (invariant 4).

        ``incoming``: bytes about to be moved into ``content/``; room is made first, so
        the directory never holds more than the limit, not even between two syscalls.
        """
        used, limit = self.usage()
        used += incoming
        if used <= limit:
            return
        candidates = sorted(
            (e for e in self._entries.values() if e.complete and e.pins == 0),
            key=lambda e: e.atime,
        )
        for entry in candidates:
            if used <= limit:
                return
            if not entry.adopted:
                used -= entry.size
                self._evict_entry(entry)
        adopted = self.adopted_bytes()
        for entry in candidates:
            if used <= limit or adopted <= limit:
                return
            if entry.adopted:
                used -= entry.size
                adopted -= entry.size
                self._adopted_evictions += 1
                log.info("evicting %s (%d bytes) from the cache: it was uploaded through "
                         "this mount and the API does not serve it, so it can no longer "
                         "be read back (--cache-max-size %d is smaller than the uploads "
                         "it holds)", entry.file_id, entry.size, limit)
                self._evict_entry(entry)

    def _evict_entry(self, entry: _Entry) -> None:
        self._evictions += 1
        self._evicted_bytes += entry.size
        log.debug("evicting %s (%d bytes)", entry.file_id, entry.size)
        self._forget(entry)


async def _let_readers_reply(download: _Download) -> None:
    """If the last write woke readers, let them reply before more is received and
    written (~1 ms a MiB): trio runs a batch of tasks in either order, so yield twice
    to come after them."""
    if download.woke:
        download.woke = False
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Append ``data``; a short write continues."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write ``data`` at ``offset`` (in a worker thread); a short write continues."""
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _pwritev_all(fd: int, views: list[memoryview], offset: int) -> None:
    """Write the ``views`` one after the other from ``offset`` (in a worker thread)."""
    total = sum(len(v) for v in views)
    n = os.pwritev(fd, views, offset)
    if n == total:
        return
    for view in views:  # rare: a short write; finish buffer by buffer
        if n >= len(view):
            n -= len(view)
        else:
            _pwrite_all(fd, view[n:], offset + n)
            n = 0
        offset += len(view)


def _fsync_path(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    """Remove ``path``; already gone is fine, any other failure is logged."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
