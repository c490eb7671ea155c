"""The disk budget: which entries eviction takes, and in what order.

Eviction removes least-recently-opened entries (complete, or the present ranges of a
partly fetched one) that no handle pins and no fetch writes to; an entry
bigger than the limit is served while open and evicted at its last close. Entries come
in two classes: bytes that can be downloaded again, and adopted bytes (uploaded through
the mount: the API never serves them, so the cache holds the only copy the mount can
read back). Every evictable entry of the first class goes before any adopted one, and
adopted entries go (oldest first) only while adopted bytes alone exceed the limit: open
files and downloads in flight may pass it for a while, but never cost an upload its
bytes. Eviction never touches a pinned entry, a download in flight or ``partial/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from orfs.core.cache.entry import Entry


def victims(entries: Iterable[Entry], used: int, limit: int,
            adopted_bytes: Callable[[], int]) -> Iterator[Entry]:
    """The entries to evict, in order, to bring ``used`` under ``limit``: downloadable
    ones least recently opened first, then adopted ones oldest first while
    ``adopted_bytes()`` (asked only if it comes to that) exceeds the limit. The caller
    removes each one as it is yielded."""
    if used <= limit:
        return
    candidates = sorted(
        (e for e in entries if e.pins == 0 and not e.fetches and e.held > 0),
        key=lambda e: e.atime,
    )
    for entry in candidates:
        if used <= limit:
            return
        if not entry.adopted:
            used -= entry.held
            yield entry
    adopted = adopted_bytes()
    for entry in candidates:
        if used <= limit or adopted <= limit:
            return
        if entry.adopted:
            used -= entry.held
            adopted -= entry.held
            yield entry
