"""One open file's view of the cache: reads that fetch and wait for their own range (and
ask for what lies ahead of a sequential reader), and a close that gives the entry back.
The handle knows nothing of the cache but the two calls of `Ranges`."""

from __future__ import annotations

import os
from typing import Protocol

from orfs.core.cache.entry import Entry
from orfs.core.cache.errors import ContentUnavailable
from orfs.core.cache.inflight import Download
from orfs.core.cache.readahead import ReadAhead


class Ranges(Protocol):
    """What a handle asks of the cache."""

    def need(self, entry: Entry, offset: int, end: int, ahead: int, part: int
             ) -> list[Download]:
        """Have ``[offset, ahead)`` present or in flight (new fetches in parts of about
        ``part`` bytes); the fetches that still have to bring part of ``[offset, end)``."""
        ...

    def unpin(self, entry: Entry) -> None: ...


class CacheHandle:
    """An open entry: pins it against eviction until :meth:`close`, which calls
    ``cache.unpin(entry)``."""

    def __init__(self, cache: Ranges, entry: Entry, fd: int) -> None:
        self._cache = cache
        self._entry = entry
        self._fd = fd
        self._ahead = ReadAhead()

    @property
    def file_id(self) -> str:
        return self._entry.file_id

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, as soon as they have arrived.

        Short at the end of the file, ``b''`` past it. Raises
        :class:`ContentUnavailable` if a fetch of the range failed.
        """
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        if self._fd < 0:
            raise ValueError("read from a closed CacheHandle")
        entry = self._entry
        if not entry.complete:
            end = min(offset + size, entry.size)
            ahead, part = self._ahead.ahead(offset, end, entry.size)
            while not entry.complete and offset < end:
                waits = self._cache.need(entry, offset, end, ahead, part)
                for d in waits:
                    want = end if d.end is None else min(end, d.end)
                    await d.wait_for(want)
                    if d.error is not None and d.reached < want:
                        raise d.error.fresh()
                # The server may have said the file is longer than listed.
                new_end = min(offset + size, entry.size)
                if new_end <= end:
                    end = new_end
                    break
                end = new_end
            if self._fd < 0:
                raise ValueError("read from a closed CacheHandle")
            if not entry.complete:
                return self._read_partial(offset, end) if offset < end else b""
        # A range that is present is read at once, with no checkpoint: pyfuse3 yields
        # between requests anyway, and a read is one copy from memory or the page cache.
        return os.pread(self._fd, size, offset)

    def _read_partial(self, offset: int, end: int) -> bytes:
        """``[offset, end)`` from the file and the rings of the fetches bringing it."""
        entry = self._entry
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            run = entry.present.run_from(pos)
            if run > pos:
                stop = min(run, end)
                parts.append(os.pread(self._fd, stop - pos, pos))
            else:
                d = entry.fetch_at(pos)
                stop = min(end, d.reached) if d is not None else pos
                if stop <= pos:
                    if entry.complete:
                        stop = end
                        parts.append(os.pread(self._fd, stop - pos, pos))
                    else:
                        raise ContentUnavailable(
                            f"bytes from {pos} of {entry.file_id} are not cached")
                elif d is not None and d.memory is not None:
                    parts.append(d.memory.read(self._fd, pos, stop - pos))
                else:
                    parts.append(os.pread(self._fd, stop - pos, pos))
            if len(parts[-1]) < stop - pos:
                break  # the file ends sooner (it was cut to a shorter size)
            pos = stop
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Unpin the entry. Synchronous and idempotent."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
        finally:
            self._cache.unpin(self._entry)

    def __repr__(self) -> str:
        return f"<CacheHandle {self._entry.file_id} fd={self._fd}>"
