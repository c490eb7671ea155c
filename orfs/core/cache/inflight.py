"""Fetches in flight: each one's progress and the readers waiting on it, and the table
of every running fetch of the mount.

A `Download` is one ranged request: bytes ``[start, end)`` of a file (``end`` None: to
the file's end, as the server says), written at their place in the file's sparse copy.

Invariant (one trio thread): a download wakes its waiters after each chunk only when the
smallest waited-for end has arrived (a heap peek per chunk), and wakes all of them when
it finishes or fails, so no reader can hang on a dead download.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import trio

from orfs.core.cache.errors import ContentUnavailable


class RingMemory(Protocol):
    """The newest bytes of a download held in memory (`writers.DirectWriter`)."""

    def read(self, fd: int, offset: int, size: int) -> bytes: ...

    def release(self) -> None: ...


class Download:
    """One streamed fetch of ``[start, end)`` into the file at ``path``, and the readers
    waiting on it. Positions given to `wait_for` and `first_due` are the file's."""

    __slots__ = ("path", "start", "end", "arrived", "finished", "error", "cancel_scope",
                 "_waiters", "_seq", "woke", "memory", "readers", "written", "kept", "file_size")

    def __init__(self, path: Path, start: int = 0, end: int | None = None,
                 file_size: int = 0) -> None:
        self.path = path
        self.start = start
        self.end = end  # None: to the end of the file
        self.file_size = file_size  # the file's length (writers.DirectWriter's last write)
        self.arrived = 0  # bytes that arrived, contiguous from start
        self.finished = False  # no more bytes will arrive (success or failure)
        self.error: ContentUnavailable | None = None
        self.cancel_scope = trio.CancelScope()
        self._waiters: list[tuple[int, int, trio.Event]] = []  # heap by wanted end
        self._seq = 0
        self.woke = False  # advance woke a reader since the downloader last looked
        # Direct writes: the ring that holds the newest bytes (see DirectWriter), until
        # the file has every byte and no handle reads it; None otherwise.
        self.memory: RingMemory | None = None
        self.readers = 0  # readers in the middle of a read through this download
        self.written = False  # the writer closed the file
        self.kept = False  # ... after writing every byte that arrived (not cancelled)

    @property
    def reached(self) -> int:
        """The file position up to which bytes have arrived."""
        return self.start + self.arrived

    def covers(self, pos: int) -> bool:
        """``pos`` is in this fetch's range."""
        return self.start <= pos and (self.end is None or pos < self.end)

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
        reached = self.start + self.arrived
        if w and w[0][0] <= reached:
            while w and w[0][0] <= reached:
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
            k = w[0][0] - self.start - self.arrived
            if 0 < k < n:
                return k
        return 0

    async def wait_for(self, end: int) -> None:
        """Return once bytes up to file position ``end`` have arrived or the fetch
        finished."""
        if self.finished or self.start + self.arrived >= end:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self._seq += 1
        heapq.heappush(self._waiters, (end, self._seq, event))
        await event.wait()


async def let_readers_reply(download: Download) -> None:
    """If the last write woke readers, let them reply before more is received and
    written (~1 ms a MiB): trio runs a batch of tasks in either order, so yield twice
    to come after them."""
    if download.woke:
        download.woke = False
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()


class InFlight:
    """Every fetch of the mount that has not ended: what arrived of them counts against
    the disk budget until it joins its entry's present ranges."""

    def __init__(self) -> None:
        self._downloads: set[Download] = set()

    def add(self, download: Download) -> None:
        self._downloads.add(download)

    def discard(self, download: Download) -> None:
        self._downloads.discard(download)

    def arrived(self) -> int:
        """Bytes that arrived in fetches not yet ended."""
        return sum(d.arrived for d in self._downloads)

    def running(self) -> int:
        return sum(1 for d in self._downloads if not d.finished)

    def __len__(self) -> int:
        return len(self._downloads)

    def __iter__(self) -> Iterator[Download]:
        return iter(self._downloads)
