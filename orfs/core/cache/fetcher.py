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
# A fetch judges its rate only after this many bytes of body.
RATE_SAMPLE = 256 * 1024


class _Streams:
    """The two stream slots one fetch holds (its file's and the mount's), which it can
    hand on before its last byte: see :meth:`Fetcher._stream`."""

    __slots__ = ("_limiters", "held")

    def __init__(self, *limiters: trio.CapacityLimiter) -> None:
        self._limiters = limiters
        self.held = False

    async def acquire(self) -> None:
        if not self.held:
            for limiter in self._limiters:
                await limiter.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            for limiter in reversed(self._limiters):
                limiter.release()
            self.held = False


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
        streams = _Streams(limiter, self.total)
        try:
            with download.cancel_scope:
                try:
                    await streams.acquire()
                    return await self._fetch(nursery, file_id, download, streams, failed,
                                             sized)
                finally:
                    streams.release()
        except BaseException:
            if not download.finished:
                failed(ContentUnavailable("download stopped: unmounting"))
            raise
        # Only reached if the fetch was cancelled by its own scope (the file removed).
        if not download.finished:
            failed(ContentUnavailable("download stopped: the file was removed"))
        return False

    async def _fetch(self, nursery: trio.Nursery, file_id: str, download: Download,
                     streams: _Streams, failed: Callable[[ContentUnavailable], None],
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
            await self._stream(file_id, download, writer, streams, sized)
            await writer.wait_drained()
        except ContentUnavailable as exc:
            failure = exc
        except BaseException:
            # Cancelled (unmount, the file removed) or a bug: never leave a reader
            # waiting. What arrived is kept if the writer gets it into the file first
            # (it writes out its ring when cancelled, within writers.FLUSH_TIMEOUT).
            writer.close(sync=False)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(writers.FLUSH_TIMEOUT + 1):
                    await writer.closed.wait()
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
        streams: _Streams, sized: Callable[[int], None],
    ) -> None:
        """Stream the body into ``writer``. One round trip before its last byte is
        due, the fetch hands its stream slots on (``streams.release()``), so the next
        fetch queued for them sends its request while this one still receives: its
        first byte then comes about when this one's last does, and the link does not
        sit idle for a round trip between two parts. The round trip is what this
        request waited for its first byte; the time left, its bytes left at the rate
        it has been receiving them."""
        resumes = 0
        while True:
            at = download.start + writer.accepted
            length = None if download.end is None else download.end - at
            if length is not None and length <= 0:
                return
            await streams.acquire()  # a resumed request is a request of its own
            try:
                self.requests += 1
                sent = trio.current_time()
                async with self._client.download(file_id, offset=at,
                                                 length=length) as stream:
                    self._note_ranged(stream.ranged, file_id)
                    if stream.total_size is not None:
                        sized(stream.total_size)
                    end = download.end if download.end is not None else stream.total_size
                    first_byte = 0.0
                    got = 0
                    async for chunk in stream.iter_bytes():
                        self.bytes_downloaded += len(chunk)
                        got += len(chunk)
                        if streams.held and end is not None:
                            now = trio.current_time()
                            first_byte = first_byte or now
                            if got >= RATE_SAMPLE and now > first_byte:
                                # The rate over the whole request, its round trip
                                # included: low rather than high (bytes come in
                                # bursts), so the slots are handed on a little late
                                # rather than early.
                                rate = got / (now - sent)
                                if end - (at + got) <= rate * (first_byte - sent):
                                    log.debug("fetch %s [%d, %d): %d bytes left at %.0f "
                                              "B/s, %.3f s to first byte: streams handed on",
                                              file_id, download.start, end,
                                              end - (at + got), rate, first_byte - sent)
                                    streams.release()
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
