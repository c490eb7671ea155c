"""The pool of page-aligned buffers that direct writes fill (see writers.py), and the
bound on how many downloads hold a ring of them at once."""

from __future__ import annotations

import mmap

BUFFER_SIZE = 1024 * 1024  # one FUSE read request, at most
POOL_KEEP = 8              # idle buffers kept for the next downloads (already touched)
RINGS_MAX = 8              # fetches with a ring at once (24 MiB); more write plainly


class BufferPool:
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
        are read at once: past ``rings`` the others write plainly (`ChunkWriter`)."""
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
