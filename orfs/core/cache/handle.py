"""One open file's view of the cache: reads that wait for their own range, and a close
that gives the entry back through a callback (the handle knows nothing of the cache)."""

from __future__ import annotations

import os
from collections.abc import Callable

from orfs.core.cache.entry import Entry
from orfs.core.cache.inflight import Download


class CacheHandle:
    """An open entry: pins it against eviction until :meth:`close`, which calls
    ``unpin(entry)``."""

    def __init__(
        self, unpin: Callable[[Entry], None], entry: Entry, download: Download | None,
        fd: int,
    ) -> None:
        self._unpin = unpin
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
            self._unpin(self._entry)

    def __repr__(self) -> str:
        return f"<CacheHandle {self._entry.file_id} fd={self._fd}>"
