"""The record of one file id in the cache: what is present, who pins it, what happens
to it at the last close."""

from __future__ import annotations

import dataclasses

from orfs.core.cache.inflight import Download


@dataclasses.dataclass(eq=False)
class Entry:
    """One id's bytes: complete in ``content/<name>``, or arriving through ``download``.

    Today presence is all or nothing (``complete``, else the prefix ``download.arrived``);
    a ranged cache would keep its set of ranges here."""

    file_id: str
    name: str
    size: int  # recorded size when complete; the expected size while downloading
    complete: bool
    atime: float
    adopted: bool = False  # bytes from an upload: the API will not serve them again
    pins: int = 0
    dropped: bool = False  # remove once no handle pins it
    download: Download | None = None
