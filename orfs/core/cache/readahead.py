"""Read-ahead: how far past a read the cache should already be fetching, per handle.

A read that starts where the handle's previous read ended is sequential: the window
ahead doubles, from one block up to ``WINDOW_MAX``; any other read (a seek) resets it to
nothing, so a random read costs only its own blocks. The window is asked for in steps:
a new range is requested only once less than half of the window is left ahead of the
reader, so a sequential read makes requests of at least half a window (many small
requests would each pay a round trip).

Sizes (the reasons are in docs/CACHE.md):
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# The unit of fetching: reads are widened to whole blocks, and fetches start and end on
# them (but at the end of the file). Small, so a random read or a `tail` at a distance
# costs one round trip and little more than its own bytes.
BLOCK = 128 * KiB
# The most one request asks for: large enough that its round trip is a small part of
# its time on a slow link, small enough that several run at once for one file.
PART_MAX = 8 * MiB
# The most a handle has requested ahead of its reads: PART_MAX for each of 4 streams.
WINDOW_MAX = 32 * MiB


def align_down(pos: int) -> int:
    return pos - pos % BLOCK


def align_up(pos: int, size: int) -> int:
    """``pos`` rounded up to a block, but not past ``size`` (the end of the file)."""
    return min(size, -(-pos // BLOCK) * BLOCK)


class ReadAhead:
    """One handle's sequential-read detector and window."""

    __slots__ = ("next", "window", "requested")

    def __init__(self) -> None:
        self.next = 0        # where a sequential read would start (a first read at 0 is)
        self.window = 0      # bytes wanted ahead of the reader
        self.requested = 0   # how far ahead of the reader has been asked for

    def ahead(self, offset: int, end: int, size: int) -> int:
        """A read of ``[offset, end)``: the end of what should be fetched or in flight
        now (at least ``end``)."""
        if offset == self.next:
            self.window = min(max(2 * self.window, BLOCK), WINDOW_MAX)
        else:
            self.window = 0
            self.requested = 0
        self.next = end
        if self.window == 0:
            return end
        if self.requested - end >= self.window // 2:
            return max(end, min(self.requested, size))
        self.requested = min(size, end + self.window)
        return max(end, self.requested)
