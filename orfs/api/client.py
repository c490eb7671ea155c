"""The async client of the OpenRouter Files API (the contract: docs/API.md).

Every request goes through `FilesClient._send`, which counts it, logs one DEBUG line
on ``orfs.api`` (method, path and query, status, bytes, milliseconds; never headers)
and turns failures into the typed errors of errors.py via classify.py. Every
operation goes through the one retry policy (retry.py). Bodies stream both ways:
uploads are a multipart stream over an `UploadBody`, downloads are yielded chunk by
chunk; nothing holds a whole file.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from types import TracebackType
from urllib.parse import quote

import httpx
import trio

from orfs import __version__
from orfs.api.classify import error_for_status, error_for_transport
from orfs.api.credentials import ApiKey
from orfs.api.errors import ApiError, ProtocolError
from orfs.api.models import RemoteFile
from orfs.api.retry import RetryPolicy, RetryState
from orfs.api.shapes import (
    check_deleted,
    file_from_json,
    files_from_json,
    page_from_json,
    page_records,
    parse_json,
)
from orfs.api.upload import MultipartUpload, UploadBody, measure

__all__ = ["Download", "FilesClient"]

log = logging.getLogger(__name__)

PROVIDERS = ("openai", "anthropic")
# A JSON answer (a list page of 1000 files is ~300 KB) larger than this is not one.
JSON_LIMIT = 32 * 1024 * 1024
# Error bodies are small JSON; read at most this much of one.
ERROR_BODY_LIMIT = 64 * 1024
CONNECT_TIMEOUT = 10.0

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

OPERATIONS = ("list", "retrieve", "upload", "delete", "download")


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The (decoded) body, refusing one over `limit` bytes."""
    parts: list[bytes] = []
    n = 0
    async for chunk in response.aiter_bytes():
        n += len(chunk)
        if n > limit:
            raise ProtocolError(f"response body larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


class FilesClient:
    """One workspace (and provider) of the Files API.

    ``chunked_upload=False``: an upload whose size is not known is first read once to
    count its bytes (waiting, for a staging file, until its writer is done), then sent
    with Content-Length; with True (the default) it is sent at once, chunked.
    """

    def __init__(self, base_url: str, api_key: str | ApiKey, *, workspace: str | None = None,
                 provider: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 retry: RetryPolicy | None = None, timeout: float = 30.0,
                 chunked_upload: bool = True, title: str | None = "orfs",
                 referer: str | None = None, read_retry: RetryPolicy | None = None,
                 ) -> None:
        key = api_key.reveal() if isinstance(api_key, ApiKey) else api_key
        # A key with spaces, control or non-ASCII characters cannot be a header value;
        # say so without quoting it.
        if not key or any(not (0x21 <= ord(c) <= 0x7E) for c in key):
            raise ValueError("the API key is empty or contains characters not allowed in "
                             "an HTTP header")
        if provider is not None and provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)} (or none), "
                             f"not {provider!r}")
        base = httpx.URL(base_url.strip().rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._base = str(base).rstrip("/")
        self.workspace = workspace
        self.provider = provider
        self.chunked_upload = chunked_upload
        self._params: dict[str, str] = {}
        if workspace:
            self._params["workspace_id"] = workspace
        if provider:
            self._params["provider"] = provider
        headers = {"Authorization": f"Bearer {key}", "User-Agent": f"orfs/{__version__}"}
        if title:
            headers["X-OpenRouter-Title"] = title
        if referer:
            headers["HTTP-Referer"] = referer
        self._http = httpx.AsyncClient(
            headers=headers, transport=transport, follow_redirects=False,
            # read/write apply per socket operation: a long upload or download has no
            # total limit, only a limit on silence.
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout),
                                  pool=CONNECT_TIMEOUT))
        self._retry = retry or RetryPolicy()
        # Lists, retrieves, deletes and download opens: someone waits at a prompt. The
        # mount passes retry.INTERACTIVE_RETRY (a shorter budget and a hard deadline).
        self._read_retry = read_retry or self._retry
        self._counts: collections.Counter[str] = collections.Counter()
        # Called after every successful answer (the mount ends its "API down" window).
        self.on_success: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return (f"FilesClient({self._base!r}, workspace={self.workspace!r}, "
                f"provider={self.provider!r})")

    async def __aenter__(self) -> FilesClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def stats(self) -> dict[str, int]:
        """Requests made per operation (each attempt counts), retries, failed attempts."""
        return {name: self._counts[name] for name in (*OPERATIONS, "retries", "errors")}

    # -- plumbing ----------------------------------------------------------------

    def _url(self, *parts: str) -> str:
        return "/".join([self._base, "files", *(quote(p, safe="") for p in parts)])

    def _count_retry(self) -> None:
        self._counts["retries"] += 1

    def _log(self, request: httpx.Request, status: int | str, nbytes: int, t0: float) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s, %d bytes, %.0f ms", request.method,
                      request.url.raw_path.decode("ascii", "replace"), status, nbytes,
                      (time.perf_counter() - t0) * 1000)

    async def _send(self, op: str, method: str, url: str, *,
                    params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None,
                    content: AsyncIterable[bytes] | None = None,
                    ) -> tuple[httpx.Request, httpx.Response, float]:
        """One attempt. Returns the request, a successful response whose body is not
        yet read, and the start time; raises the classified error otherwise."""
        self._counts[op] += 1
        request = self._http.build_request(method, url, params={**self._params, **(params or {})},
                                           headers=headers, content=content)
        what = f"{method} {request.url.path}"
        t0 = time.perf_counter()
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            self._counts["errors"] += 1
            self._log(request, type(exc).__name__, 0, t0)
            raise error_for_transport(exc, what=what) from None
        if response.is_success:
            if self.on_success is not None:
                self.on_success()
            return request, response, t0
        try:
            body = await _read_capped(response, ERROR_BODY_LIMIT)
        except (httpx.TransportError, ProtocolError):
            body = b""
        finally:
            await response.aclose()
        self._counts["errors"] += 1
        self._log(request, response.status_code, len(body), t0)
        raise error_for_status(response.status_code, body, response.headers, what=what)

    async def _read_json(self, request: httpx.Request, response: httpx.Response,
                         t0: float) -> object:
        what = f"{request.method} {request.url.path}"
        try:
            body = await _read_capped(response, JSON_LIMIT)
        except httpx.TransportError as exc:
            self._counts["errors"] += 1
            raise error_for_transport(exc, what=what) from None
        except ProtocolError:
            self._counts["errors"] += 1
            raise
        finally:
            await response.aclose()
        self._log(request, response.status_code, len(body), t0)
        try:
            return parse_json(body)
        except ProtocolError:
            self._counts["errors"] += 1
            raise

    async def _json(self, op: str, method: str, url: str, *,
                    params: Mapping[str, str] | None = None) -> object:
        """An idempotent JSON request, retried by the policy."""
        async def attempt() -> object:
            request, response, t0 = await self._send(op, method, url, params=params)
            return await self._read_json(request, response, t0)
        return await self._read_retry.run(attempt, f"{method} {httpx.URL(url).path}",
                                          idempotent=True, on_retry=self._count_retry)

    # -- operations --------------------------------------------------------------

    async def check(self) -> None:
        """One cheap request (a list of one) that proves the key and the URL."""
        page_from_json(await self._json("list", "GET", self._url(), params={"limit": "1"}))

    async def probe(self) -> None:
        """`check` in one attempt, no retries: is the API answering now?"""
        request, response, t0 = await self._send("list", "GET", self._url(),
                                                 params={"limit": "1"})
        page_from_json(await self._read_json(request, response, t0))

    async def list_pages(self, limit: int = 1000) -> AsyncIterator[list[RemoteFile]]:
        """Every page of the listing, following cursor / after / after_id, one request
        at a time (`list_all` asks for the next page while one is being used)."""
        async with contextlib.aclosing(self._page_records(limit)) as pages:
            async for records in pages:
                yield files_from_json(records)

    async def list_all(self, add: Callable[[list[RemoteFile]], object],
                       limit: int = 1000) -> None:
        """Every page of the listing, in order, handed to `add`, pipelined: the request
        for the next page goes out before this one is converted and added, so the
        server works on it meanwhile (on a workspace of 10,000 files, converting the
        records is about a quarter of a listing's time in the client). Raises the
        client's errors as `list_pages` does, never an exception group."""
        send, receive = trio.open_memory_channel[list[object]](1)
        failure: list[Exception] = []

        async def fetch() -> None:
            with send:
                try:
                    async with contextlib.aclosing(self._page_records(limit)) as pages:
                        async for records in pages:
                            try:
                                # No checkpoint: this task goes on to ask for the next
                                # page before the consumer converts this one.
                                send.send_nowait(records)
                            except trio.WouldBlock:
                                await send.send(records)
                except Exception as exc:  # raised below, after the nursery
                    failure.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            with receive:
                async for records in receive:
                    try:
                        add(files_from_json(records))
                    except Exception as exc:
                        failure.append(exc)
                        nursery.cancel_scope.cancel()
                        break
        if failure:
            raise failure[0]

    async def _page_records(self, limit: int) -> AsyncGenerator[list[object], None]:
        """The raw records of every page (see `list_pages`)."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        params = {"limit": str(limit)}
        seen: set[tuple[str, str]] = set()
        while True:
            records, after = page_records(
                await self._json("list", "GET", self._url(), params=params))
            yield records
            if after is None:
                return
            if after in seen:  # a server bug would otherwise loop forever
                raise ProtocolError(f"list pagination repeats {after[0]}={after[1]!r}")
            seen.add(after)
            params = {"limit": str(limit), after[0]: after[1]}

    async def list_files(self, limit: int = 1000) -> AsyncIterator[RemoteFile]:
        async for page in self.list_pages(limit):
            for f in page:
                yield f

    async def retrieve(self, file_id: str) -> RemoteFile:
        return file_from_json(await self._json("retrieve", "GET", self._url(file_id)))

    async def delete(self, file_id: str) -> None:
        """Delete a file. NotFound propagates (also when a retried delete had been applied);
        the caller decides whether that counts as done."""
        check_deleted(await self._json("delete", "DELETE", self._url(file_id)))

    async def upload(self, filename: str, body: UploadBody) -> RemoteFile:
        """Upload `body` as a new file named `filename` (retried only where it cannot have
        been applied: see retry.py). `UploadSizeMismatch` if the body yields a number of
        bytes other than its declared size."""
        size = body.size
        if size is None and not self.chunked_upload:
            size = await measure(body)
        url = self._url()

        async def attempt() -> RemoteFile:
            stream = MultipartUpload(filename, body, size=size)
            headers = {"Content-Type": stream.content_type}
            if stream.content_length is not None:
                # Set explicitly, so httpx sends Content-Length instead of chunked.
                headers["Content-Length"] = str(stream.content_length)
            request, response, t0 = await self._send("upload", "POST", url, headers=headers,
                                                     content=stream)
            return file_from_json(await self._read_json(request, response, t0))
        return await self._retry.run(attempt, "POST /files", idempotent=False,
                                     on_retry=self._count_retry)

    async def upload_path(self, filename: str, path: os.PathLike[str] | str) -> RemoteFile:
        """Upload a file from disk, streamed, with its size (taken now) as Content-Length."""
        return await self.upload(filename, UploadBody.from_path(path))

    @contextlib.asynccontextmanager
    async def download(self, file_id: str, offset: int = 0, length: int | None = None
                       ) -> AsyncIterator[Download]:
        """``async with client.download(fid, offset) as d: async for chunk in d.iter_bytes()``.

        ``length``: at most that many bytes from ``offset`` (``Range: bytes=a-b``);
        None: to the end of the file. Opening is retried like any read; the body is
        streamed (see `Download`)."""
        if offset < 0:
            raise ValueError("offset must be >= 0")
        if length is not None and length <= 0:
            raise ValueError("length must be > 0")
        d = Download(self, file_id, offset, length)
        await self._read_retry.run(lambda: d._open(offset), f"GET {httpx.URL(d.url).path}",
                                   idempotent=True, on_retry=self._count_retry)
        try:
            yield d
        finally:
            await d._close()


class Download:
    """An open download of one file from `offset` (``length`` bytes, or to its end).

    ``size`` is the number of bytes `iter_bytes` yields (the answer's Content-Length,
    at most ``length``), or None if the server did not say; ``ranged`` is True if the
    server answered the range with 206, False if it sent the whole file instead (the
    bytes before `offset` are then dropped here, and the body is cut at ``length``),
    None if no range was asked;
    ``total_size`` is the whole file's size when the server said (Content-Range, or
    Content-Length when reading from 0). A connection that drops mid-body is resumed
    with ``Range: bytes=<next>-`` under the retry policy (the budget starts afresh
    after each chunk received); a body that ends cleanly but short of ``size``
    raises `ProtocolError` from `iter_bytes`.
    """

    def __init__(self, client: FilesClient, file_id: str, offset: int,
                 length: int | None = None) -> None:
        self._client = client
        self.file_id = file_id
        self.offset = offset
        self.length = length
        self.ranged: bool | None = None
        self.url = client._url(file_id, "content")
        self.size: int | None = None
        self.total_size: int | None = None
        self.content_type: str | None = None
        self._request: httpx.Request | None = None
        self._response: httpx.Response | None = None
        self._t0 = 0.0
        self._received = 0  # bytes yielded, counted from `offset`
        self._skip = 0      # bytes to drop: the server answered 200 to a range request
        self._skip_past: int | None = None  # ... and where to cut it (bounded range)
        self._opened = False

    async def _open(self, at: int) -> None:
        """One attempt to (re)open the body at absolute position `at`."""
        headers = {"Accept": "application/octet-stream",
                   # Identity, so lengths and ranges count the file's own bytes.
                   "Accept-Encoding": "identity"}
        if self.length is not None:
            headers["Range"] = f"bytes={at}-{self.offset + self.length - 1}"
        elif at > 0:
            headers["Range"] = f"bytes={at}-"
        request, response, t0 = await self._client._send("download", "GET", self.url,
                                                         headers=headers)
        try:
            length = self._content_length(response)
            skip = 0
            total: int | None = None
            if response.status_code == 206:
                m = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
                if m is None or int(m.group(1)) != at:
                    raise ProtocolError(f"download of {self.file_id}: bad Content-Range "
                                        f"{response.headers.get('content-range')!r} "
                                        f"for a request from byte {at}")
                total = None if m.group(3) == "*" else int(m.group(3))
                remaining = length
                ranged: bool | None = True
            else:
                # A full body: drop what precedes `at` (the server ignored Range).
                skip = at
                total = length
                remaining = None if length is None else length - at
                if remaining is not None and remaining < 0:
                    raise ProtocolError(f"download of {self.file_id}: file is {length} bytes, "
                                        f"shorter than offset {at}")
                ranged = None if "Range" not in headers else False
                if self.length is not None:
                    # Cut at the end asked for.
                    end = self.offset + self.length
                    remaining = end - at if remaining is None else min(remaining, end - at)
        except BaseException:
            await response.aclose()
            raise
        if not self._opened:
            self.ranged = ranged
            self.size = remaining
            self.total_size = total if total is not None else (
                None if remaining is None else self.offset + remaining)
            self.content_type = response.headers.get("content-type")
            self._opened = True
        self._request, self._response, self._t0, self._skip = request, response, t0, skip
        self._skip_past = (self.length if response.status_code != 206
                           and self.length is not None else None)

    @staticmethod
    def _content_length(response: httpx.Response) -> int | None:
        raw = response.headers.get("content-length")
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise ProtocolError(f"bad Content-Length {raw!r}") from None
        if value < 0:
            raise ProtocolError(f"bad Content-Length {raw!r}")
        return value

    async def _close(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            await response.aclose()
            if self._request is not None:
                self._client._log(self._request, response.status_code, self._received,
                                  self._t0)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body from `offset`, chunk by chunk as it arrives."""
        client = self._client
        state: RetryState | None = None
        what = f"GET {httpx.URL(self.url).path}"
        while True:
            response = self._response
            if response is None:
                raise RuntimeError("download is closed")
            failure: ApiError | None = None
            try:
                async for raw in response.aiter_raw():
                    chunk = raw
                    if self._skip:
                        drop = min(self._skip, len(chunk))
                        self._skip -= drop
                        chunk = chunk[drop:]
                    if self._skip_past is not None:
                        # A whole body for a bounded range: stop at its end.
                        room = self._skip_past - self._received
                        chunk = chunk[:room]
                    if not chunk:
                        if self._skip_past is not None and self._received >= self._skip_past:
                            break
                        continue
                    self._received += len(chunk)
                    if self.size is not None and self._received > self.size:
                        raise ProtocolError(f"download of {self.file_id}: more bytes than "
                                            f"the announced {self.size}")
                    state = None  # progress: a later failure gets a fresh budget
                    yield chunk
                    if self._skip_past is not None and self._received >= self._skip_past:
                        break
            except httpx.TransportError as exc:
                client._counts["errors"] += 1
                failure = error_for_transport(exc, what=what)
            if failure is None:
                break
            # Outside the except block, so nothing chains to the httpx exception.
            await self._close()
            if state is None:
                state = client._read_retry.start(what, idempotent=True,
                                                 on_retry=client._count_retry)
            while True:
                await state.backoff_or_raise(failure)
                try:
                    await self._open(self.offset + self._received)
                    break
                except ApiError as exc2:
                    failure = exc2
        if self.size is not None and self._received < self.size:
            raise ProtocolError(f"download of {self.file_id} truncated: {self._received} of "
                                f"{self.size} bytes")
