"""Writing a fetch into its place in the file's sparse copy: two ways, one interface.

`ChunkWriter` writes each chunk as it comes. `DirectWriter` writes with O_DIRECT from a
ring of page-aligned buffers (from `buffers.BufferPool`), in worker threads, and answers
reads of what is still in the ring from memory. Why: a buffered write fills new
page-cache pages, one copy of the whole file that the reader's own (FUSE) page cache
already holds; on the benchmark's VM those new pages cost 7x an O_DIRECT write
(docs/PERFORMANCE.md). Where the filesystem refuses O_DIRECT (tmpfs before Linux 6.6,
some network filesystems), or with ``DIRECT_WRITES`` off, chunks are written as they
come. Both ways are tested.

Invariant: a download's file descriptor belongs to its writer's task, which closes it
only after its last write (or fsync) thread returned: nothing else closes it, so a
worker thread never writes to a reused descriptor number.
"""

from __future__ import annotations

import abc
import errno
import logging
import mmap
import os
from pathlib import Path

import trio

from orfs.core.cache import buffers
from orfs.core.cache.errors import ContentUnavailable
from orfs.core.cache.inflight import Download

log = logging.getLogger(__name__)

DIRECT_WRITES = True
RING_BUFFERS = 3           # per download: one filling, the others being written or read
_ALIGN = 4096              # O_DIRECT offsets and lengths: a multiple of the block size
# At an unmount, how long a writer may take to write out what is still in its ring.
FLUSH_TIMEOUT = 5.0


class Writer(abc.ABC):
    """What both ways of writing a download share: the descriptor they own (module
    doc), the error that stops them, and the end: an fsync if asked, then the close."""

    inline: bool

    def __init__(self, fd: int, download: Download) -> None:
        self._fd = fd
        self._download = download
        self.accepted = 0  # bytes taken so far
        self.error: OSError | None = None
        self.synced = False
        self.done = False  # every byte taken is in the file (False if cancelled first)
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
        self._download.kept = self.done
        self._download.release()
        self.closed.set()


class ChunkWriter(Writer):
    """Writes a fetch's chunks at their place as they come (one ``os.pwrite`` each, no
    fsync per chunk) and advances the fetch; ``run`` does the final fsync and the
    close."""

    inline = True

    def __init__(self, fd: int, download: Download) -> None:
        super().__init__(fd, download)
        self._closing = trio.Event()

    def put(self, chunk: bytes | memoryview) -> bool:
        """Write ``chunk``; True if the caller should ``wait_space`` before more."""
        if self.error is not None:
            raise self._failure()
        try:
            _pwrite_all(self._fd, memoryview(chunk), self._download.start + self.accepted)
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
            self.done = True  # each chunk was written as it came
            await self._closing.wait()
            await self._sync_if_asked()
        finally:
            self._closed()


class DirectWriter(Writer):
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
    the file has every byte and no handle reads the download (`Download.release`).
    """

    inline = False

    def __init__(self, fd: int, download: Download, pool: buffers.BufferPool) -> None:
        super().__init__(fd, download)  # fd: opened with O_DIRECT
        self._buffered = False  # O_DIRECT refused after all: plain writes (see _write)
        self.refused = False
        self._pool = pool
        self._slots: list[tuple[mmap.mmap, memoryview]] = []
        self._index = 0    # number of the buffer being filled, counted from the start
        self._fill = 0     # bytes in it
        self._written = 0  # buffers written to the file, counted from the start
        self._rest: memoryview | None = None  # the part of a chunk waiting for a buffer
        self._closing = False
        self._last_written = False
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
            n = min(len(data), buffers.BUFFER_SIZE - self._fill)
            view[self._fill:self._fill + n] = data[:n]
            self._fill += n
            data = data[n:]
            if self._fill == buffers.BUFFER_SIZE:
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
        return self._download.start + max(0, last - RING_BUFFERS + 1) * buffers.BUFFER_SIZE

    def read(self, fd: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of what has arrived (short at its end): from the
        ring, and what left it from the file through ``fd``."""
        end = min(offset + size, self._download.reached)
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
        base = self._download.start
        while start < end:
            k, at = divmod(start - base, buffers.BUFFER_SIZE)
            n = min(end - start, buffers.BUFFER_SIZE - at)
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
            try:
                await self._write_out()
            except trio.Cancelled:
                # Unmounting: what arrived is written out before the descriptor closes
                # (at most a ring of buffers), so the cache can keep it.
                with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                    self._closing = True
                    await self._write_out()
                raise
        finally:
            self._closed()

    async def _write_out(self) -> None:
        """Write each buffer as it fills until closed, then the last one; fsync if
        asked. ``done`` once every byte that arrived is in the file."""
        while True:
            if self._written < self._index and self.error is None:
                # Every full buffer not yet written, in one call: the disk's latency
                # is paid once for them all.
                first, end = self._written, self._index
                views = [self._slots[k % RING_BUFFERS][1] for k in range(first, end)]
                try:
                    await self._write(
                        views, self._download.start + first * buffers.BUFFER_SIZE)
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
        if self.error is None and self._fill and not self._last_written:
            await self._write_last()
            self._last_written = True
        self.done = self.error is None
        await self._sync_if_asked()

    async def _write_last(self) -> None:
        at = self._download.start + self._index * buffers.BUFFER_SIZE
        size = -(-self._fill // _ALIGN) * _ALIGN
        view = self._slots[self._index % RING_BUFFERS][1]
        try:
            if size != self._fill and at + self._fill < self._download.file_size:
                # A partial page inside the file (a fetch that failed midway): rounding
                # up would overwrite what follows. Written plainly instead.
                await trio.to_thread.run_sync(self._write_plain, view[:self._fill], at)
                return
            await self._write([view[:size]], at)
            if size != self._fill:
                # The rounded-up tail of the file's last page: cut back to its length.
                os.ftruncate(self._fd, max(at + self._fill, self._download.file_size))
        except OSError as exc:
            self.error = exc

    def _write_plain(self, view: memoryview, at: int) -> None:
        fd = os.open(self._download.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            _pwrite_all(fd, view, at)
        finally:
            os.close(fd)

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
            fd = os.open(self._download.path, os.O_WRONLY | os.O_CLOEXEC)
            os.close(self._fd)
            self._fd, self._buffered, self.refused = fd, True, True
            await trio.to_thread.run_sync(_pwritev_all, self._fd, views, offset)


def open_direct(path: Path) -> int:
    """An O_DIRECT descriptor for writing ``path``, or -1 where it is refused."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag or not DIRECT_WRITES:
        return -1
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | flag)
    except OSError as exc:
        log.debug("no O_DIRECT for the cache (%s): plain writes", exc.strerror)
        return -1


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


