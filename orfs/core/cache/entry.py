"""The record of one file id in the cache: what is present, what is in flight, who pins
it, what happens to it at the last close."""

from __future__ import annotations

import bisect
import dataclasses

import trio

from orfs.core.cache.inflight import Download
from orfs.core.cache.ranges import RangeSet


@dataclasses.dataclass(eq=False)
class Entry:
    """One id's bytes in ``content/<name>``: complete, or the ranges in ``present`` (a
    sparse file of the full size) plus what ``fetches`` are bringing."""

    file_id: str
    name: str
    size: int  # the file's size (the listing's, until the server says otherwise)
    complete: bool
    atime: float
    adopted: bool = False  # bytes from an upload: the API will not serve them again
    pins: int = 0
    dropped: bool = False  # remove once no handle pins it
    present: RangeSet = dataclasses.field(default_factory=RangeSet)  # in the file
    # Fetches running for this id, by start; their ranges never overlap each other or
    # ``present``'s (ContentCache.need asks only for what neither holds).
    fetches: list[Download] = dataclasses.field(default_factory=list)
    limiter: trio.CapacityLimiter | None = None  # this file's streams
    dirty: bool = False  # present ranges not yet recorded in the index

    @property
    def held(self) -> int:
        """Bytes of this id on disk that the budget counts (fetches in flight aside)."""
        return self.size if self.complete else self.present.total

    def fetch_at(self, pos: int) -> Download | None:
        """The running fetch whose range holds ``pos``."""
        i = bisect.bisect_right([d.start for d in self.fetches], pos) - 1
        if i >= 0 and self.fetches[i].covers(pos):
            return self.fetches[i]
        return None

    def add_fetch(self, download: Download) -> None:
        starts = [d.start for d in self.fetches]
        self.fetches.insert(bisect.bisect_right(starts, download.start), download)

    def remove_fetch(self, download: Download) -> None:
        if download in self.fetches:
            self.fetches.remove(download)
