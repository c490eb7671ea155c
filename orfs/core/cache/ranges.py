"""Sets of byte ranges: which bytes of a file are present, and what a read is missing.

A `RangeSet` holds disjoint, non-adjacent half-open ranges ``[start, end)`` in order;
adding merges neighbours. It is small in practice (a few ranges per file: reads are
sequential or few), so lists and `bisect` are enough.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class RangeSet:
    """Disjoint half-open byte ranges, merged as they are added."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; returns how many bytes were new."""
        if start >= end:
            return 0
        # Every range that touches or overlaps [start, end) merges with it.
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        new = end - start
        for k in range(i, j):
            new -= max(0, min(self._ends[k], end) - max(self._starts[k], start))
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]
        return new

    def clip(self, size: int) -> None:
        """Drop everything at or past ``size``."""
        i = bisect.bisect_left(self._ends, size + 1)
        del self._starts[i + 1:], self._ends[i + 1:]
        if i < len(self._starts):
            if self._starts[i] >= size:
                del self._starts[i], self._ends[i]
            else:
                self._ends[i] = size

    def covers(self, start: int, end: int) -> bool:
        """Every byte of ``[start, end)`` is in the set."""
        if start >= end:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def run_from(self, pos: int) -> int:
        """The end of the range that holds ``pos``, or ``pos`` if none does."""
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and self._ends[i] > pos:
            return self._ends[i]
        return pos

    def next_start(self, pos: int) -> int | None:
        """The start of the first range that begins after ``pos``."""
        i = bisect.bisect_right(self._starts, pos)
        return self._starts[i] if i < len(self._starts) else None

    def gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The parts of ``[start, end)`` not in the set, in order."""
        pos = start
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while pos < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if e <= pos:
                i += 1
                continue
            if s >= end:
                break
            if s > pos:
                yield pos, s
            pos = max(pos, e)
            i += 1
        if pos < end:
            yield pos, end

    @property
    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    # ---- the index's text form ---------------------------------------------------------

    def dumps(self) -> str:
        """``"0-1048576,4194304-5242880"``: what the index stores."""
        return ",".join(f"{s}-{e}" for s, e in self)

    @classmethod
    def loads(cls, text: str | None) -> RangeSet:
        """The inverse of `dumps`; anything malformed gives an empty set (the bytes are
        fetched again, never served unchecked)."""
        out = cls()
        if not text:
            return out
        try:
            for part in text.split(","):
                a, b = part.split("-")
                start, end = int(a), int(b)
                if start < 0 or end < start:
                    return cls()
                out.add(start, end)
        except ValueError:
            return cls()
        return out
