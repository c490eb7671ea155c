"""Streamed uploads for sequential writers.

`cp` into the mount creates a file, writes it from offset 0 upward in 1 MiB pieces
and flushes once. Uploading only at that flush would add the whole upload to the
copy; instead, once ``STREAM_AFTER`` bytes have arrived in order, a background task
starts ``POST /files`` with a body of unknown length (chunked transfer encoding) that
reads the staging file as it grows and waits for more. The flush *seals* the stream at
the file's size and waits only for the answer, so the copy costs little more than the
upload itself.

The per-file write state lives on `LocalFile.write_mode` (see writes.py)::

    fresh --write at 0--> appending --size >= STREAM_AFTER--> streaming --flush: sealed--> done
      ^                       |                                   |
      |                       +--- a write elsewhere, a truncate, EFBIG, a rename,
      |                            unlink, close of the fd --> random (stream cancelled;
      |                            the file uploads at flush as before)
      +--- truncate to 0 (from any state but a sealed stream)

Why a threshold and not the first write: a file under 1 MiB spools in about a
millisecond, so streaming it saves nothing measurable, while the simple path sends
Content-Length (any deployment takes it) and leaves `echo x > f`, `touch`, `tar -x` of
small files and short-lived temporary names (renamed before or right after close)
with one request made at close, exactly as before. Measured in docs/PERFORMANCE.md.

Safety: the multipart body's closing boundary comes after the source iterator ends,
and the iterator ends only once `UploadStream.seal` was called (by the flush that then
waits for the answer). `UploadStream.cancel` is refused once sealed, and before that
it cancels the request's scope and makes the iterator raise, so a cancelled stream
never completes a multipart body and cannot create a file. A stream that failed before
it was sealed has therefore created nothing, and the flush uploads from the staging
file instead (one normal upload); a stream that failed after sealing reports its error
to the flush like any upload.

Without a running `UploadStreams.run` (unit tests of the core) or with
``enabled=False`` (``--no-chunked-upload``) nothing streams: every upload happens at
flush with its length known.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import trio

from orfs.api.errors import ApiError
from orfs.api.models import RemoteFile
from orfs.api.upload import UploadBody, UploadSizeMismatch
from orfs.core.local import LocalFile
from orfs.core.tasks import TaskOwner
from orfs.core.upload_stream import StreamCancelled, UploadStream

log = logging.getLogger(__name__)

# Bytes a sequential writer writes before its upload starts (see the module doc).
STREAM_AFTER = 1024 * 1024

Uploader = Callable[[str, UploadBody], Awaitable[RemoteFile]]


class UploadStreams:
    """Starts, feeds, seals and cancels the streamed uploads of one mount."""

    def __init__(self, upload: Uploader, filename: Callable[[LocalFile], str], *,
                 enabled: bool = True,
                 stream_after: int = STREAM_AFTER,
                 allowed: Callable[[LocalFile], bool] | None = None) -> None:
        self._upload = upload
        self._filename = filename
        self.enabled = enabled
        self.stream_after = stream_after
        self._allowed = allowed
        self._tasks = TaskOwner()  # the streams being sent, while `run` runs
        self.started = 0       # statistics (read by the tests)
        self.completed = 0
        self.cancelled = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the upload tasks until cancelled (at unmount: unsealed streams abort)."""
        await self._tasks.run(task_status=task_status)

    # -- the state machine ---------------------------------------------------------

    def wrote(self, local: LocalFile, offset: int, end: int) -> None:
        """After a successful write of [offset, end) (local.size already updated)."""
        if end <= offset:
            return  # an empty write changes nothing
        mode = local.write_mode
        if mode == "streaming":
            stream = local.stream
            assert stream is not None
            if (offset == stream.available and local.size == end and local.path is stream.path
                    and not local.unlinked):
                stream.append(end)
                return
            self._give_up(local, "a write out of order" if offset != stream.available
                          else "renamed or removed while written")
            return
        if mode not in ("fresh", "appending"):
            return  # random, done: upload at flush
        # In order: from byte 0, each write where the last ended, nothing beyond it.
        if offset != (0 if mode == "fresh" else local.appended) or local.size != end:
            local.write_mode = "random"
            return
        local.write_mode = "appending"
        local.appended = end
        if end >= self.stream_after:
            self._start(local)

    def resized(self, local: LocalFile, size: int) -> None:
        """A truncate: cancels any stream; to 0 a new sequential writer may begin."""
        if local.write_mode == "streaming" and not self._give_up(local, "truncated"):
            return  # sealed: the flush is waiting for it; the next upload follows
        local.write_mode = "fresh" if size == 0 else "random"
        local.appended = 0

    def abandon(self, local: LocalFile, why: str) -> None:
        """EFBIG, unlink, the fd closing: never let this stream complete."""
        if local.write_mode == "streaming":
            self._give_up(local, why)
        elif local.write_mode in ("fresh", "appending"):
            local.write_mode = "random"

    def take(self, local: LocalFile, filename: str) -> UploadStream | None:
        """At flush (upload): seal the stream if it carries exactly the file's bytes
        under this name, and return it; otherwise cancel it and return None."""
        stream = local.stream
        if local.write_mode != "streaming" or stream is None:
            return None
        if (stream.cancelled or stream.filename != filename or stream.available != local.size
                or (stream.done.is_set() and stream.result is None)):
            self._give_up(local, "its name or bytes changed" if not stream.done.is_set()
                          else "it failed before the end")
            return None
        stream.seal(local.size)
        local.write_mode = "done"
        local.stream = None
        return stream

    # -- internals -----------------------------------------------------------------

    def _start(self, local: LocalFile) -> None:
        if (not self.enabled or not self._tasks.running or local.fd < 0 or local.unlinked
                or local.remote is not None
                or (self._allowed is not None and not self._allowed(local))):
            local.write_mode = "random"
            return
        filename = self._filename(local)
        # Its own descriptor: the local's may be closed (unlink, retire) while a sealed
        # body is still being sent.
        stream = UploadStream(os.dup(local.fd), filename, local.path, local.size)
        local.stream = stream
        local.write_mode = "streaming"
        self.started += 1
        log.debug("streamed upload of %s started at %d bytes", filename, local.size)
        self._tasks.start_soon(self._send, stream)

    def _give_up(self, local: LocalFile, why: str) -> bool:
        """Cancel the unsealed stream; the file uploads at flush. False if sealed."""
        stream = local.stream
        if stream is not None:
            if not stream.cancel():
                return False
            self.cancelled += 1
            log.debug("streamed upload of %s cancelled: %s", stream.filename, why)
        local.stream = None
        local.write_mode = "random"
        return True

    async def _send(self, stream: UploadStream) -> None:
        try:
            with stream.cancel_scope:
                stream.result = await self._upload(stream.filename, stream.body())
                self.completed += 1
        except StreamCancelled:
            pass
        except (ApiError, UploadSizeMismatch) as exc:
            stream.error = exc
            log.debug("streamed upload of %s failed: %s", stream.filename, exc)
        except Exception as exc:  # a bug must not kill the mount; the flush re-sends
            log.exception("streamed upload of %s failed unexpectedly", stream.filename)
            stream.error = UploadSizeMismatch(f"streamed upload failed: {exc!r}")
        finally:
            os.close(stream.fd)
            stream.done.set()
