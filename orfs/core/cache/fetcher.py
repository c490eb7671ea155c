"""The fetcher: runs one download from the API into its file in ``partial/``.

It picks the download's writer (a ring of buffers if the pool has room and the
filesystem takes O_DIRECT, else plain writes), streams the body into it, resumes a
dropped stream from where it stopped, and says how it ended: every byte in the file
(and the readers woken), or a failure handed to ``failed`` (the readers woken with it).
What the cache does with the result is the cache's business. Parallel streams of one
file would live here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from orfs.api.errors import (
    ApiError,
    BadRequest,
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
# Errors after which resuming the stream may help.
_RESUMABLE = (Unreachable, ProtocolError, ServerError, RateLimited)


class Fetcher:
    """Runs downloads (`fetch`) and counts what they did."""

    def __init__(self, client: DownloadClient, pool: BufferPool) -> None:
        self._client = client
        self._pool = pool
        self.bytes_downloaded = 0
        self.resumes = 0
        self.completed = 0

    async def fetch(self, nursery: trio.Nursery, file_id: str, download: Download, fd: int,
                    expected: int, failed: Callable[[ContentUnavailable], None]) -> bool:
        """Download ``file_id`` into ``download`` (its file open as ``fd``, which the
        writer owns from here on). True once every byte is in the file and the writer
        closed it; False after ``failed(error)`` was called (then, too, with what did
        arrive in the file). Cancelled (unmount): ``failed`` is called, then it raises."""
        # The writer task owns its fd from here on and closes it (see writers.py).
        writer: writers.Writer
        direct = -1
        if self._pool.reserve_ring():
            direct = writers.open_direct(download.temp_path)
            if direct < 0:
                self._pool.return_ring()
        if direct >= 0:
            os.close(fd)
            writer = writers.DirectWriter(direct, download, self._pool)
        else:
            writer = writers.ChunkWriter(fd, download)
        nursery.start_soon(writer.run)
        failure: ContentUnavailable | None = None
        try:
            with download.cancel_scope:
                await self._stream(file_id, download, writer, expected)
                await writer.wait_drained()
            if download.cancel_scope.cancelled_caught:
                failure = ContentUnavailable("download stopped: the file was removed")
        except ContentUnavailable as exc:
            failure = exc
        except BaseException:
            # Cancelled at unmount (or a bug): never leave a reader waiting.
            writer.close(sync=False)
            failed(ContentUnavailable("download stopped: unmounting"))
            raise
        if failure is not None:
            # Let what did arrive reach the file first: readers of it are still served.
            writer.close(sync=False)
            try:
                await writer.closed.wait()
            finally:
                failed(failure)
            return False
        if download.arrived != expected:
            log.warning("file %s: listed as %d bytes but %d arrived; keeping what arrived",
                        file_id, expected, download.arrived)
        # Every byte is in the file: readers stop waiting now, before the fsync.
        download.finish(None)
        self.completed += 1
        log.debug("download %s finished: %d bytes", file_id, download.arrived)
        writer.close(sync=False)  # the fsync comes later (the cache's install step)
        with trio.CancelScope(shield=True):  # only the last write; keep the entry
            await writer.closed.wait()
        return True

    async def _stream(
        self, file_id: str, download: Download, writer: writers.Writer, expected: int
    ) -> None:
        resumes = 0
        while True:
            start = writer.accepted
            try:
                async with self._client.download(file_id, offset=start) as stream:
                    if start == 0 and stream.size is not None and stream.size != expected:
                        log.warning("file %s: listed as %d bytes, server sends %d",
                                    file_id, expected, stream.size)
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
                raise ContentUnavailable(f"download failed: {exc}", cause=exc) from exc
            except Exception as exc:
                # The client promises ApiError; anything else must still wake readers.
                log.exception("download %s failed unexpectedly", file_id)
                raise ContentUnavailable(f"download failed: {exc!r}", cause=exc) from exc

