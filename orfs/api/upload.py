"""Upload bodies and their multipart/form-data encoding, streamed.

`UploadBody` is a factory of byte-chunk iterators plus an optional known size. The
client calls `open()` once per attempt (a retried upload starts again from the first
byte), and never holds more than one chunk. A size of None means the length is not
known yet (a staging file still being written): the upload is sent with chunked
transfer encoding, or, when the client was built with ``chunked_upload=False``, the
client first reads the body once to count it and then sends it with Content-Length.

The multipart body is built by hand so that it streams: one part named ``file``::

    --BOUNDARY\\r\\n
    Content-Disposition: form-data; name="file"; filename="..."\\r\\n
    Content-Type: application/octet-stream\\r\\n
    \\r\\n
    <bytes>\\r\\n
    --BOUNDARY--\\r\\n

Filename encoding (RFC 7578 §4.2): the name is sent as UTF-8 inside a quoted string.
``"`` and ``\\`` are escaped with a backslash (a quoted-pair, which python-multipart,
the emulator's parser, and the usual server parsers undo), so those survive exactly;
control characters (including CR, LF and NUL), which cannot appear in a header line at
all, are percent-encoded as HTML5 does (``%0A``), which a server does not undo: such a
name is stored differently (`stored_name`); the filesystem keeps showing a file it
created under the name it was created with (docs/SEMANTICS.md, "Namespace").
No ``filename*`` parameter is sent: RFC 7578 forbids it and python-multipart ignores it.
Known limit: python-multipart strips what looks like a Windows path from a name that
starts with ``\\\\`` or ``X:\\`` (an IE6 workaround).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable

import trio

__all__ = ["DEFAULT_CHUNK_SIZE", "MultipartUpload", "UploadBody", "UploadSizeMismatch",
           "encode_filename", "stored_name"]

DEFAULT_CHUNK_SIZE = 256 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadSizeMismatch(ValueError):
    """The body yielded a different number of bytes than its declared size."""


def encode_filename(filename: str) -> str:
    """The quoted-string contents for the filename parameter (see module docstring)."""
    escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
    return _CONTROL.sub(lambda m: f"%{ord(m.group(0)):02X}", escaped)


def stored_name(filename: str) -> str:
    """The filename the service receives, and so stores, for an upload of ``filename``:
    the same, except that control characters arrive percent-encoded (``a%0Ab``)."""
    return _CONTROL.sub(lambda m: f"%{ord(m.group(0)):02X}", filename)


class UploadBody:
    """A re-openable source of upload bytes and, when known, their number."""

    def __init__(self, opener: Callable[[], AsyncIterable[bytes]], size: int | None = None
                 ) -> None:
        if size is not None and size < 0:
            raise ValueError("size must be >= 0")
        self._opener = opener
        self.size = size

    def open(self) -> AsyncIterable[bytes]:
        """A fresh iterator over the body from its first byte."""
        return self._opener()

    @classmethod
    def from_bytes(cls, data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> UploadBody:
        """For small bodies and tests."""
        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, len(data), chunk_size):
                yield data[i:i + chunk_size]
        return cls(gen, len(data))

    @classmethod
    def from_path(cls, path: os.PathLike[str] | str, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  size: int | None = None) -> UploadBody:
        """A file on disk; its size is taken now unless given."""
        p = os.fspath(path)
        if size is None:
            size = os.stat(p).st_size

        async def gen() -> AsyncIterator[bytes]:
            async with await trio.open_file(p, "rb") as f:
                while chunk := await f.read(chunk_size):
                    yield chunk
        return cls(gen, size)


class MultipartUpload:
    """One attempt's multipart/form-data stream over an `UploadBody`.

    With ``size`` known, `content_length` is exact and the stream checks that the
    body yields exactly that many bytes (raising `UploadSizeMismatch` otherwise).
    """

    def __init__(self, filename: str, body: UploadBody, *, size: int | None = None,
                 boundary: str | None = None) -> None:
        self.boundary = boundary or f"orfs-{secrets.token_hex(16)}"
        self._body = body
        self._size = body.size if size is None else size
        self._head = (f"--{self.boundary}\r\n"
                      f'Content-Disposition: form-data; name="file"; '
                      f'filename="{encode_filename(filename)}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n").encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.sent = 0  # body bytes yielded so far (not counting the multipart framing)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int | None:
        if self._size is None:
            return None
        return len(self._head) + self._size + len(self._tail)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        source = self._body.open()
        try:
            async for chunk in source:
                if not chunk:
                    continue
                self.sent += len(chunk)
                if self._size is not None and self.sent > self._size:
                    raise UploadSizeMismatch(
                        f"upload body grew past its declared size of {self._size} bytes")
                yield bytes(chunk)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:  # an abandoned async generator: close its file now
                await aclose()
        if self._size is not None and self.sent != self._size:
            raise UploadSizeMismatch(
                f"upload body ended after {self.sent} of its declared {self._size} bytes")
        yield self._tail


async def measure(body: UploadBody) -> int:
    """Count a body's bytes by reading it once (for ``chunked_upload=False``)."""
    n = 0
    source = body.open()
    try:
        async for chunk in source:
            n += len(chunk)
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
    return n
