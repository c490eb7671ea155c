"""The file objects of ``openrouter://``: buffered reads with a growing read-ahead, and
writes staged in a temporary file and uploaded on close.

Reading: `GrowingReadAhead`, registered with fsspec as cache type ``"orfs-readahead"``
and the default of `OpenRouterFile`. fsspec's own caches fetch a fixed amount past
every miss (``readahead``, ``bytes``: one block size) or whole fixed blocks
(``blockcache``). Neither suits both ways Python's data tools read: pandas and Dask
read a CSV in order, in pieces of 64-256 KiB, and want big requests (at 40 ms a round
trip, a request per 256 KiB caps a reader near 6 MiB/s); pyarrow reads a Parquet file's
footer and then only the column chunks it needs, where every byte fetched past a
chunk is wasted (a 5 MiB read-ahead per chunk would download most of a file to read
one column of it). So the window starts small (``initial``, 128 KiB) at every read
that does not continue the previous one, and grows four times per read in order up to
the block size (32 MiB by default), which the filesystem fetches in parallel ranged
parts. What it holds is at most one window plus the read in progress.

Writing: bytes go to a memory buffer of one block (5 MiB), which is written to a
temporary file (mode 0600, in the filesystem's private directory) as it fills; close
uploads that file, streamed, and then deletes the file the path named before, if any
(a replace, as a ``cp`` over a file in the mount). A write that would take the file
past 100 MiB raises ``OSError(EFBIG)`` at that write, before anything is sent. An
exception inside ``with fs.open(..., "wb")`` discards the staged bytes and uploads
nothing, so a half-written file never replaces a whole one.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import tempfile
from types import TracebackType
from typing import Any, Protocol

from fsspec.asyn import sync
from fsspec.caching import BaseCache, register_cache
from fsspec.spec import AbstractBufferedFile

from orfs.api import RemoteFile
from orfs.config import MAX_FILE_SIZE

__all__ = ["GrowingReadAhead", "OpenRouterFile"]

log = logging.getLogger(__name__)

KiB, MiB = 1024, 1024 * 1024
READ_AHEAD_INITIAL = 128 * KiB
READ_BLOCK_SIZE = 32 * MiB   # the largest read-ahead window
WRITE_BLOCK_SIZE = 5 * MiB   # the memory buffer of a writer


class GrowingReadAhead(BaseCache):  # type: ignore[misc]
    """One contiguous window of the file: a read inside it costs nothing; a read that
    continues it (starts inside it or where it ends) fetches the rest plus a window four
    times the last one (up to ``blocksize``); any other read fetches itself plus
    ``initial`` bytes."""

    name = "orfs-readahead"

    def __init__(self, blocksize: int, fetcher: Any, size: int,
                 initial: int = READ_AHEAD_INITIAL) -> None:
        super().__init__(blocksize, fetcher, size)
        self.initial = max(0, min(initial, blocksize))
        self.window = 0
        self.start = 0
        self.end = 0
        self.data = b""

    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        start = 0 if start is None else start
        stop = self.size if stop is None else min(stop, self.size)
        if start >= self.size or start >= stop:
            return b""
        if self.start <= start and stop <= self.end:
            self.hit_count += 1
            return self.data[start - self.start:stop - self.start]
        self.miss_count += 1
        if self.start <= start <= self.end and self.end > 0:
            # In order: keep what is held from `start`, fetch on from the window's end.
            head = self.data[start - self.start:]
            fetch_from = self.end
            self.window = min(self.blocksize, max(self.initial, self.window * 4))
        else:
            head = b""
            fetch_from = start
            self.window = self.initial
        fetch_to = min(self.size, stop + self.window)
        new = self.fetcher(fetch_from, fetch_to)
        self.total_requested_bytes += fetch_to - fetch_from
        self.data = head + new
        self.start, self.end = start, start + len(self.data)
        return self.data[:stop - start]


register_cache(GrowingReadAhead, clobber=True)


class FileSystem(Protocol):
    """What a file needs of its filesystem (`OpenRouterFileSystem`)."""

    @property
    def loop(self) -> Any: ...
    def _readable_size(self, record: RemoteFile | None) -> int: ...
    def _record_info(self, name: str, record: RemoteFile | None) -> dict[str, Any]: ...
    async def _read_record(self, record: RemoteFile | None, start: int, end: int,
                           path: str) -> bytes: ...
    def _staging_file(self) -> tempfile._TemporaryFileWrapper[bytes]: ...
    async def _upload_staged(self, path: str, staged: str,
                             replaces: RemoteFile | None) -> None: ...


class OpenRouterFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file of `OpenRouterFileSystem` opened ``rb``, ``wb`` or ``xb`` (module doc)."""

    DEFAULT_BLOCK_SIZE = READ_BLOCK_SIZE

    def __init__(self, fs: FileSystem, path: str, mode: str = "rb", *,
                 record: RemoteFile | None = None, replaces: RemoteFile | None = None,
                 block_size: int | str | None = "default",
                 cache_type: str = GrowingReadAhead.name,
                 cache_options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if mode not in ("rb", "wb", "xb"):
            raise NotImplementedError(f"mode {mode!r}: openrouter:// files are read (rb) or "
                                      "written whole (wb, xb); the API has no appends")
        self.record = record
        self.replaces = replaces
        self._staged: tempfile._TemporaryFileWrapper[bytes] | None = None
        if mode != "rb" and block_size in ("default", None):
            block_size = WRITE_BLOCK_SIZE
        size = None
        if mode == "rb":
            assert record is not None
            size = fs._readable_size(record)
        super().__init__(fs, path, mode, block_size=block_size, cache_type=cache_type,
                         cache_options=cache_options, size=size, **kwargs)
        if mode == "rb":
            self.details = fs._record_info(path, record)

    # -- reading -----------------------------------------------------------------

    def _fetch_range(self, start: int, end: int) -> bytes:
        assert self.record is not None
        data: bytes = sync(self.fs.loop, self.fs._read_record, self.record, start, end,
                           self.path)
        return data

    # -- writing -----------------------------------------------------------------

    def write(self, data: Any) -> int:
        if self.writable():
            n = memoryview(data).nbytes
            if self.loc + n > MAX_FILE_SIZE:
                raise OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)}: the API stores "
                              f"files of at most {MAX_FILE_SIZE} bytes", self.path)
        written: int = super().write(data)
        return written

    def _initiate_upload(self) -> None:
        self._staged = self.fs._staging_file()

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._staged is None:
            self._initiate_upload()
        assert self._staged is not None
        self._staged.write(self.buffer.getbuffer())
        if final:
            self._staged.flush()
            staged, self._staged = self._staged, None
            try:
                sync(self.fs.loop, self.fs._upload_staged, self.path, staged.name,
                     self.replaces)
            finally:
                staged.close()  # deletes it, unless the filesystem kept it (renamed)
        return True

    def discard(self) -> None:
        if self._staged is not None:
            staged, self._staged = self._staged, None
            staged.close()
        self.buffer = io.BytesIO()

    def close(self) -> None:
        """Upload (writers), then close. Unlike fsspec's default this does not drop the
        filesystem's listing: the upload already put the new file in it."""
        if getattr(self, "_unclosable", False) or getattr(self, "closed", True):
            return
        try:
            if self.mode == "rb":
                self.cache = None
            elif not getattr(self, "forced", True):
                self.flush(force=True)
        finally:
            self.closed = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and self.writable():
            log.warning("%s: not uploaded: the writer failed (%s)", self.path,
                        exc_type.__name__)
            self.discard()
            self.closed = True
            return
        self.close()

    def __del__(self) -> None:
        # fsspec's default closes (and so uploads) a writer that was never closed, from
        # the garbage collector; a dropped writer uploads nothing here.
        if not getattr(self, "closed", True) and self.writable():
            self.discard()
            self.closed = True
