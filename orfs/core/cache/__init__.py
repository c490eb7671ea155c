"""The content cache: file bytes on disk by file id (docs/CACHE.md).

The public face is this module; the parts, one job each:

    content_cache.py  `ContentCache`: the table of entries and every change to it
    handle.py         `CacheHandle`: one open file's reads: ask, wait, read
    entry.py          `Entry`: what is present of one id, its fetches, its pins
    ranges.py         `RangeSet`: present byte ranges
    readahead.py      `ReadAhead`: sequential reads and their window; the sizes
    inflight.py       a ranged fetch and its waiting readers; the in-flight table
    fetcher.py        runs a fetch under the stream limits: writer, stream, resume
    writers.py        writes a download into its file (O_DIRECT ring, or plain)
    buffers.py        the pool of page-aligned buffers the rings take
    budget.py         which entries eviction takes, in what order
    index.py          the on-disk index reconciled at start-up
    disk.py           file names under ``content/``; remove and fsync by path
    errors.py         `ContentUnavailable`
    source.py         what the cache needs of the API client
"""

from orfs.core.cache.content_cache import ContentCache
from orfs.core.cache.disk import disk_name, unlink_quietly
from orfs.core.cache.errors import ContentUnavailable
from orfs.core.cache.handle import CacheHandle
from orfs.core.cache.source import DownloadClient, DownloadStream

__all__ = ["CacheHandle", "ContentCache", "ContentUnavailable", "DownloadClient",
           "DownloadStream", "disk_name", "unlink_quietly"]
