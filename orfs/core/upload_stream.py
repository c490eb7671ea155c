"""`UploadStream`: one upload whose body follows a file while it is written.

The record and its body; `orfs.core.streaming.UploadStreams` decides when one starts,
is sealed or is cancelled (the state machine and the safety argument are there). A
local file holds its unsealed stream (`LocalFile.stream`), so this module sits below
both.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import trio

from orfs.api.errors import ApiError
from orfs.api.models import RemoteFile
from orfs.api.upload import UploadBody, UploadSizeMismatch

# The body is read from the staging file in pieces of up to this many bytes; the
# sender is woken only when this much is waiting (or at the seal), not per write.
CHUNK = 256 * 1024


class StreamCancelled(Exception):
    """Raised inside the body iterator of a cancelled stream (never past the task)."""


class UploadStream:
    """One streamed upload following one local file's sequential writes."""

    def __init__(self, fd: int, filename: str, path: tuple[str, ...], available: int) -> None:
        self.fd = fd
        self.filename = filename
        self.path = path                 # the display path it was started under
        self.available = available       # bytes written, contiguous from 0
        self.sealed_size: int | None = None
        self.cancelled = False
        self.body_complete = False       # an attempt yielded every byte: the closing
                                         # boundary may have been sent
        self.result: RemoteFile | None = None
        self.error: ApiError | UploadSizeMismatch | None = None
        self.done = trio.Event()
        self.cancel_scope = trio.CancelScope()
        self._want = 0                   # wake the sender once available reaches this
        self._wake = trio.Event()

    # -- driven by the write path (synchronous) ------------------------------------

    def append(self, end: int) -> None:
        self.available = end
        if end >= self._want:
            self._wake.set()

    def seal(self, size: int) -> None:
        """The body ends at `size` bytes; from now on the upload may complete."""
        self.sealed_size = size
        self._wake.set()

    def cancel(self) -> bool:
        """Abort before the body is complete; False if already sealed (too late)."""
        if self.sealed_size is not None:
            return False
        if not self.cancelled:
            self.cancelled = True
            self.cancel_scope.cancel()
            self._wake.set()
        return True

    # -- the body ------------------------------------------------------------------

    def body(self) -> UploadBody:
        return UploadBody(self._chunks, size=None)

    async def _chunks(self) -> AsyncIterator[bytes]:
        """The staging file from byte 0, waiting for writes, ending at the seal.
        Re-openable: a retried attempt starts again from byte 0."""
        pos = 0
        while True:
            if self.cancelled:
                raise StreamCancelled()
            limit = self.sealed_size if self.sealed_size is not None else self.available
            if pos < limit and (self.sealed_size is not None or limit - pos >= CHUNK):
                n = min(limit - pos, CHUNK)
                data = os.pread(self.fd, n, pos)
                if len(data) != n:
                    raise UploadSizeMismatch(f"staging file ended at {pos + len(data)} bytes,"
                                             f" {limit} expected")
                pos += n
                yield data
                continue
            if self.sealed_size is not None:
                self.body_complete = True
                return  # the seal: MultipartUpload adds the closing boundary after this
            self._want = pos + CHUNK
            self._wake = trio.Event()
            await self._wake.wait()

    async def outcome(self) -> RemoteFile | None:
        """Wait for the answer of a sealed stream: the file; None if it failed before
        its body was complete (so nothing was created); or the error, raised."""
        await self.done.wait()
        if self.result is not None:
            return self.result
        if self.error is not None and self.body_complete:
            raise self.error
        return None
