"""The fetcher: runs one ranged fetch from the API into its place in the file.

It waits for a stream (at most ``per_file`` at once for one file, ``total`` for the
mount), picks the fetch's writer (a ring of buffers if the pool has room and the
filesystem takes O_DIRECT, else plain writes), streams the body into it, resumes a
dropped stream from where it stopped, and says how it ended: every byte in the file
(and the readers woken), or a failure handed to ``failed`` (the readers woken with it).
What the cache does with the result is the cache's business.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from orfs.api.errors import (
    ApiError,
    BadRequest,
    HttpStatusError,
    NotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    Unreachable,
)
from orfs.core.cache import writers
from orfs.core.cache.buffers import BufferPool
from orfs.core.cache.errors import ContentUnavailable
from orfs.core.cache.inflight import Download, let_readers_reply
from orfs.core.cache.source import DownloadClient

log = logging.getLogger(__name__)

# A dropped stream is resumed from where it stopped this many times (the client has
# already retried transient errors before the body started).
MAX_RESUMES = 1
# The mount-wide number of streams, per stream a file may use (--download-streams).
TOTAL_STREAMS_PER_STREAM = 4
# Errors after which resuming the stream may help.
_RESUMABLE = (Unreachable, ProtocolError, ServerError, RateLimited)


class Fetcher:
    """Runs fetches (`fetch`) under the stream limits and counts what they did."""

    def __init__(self, client: DownloadClient, pool: BufferPool, streams: int = 1) -> None:
        self._client = client
        self._pool = pool
        self.streams = max(1, streams)  # per file (--download-streams)
        # Across the mount: room for this many files to use all of theirs at once, or
        # twice as many to use half (see docs/CACHE.md).
        self.total = trio.CapacityLimiter(TOTAL_STREAMS_PER_STREAM * self.streams)
        self.bytes_downloaded = 0
        self.resumes = 0
        self.completed = 0
        self.requests = 0
        self._direct = True  # False once the filesystem refused an O_DIRECT write
        # The server's answer to a range: True (206), False (the whole file: ranges are
        # off for this mount), None before the first ranged answer.
        self.ranged: bool | None = None
        self.on_unranged: Callable[[], None] | None = None

    async def fetch(self, nursery: trio.Nursery, file_id: str, download: Download,
                    limiter: trio.CapacityLimiter,
                    failed: Callable[[ContentUnavailable], None],
                    sized: Callable[[int], None]) -> bool:
        """Fetch ``download``'s range of ``file_id`` into its file, holding one of the
        file's streams (``limiter``) and one of the mount's. True once every byte is in
        the file and the writer closed it; False after ``failed(error)`` was called
        (then, too, with what did arrive in the file). ``sized(n)`` is called when the
        server says the file has ``n`` bytes. Cancelled (unmount, a drop): ``failed`` is
        called, then it raises."""
        try:
            with download.cancel_scope:
                async with limiter, self.total:
                    return await self._fetch(nursery, file_id, download, failed, sized)
        except BaseException:
            if not download.finished:
                failed(ContentUnavailable("download stopped: unmounting"))
            raise
        # Only reached if the fetch was cancelled by its own scope (the file removed).
        if not download.finished:
            failed(ContentUnavailable("download stopped: the file was removed"))
        return False

    async def _fetch(self, nursery: trio.Nursery, file_id: str, download: Download,
                     failed: Callable[[ContentUnavailable], None],
                     sized: Callable[[int], None]) -> bool:
        # The writer task owns its fd from here on and closes it (see writers.py).
        writer: writers.Writer
        direct = -1
        if self._direct and self._pool.reserve_ring():
            direct = writers.open_direct(download.path)
            if direct < 0:
                self._pool.return_ring()
        if direct >= 0:
            writer = writers.DirectWriter(direct, download, self._pool)
        else:
            writer = writers.ChunkWriter(
                os.open(download.path, os.O_WRONLY | os.O_CLOEXEC), download)
        nursery.start_soon(writer.run)
        failure: ContentUnavailable | None = None
        try:
            await self._stream(file_id, download, writer, sized)
            await writer.wait_drained()
        except ContentUnavailable as exc:
            failure = exc
        except BaseException:
            # Cancelled (unmount, the file removed) or a bug: never leave a reader
            # waiting; what arrived is not kept.
            writer.close(sync=False)
            failed(ContentUnavailable("download stopped"))
            raise
        if failure is not None:
            # Let what did arrive reach the file first: readers of it are still served.
            writer.close(sync=False)
            try:
                await writer.closed.wait()
            finally:
                failed(failure)
            return False
        writer.close(sync=False)  # the fsync comes later (the cache's)
        with trio.CancelScope(shield=True):  # only the last write; keep the entry
            await writer.closed.wait()
        if isinstance(writer, writers.DirectWriter) and writer.refused:
            self._direct = False  # the next fetches write plainly from the start
        if writer.error is not None:
            failed(writer._failure())
            return False
        if not writer.done:
            # The writer was stopped (unmount) before its last bytes were written.
            failed(ContentUnavailable("download stopped: unmounting"))
            return False
        # Every byte is in the file: readers stop waiting now, before the fsync.
        self.completed += 1
        log.debug("fetch %s [%d, %d) finished", file_id, download.start, download.reached)
        return True

    async def _stream(
        self, file_id: str, download: Download, writer: writers.Writer,
        sized: Callable[[int], None],
    ) -> None:
        resumes = 0
        while True:
            at = download.start + writer.accepted
            length = None if download.end is None else download.end - at
            if length is not None and length <= 0:
                return
            try:
                self.requests += 1
                async with self._client.download(file_id, offset=at,
                                                 length=length) as stream:
                    self._note_ranged(stream.ranged, file_id)
                    if stream.total_size is not None:
                        sized(stream.total_size)
                    async for chunk in stream.iter_bytes():
                        self.bytes_downloaded += len(chunk)
                        data: bytes | memoryview = chunk
                        first = download.first_due(len(chunk)) if writer.inline else 0
                        if first:
                            # A reader waits for a range that ends inside this chunk
                            # (chunks reach 1 MiB): write up to that end, let it reply,
                            # then the rest (the first read of a file waits ~1 ms less).
                            data = memoryview(chunk)
                            writer.put(data[:first])
                            data = data[first:]
                            await let_readers_reply(download)
                        if writer.put(data):
                            await writer.wait_space()
                        await let_readers_reply(download)
                return
            except ContentUnavailable:
                raise
            except BadRequest as exc:
                raise ContentUnavailable(
                    f"not downloadable: {exc.message}", not_downloadable=True, cause=exc
                ) from exc
            except NotFound as exc:
                raise ContentUnavailable("the file no longer exists", cause=exc) from exc
            except _RESUMABLE as exc:
                if resumes >= MAX_RESUMES:
                    raise ContentUnavailable(f"download failed: {exc}", cause=exc) from exc
                resumes += 1
                self.resumes += 1
                log.info("download %s dropped at byte %d (%s); resuming",
                         file_id, writer.accepted, exc)
            except ApiError as exc:
                if isinstance(exc, HttpStatusError) and exc.status == 416:
                    # The range starts at or past the end: the file is shorter than
                    # listed. Nothing to fetch here.
                    sized(at)
                    return
                raise ContentUnavailable(f"download failed: {exc}", cause=exc) from exc
            except Exception as exc:
                # The client promises ApiError; anything else must still wake readers.
                log.exception("download %s failed unexpectedly", file_id)
                raise ContentUnavailable(f"download failed: {exc!r}", cause=exc) from exc


    def _note_ranged(self, ranged: bool | None, file_id: str) -> None:
        if ranged is None or self.ranged is False:
            return
        if ranged:
            self.ranged = True
            return
        self.ranged = False
        log.warning("the server answered a ranged download of %s with the whole file: "
                    "ranges are off for this mount, each file is read by one sequential "
                    "stream", file_id)
        if self.on_unranged is not None:
            self.on_unranged()
