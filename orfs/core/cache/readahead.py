"""Read-ahead: how far past a read the cache should already be fetching, per handle,
and in what size of parts.

A read that starts where the handle's previous read ended is sequential: the window
ahead grows ``WINDOW_GROWTH`` times (and is at least twice the read), from one block up
to ``WINDOW_MAX``; any other read (a seek) resets it to
nothing, so a random read costs only its own blocks. The window is fetched in parts of
a quarter of it (one per stream, from ``PART_MIN`` up to ``PART_MAX``), and kept full part by
part: a new part is asked for as soon as one part's worth of the window is not
requested yet, so every stream stays busy while the reader keeps up.

The sizes and the reasons for them are in docs/CACHE.md.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# The unit of fetching: reads are widened to whole blocks, and fetches start and end on
# them (but at the end of the file). Small, so a random read or a `tail` at a distance
# costs one round trip and little more than its own bytes.
BLOCK = 128 * KiB
# The least a read-ahead request asks for: at 40 ms and 16 MB/s per connection, 1 MiB
# takes 65 ms, so the round trip is under 40 % of it even while the window is small.
PART_MIN = 1 * MiB
# The most one request asks for: large enough that its round trip is a small part of
# its time on a slow link, small enough that several run at once for one file.
PART_MAX = 8 * MiB
# The most a handle has requested ahead of its reads: two parts of PART_MAX for each of
# 4 streams, so a 64 MiB output read in order is shared by the streams to its end.
WINDOW_MAX = 64 * MiB
# How much the window grows with each read in order. The first reads of a sequential
# reader each wait a round trip, so the window must reach its cap within a few reads,
# or the start of every big read runs on one or two streams (a 64 MiB `dd` at 40 ms and
# 16 MB/s per connection: 48 MiB/s growing 2x a read, 53 at 4x, 55 at 8x, against 61
# for four direct streams). What can be fetched in vain is WINDOW_MAX either way.
WINDOW_GROWTH = 8


def align_down(pos: int) -> int:
    return pos - pos % BLOCK


def align_up(pos: int, size: int) -> int:
    """``pos`` rounded up to a block, but not past ``size`` (the end of the file)."""
    return min(size, -(-pos // BLOCK) * BLOCK)


def part_size(window: int, streams: int = 4) -> int:
    """The size of the parts a window of ``window`` bytes is fetched in: a share per
    stream, but never so small that the round trip is most of a request's time."""
    return max(PART_MIN, min(PART_MAX, align_down(window // max(1, streams))))


class ReadAhead:
    """One handle's sequential-read detector and window."""

    __slots__ = ("next", "window", "requested")

    def __init__(self) -> None:
        self.next = 0        # where a sequential read would start (a first read at 0 is)
        self.window = 0      # bytes wanted ahead of the reader
        self.requested = 0   # how far ahead of the reader has been asked for

    def ahead(self, offset: int, end: int, size: int) -> tuple[int, int]:
        """A read of ``[offset, end)``: the end of what should be fetched or in flight
        now (at least ``end``), and the size of the parts to fetch it in."""
        if offset == self.next:
            # Growing, and at least twice what this read asks for: a reader of 1 MiB
            # reads gets a window worth having at once.
            grown = max(WINDOW_GROWTH * self.window, 2 * (end - offset), BLOCK)
            self.window = min(grown, WINDOW_MAX)
        else:
            self.window = 0
            self.requested = 0
        self.next = end
        part = part_size(self.window)
        if self.window == 0:
            return end, part
        if self.requested - end > self.window - part:
            return max(end, min(self.requested, size)), part
        self.requested = min(size, end + self.window)
        return max(end, self.requested), part
