"""The ASGI app: routes, auth, errors and the three response shapes.

Every route lives under ``/api/v1``. The five operations of the Files API are
wrapped by ``_operation``, which checks the key, counts the request, then
applies fault injection; the ``/_emulator/*`` hooks check the key only.
See docs/EMULATOR.md for the behaviour this implements and its extensions.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hmac
import json
import logging
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from orfs.contenttypes import (
    TextCheck,
    UnsupportedType,
    sniff_file,
    sniff_known,
    sniff_known_bytes,
)
from orfs.emulator.faults import FaultInjector, Pacer
from orfs.emulator.seed import seed_demo
from orfs.emulator.store import DEFAULT_QUOTA, FileRecord, NewFile, QuotaExceeded, Scope, Store

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger(__name__)
_T = TypeVar("_T")

API_PREFIX = "/api/v1"
HOOK_PREFIX = API_PREFIX + "/_emulator"
MAX_UPLOAD = 104_857_600  # 100 MiB, the service's limit
# Room for the multipart framing around the file part when judging a
# Content-Length before reading: a body larger than the limit plus this cannot
# carry a file within the limit.
MULTIPART_SLACK = 64 * 1024
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
DOWNLOAD_CHUNK = 1024 * 1024
# Parts this small are sniffed on the event loop (well under a millisecond):
# a thread hop would cost more than the work.
INLINE_SNIFF_LIMIT = 64 * 1024
# The bulk-create hook holds its JSON body in memory: this caps it.
BULK_BODY_LIMIT = 64 * 1024 * 1024
FILL_BLOCK = 1024 * 1024
PROVIDERS = ("openai", "anthropic")
OPERATIONS = ("list", "retrieve", "upload", "delete", "download")


@dataclasses.dataclass
class EmulatorConfig:
    """Everything that shapes one emulator instance.

    ``rng`` is the random source of fault injection: pass ``random.Random(seed)``
    for reproducible faults.
    """

    data_dir: Path
    api_key: str
    quota: int = DEFAULT_QUOTA
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    bandwidth: int | None = None  # bytes per second per transfer; None: unlimited
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    seed_demo: bool = False
    ranges: bool = True  # False: ``Range`` is ignored (200, whole body, no Accept-Ranges)


class Stats:
    """Since start (or the last reset): requests per operation, the body bytes of
    file content sent, and the downloads answered with a range (206)."""

    def __init__(self) -> None:
        self.reset()

    def count(self, op: str) -> None:
        self.counts[op] += 1

    def reset(self) -> None:
        self.counts = dict.fromkeys(OPERATIONS, 0)
        self.bytes_sent = 0
        self.ranged_requests = 0

    def as_json(self) -> dict[str, Any]:
        return {"requests": dict(self.counts), "bytes_sent": self.bytes_sent,
                "ranged_requests": self.ranged_requests}


@dataclasses.dataclass
class EmulatorState:
    config: EmulatorConfig
    store: Store
    faults: FaultInjector
    stats: Stats
    # /_emulator/refuse-uploads: (scope, filename) -> answers still to give, in order.
    refusals: dict[tuple[Scope, str], list[tuple[int, str]]] = dataclasses.field(
        default_factory=dict)


class ApiError(Exception):
    """An error answer: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": status, "message": message, "metadata": {}}, "user_id": None}
    return JSONResponse(body, status_code=status, headers=headers)


# -- shapes ---------------------------------------------------------------------


def file_json(rec: FileRecord, shape: str) -> dict[str, Any]:
    if shape == "openai":
        return {"_shape": "openai", "id": rec.id, "object": "file", "bytes": rec.size,
                "created_at": rec.created_unix, "filename": rec.filename,
                "purpose": "user_data", "status": "processed"}
    return {"_shape": shape, "id": rec.id, "type": "file", "filename": rec.filename,
            "mime_type": rec.mime_type, "size_bytes": rec.size,
            "created_at": rec.created_at_iso, "downloadable": rec.downloadable}


def deleted_json(file_id: str, shape: str) -> dict[str, Any]:
    if shape == "openai":
        return {"_shape": "openai", "id": file_id, "object": "file", "deleted": True}
    return {"_shape": shape, "id": file_id, "type": "file_deleted"}


def page_json(records: list[FileRecord], has_more: bool, shape: str) -> dict[str, Any]:
    page: dict[str, Any] = {
        "_shape": shape,
        "data": [file_json(r, shape) for r in records],
        "first_id": records[0].id if records else None,
        "has_more": has_more,
        "last_id": records[-1].id if records else None,
    }
    if shape == "openrouter":
        page["cursor"] = encode_cursor(records[-1].seq) if has_more and records else None
    elif shape == "openai":
        page["object"] = "list"
    return page


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"orfs-emu:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, seq = raw.partition(":")
        if prefix != "orfs-emu":
            raise ValueError(cursor)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid cursor") from None


# -- request helpers --------------------------------------------------------------


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _check_auth(request: Request, api_key: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()):
        raise ApiError(401, "missing or invalid API key" if header else "missing API key")


def _scope_and_shape(request: Request) -> tuple[Scope, str]:
    """The storage scope and response shape from ``workspace_id`` and ``provider``."""
    workspace = request.query_params.get("workspace_id") or ""
    if workspace:
        try:
            workspace = str(uuid.UUID(workspace))
        except ValueError:
            raise ApiError(400, "workspace_id must be a UUID") from None
    provider = request.query_params.get("provider") or ""
    if provider and provider not in PROVIDERS:
        raise ApiError(400, "provider must be one of: openai, anthropic")
    return Scope(workspace, provider), provider or "openrouter"


Handler = Callable[[Request, EmulatorState], Awaitable[Response]]


def _operation(op: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Auth, then count, then fault injection, then the handler."""

    async def endpoint(request: Request) -> Response:
        state = _state(request)
        _check_auth(request, state.config.api_key)
        state.stats.count(op)
        fault = state.faults.draw()
        if fault is not None:
            log.debug("%s: injected %d", op, fault.status)
            return error_response(fault.status, fault.message, fault.headers)
        return await handler(request, state)

    return endpoint


def _hook(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        _check_auth(request, state.config.api_key)
        return await handler(request, state)

    return endpoint


# -- multipart upload -------------------------------------------------------------


@dataclasses.dataclass
class ReceivedPart:
    path: Path
    filename: str | None
    content_type: str
    size: int
    utf8_text: bool  # the verdict of the TextCheck fed while receiving


def parse_content_disposition(value: str) -> dict[str, str]:
    """Parameters of a Content-Disposition value, quoted strings unescaped.

    Written out rather than borrowed so the filename is kept exactly as sent
    (python-multipart's helper strips Windows-looking paths). ``%22``, which
    browsers and httpx send for ``"``, is kept as is, like most servers do.
    """
    params: dict[str, str] = {}
    i = value.find(";")
    if i < 0:
        return params
    n = len(value)
    while i < n:
        i += 1  # past ';'
        while i < n and value[i] in " \t":
            i += 1
        eq = value.find("=", i)
        semi = value.find(";", i)
        if eq < 0 or (0 <= semi < eq):
            i = semi if semi >= 0 else n
            continue
        key = value[i:eq].strip().lower()
        i = eq + 1
        if i < n and value[i] == '"':
            i += 1
            chars = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            val = "".join(chars)
            i += 1  # past the closing quote
            semi = value.find(";", i)
            i = semi if semi >= 0 else n
        else:
            semi = value.find(";", i)
            end = semi if semi >= 0 else n
            val = value[i:end].strip()
            i = end
        params.setdefault(key, val)
    return params


def _decode_header(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _MultipartSink:
    """Callbacks of the streaming parser: the part named ``file`` goes to disk."""

    def __init__(self, path: Path, limit: int | None) -> None:
        self.path = path
        self.limit = limit
        self.file: BinaryIO | None = None
        self.found = False
        self.duplicate = False
        self.filename: str | None = None
        self.content_type = ""
        self.size = 0
        self.too_large = False
        self.finished = False
        # UTF-8 validated as the bytes arrive (the event loop waits on the
        # client anyway), so the sniffer need not read the file again.
        self.text_check = TextCheck()
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._in_file = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).decode("latin-1").strip().lower()] = _decode_header(
            bytes(self._value)).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        params = parse_content_disposition(self._headers.get("content-disposition", ""))
        if params.get("name") != "file":
            return
        if self.found:
            self.duplicate = True
            return
        self.found = True
        self._in_file = True
        self.filename = params.get("filename")
        self.content_type = self._headers.get("content-type", "")
        self.file = self.path.open("xb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file or self.too_large or self.file is None:
            return
        self.size += end - start
        if self.limit is not None and self.size > self.limit:
            self.too_large = True
            return
        # Usually the whole chunk, and slicing all of a bytes object copies nothing.
        part = data[start:end]
        self.text_check.feed(part)
        self.file.write(part)

    def _part_end(self) -> None:
        if self._in_file and self.file is not None:
            self.file.close()
        self._in_file = False

    def _end(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()


async def receive_file_part(request: Request, store: Store, *, max_size: int | None,
                            quota_left: int, pacer: Pacer) -> ReceivedPart:
    """Stream the part named ``file`` of a multipart body into a temp file.

    Stops reading as soon as the part passes ``max_size`` (413) or the room
    left in the quota (403). The caller owns the returned temp file.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, "expected a multipart/form-data body with a part named 'file'")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if max_size is not None and int(length) > max_size + MULTIPART_SLACK:
            raise ApiError(413, f"file too large: the limit is {max_size} bytes")
        if int(length) > quota_left + MULTIPART_SLACK:
            raise ApiError(403, "workspace storage quota exceeded")
    limit = quota_left if max_size is None else min(max_size, quota_left)
    path = store.temp_path()
    sink = _MultipartSink(path, limit)
    parser = MultipartParser(params[b"boundary"], sink.callbacks())
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if sink.too_large:
                    break
                if sink.duplicate:
                    raise ApiError(400, "more than one part named 'file'")
                await pacer.consumed(len(chunk))
            parser.finalize()
        except MultipartParseError as e:
            raise ApiError(400, f"malformed multipart body: {e}") from None
        if sink.too_large:
            if max_size is not None and sink.size > max_size:
                raise ApiError(413, f"file too large: the limit is {max_size} bytes")
            raise ApiError(403, "workspace storage quota exceeded")
        if not sink.found:
            raise ApiError(400, "missing multipart part named 'file'")
        if not sink.finished:
            raise ApiError(400, "malformed multipart body: no closing boundary")
        if not sink.filename:
            raise ApiError(400, "the 'file' part has no filename")
        sink.close()
        return ReceivedPart(path, sink.filename, sink.content_type, sink.size,
                            sink.text_check.finish())
    except BaseException:
        sink.close()
        path.unlink(missing_ok=True)
        raise


# -- the five operations --------------------------------------------------------------


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}")
    return value


async def list_files(request: Request, state: EmulatorState) -> Response:
    scope, shape = _scope_and_shape(request)
    q = request.query_params
    limit = _int_param(request, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
    order = q.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be asc or desc")
    if order == "desc" and not scope.provider:
        raise ApiError(400, "order=desc is not supported by OpenRouter storage")
    if q.get("before_id"):
        raise ApiError(400, "before_id is not supported by OpenRouter storage")
    after_seq: int | None = None
    # The SDKs send the cursor together with the original after/after_id, so the
    # cursor wins.
    if q.get("cursor"):
        after_seq = decode_cursor(q["cursor"])
    else:
        for name in ("after_id", "after"):
            if q.get(name):
                after_seq = state.store.seq_of(scope, q[name])
                if after_seq is None:
                    raise ApiError(400, f"{name}: no such file: {q[name]}")
                break
    records, has_more = state.store.page(scope, after_seq=after_seq, limit=limit,
                                         descending=order == "desc")
    log.debug("list %s: %d files, has_more=%s", scope, len(records), has_more)
    return JSONResponse(page_json(records, has_more, shape))


async def upload_file(request: Request, state: EmulatorState) -> Response:
    scope, shape = _scope_and_shape(request)
    store = state.store
    part = await receive_file_part(request, store, max_size=MAX_UPLOAD,
                                   quota_left=store.remaining(scope),
                                   pacer=Pacer(state.config.bandwidth))
    try:
        assert part.filename is not None
        refusal = _refusal(state, scope, part.filename)
        if refusal is not None:
            raise ApiError(*refusal)
        if part.size == 0:
            raise ApiError(400, "empty files are not accepted")
        try:
            mime = await _sniff(functools.partial(sniff_file, utf8_text=part.utf8_text),
                                part.path, part.size)
        except UnsupportedType as e:
            raise ApiError(400, str(e)) from None
        assert part.filename is not None
        try:
            rec = store.add(scope, part.path, filename=part.filename, mime_type=mime,
                            size=part.size, downloadable=False)
        except QuotaExceeded as e:
            raise ApiError(403, str(e)) from None
    finally:
        part.path.unlink(missing_ok=True)
    log.debug("upload %s: %s (%d bytes, %s)", scope, rec.id, rec.size, rec.mime_type)
    return JSONResponse(file_json(rec, shape))


def _get_or_404(state: EmulatorState, scope: Scope, file_id: str) -> FileRecord:
    rec = state.store.get(scope, file_id)
    if rec is None:
        raise ApiError(404, f"file not found: {file_id}")
    return rec


async def retrieve_file(request: Request, state: EmulatorState) -> Response:
    scope, shape = _scope_and_shape(request)
    rec = _get_or_404(state, scope, request.path_params["file_id"])
    return JSONResponse(file_json(rec, shape))


async def delete_file(request: Request, state: EmulatorState) -> Response:
    scope, shape = _scope_and_shape(request)
    file_id = request.path_params["file_id"]
    if state.store.delete(scope, file_id) is None:
        raise ApiError(404, f"file not found: {file_id}")
    log.debug("delete %s: %s", scope, file_id)
    return JSONResponse(deleted_json(file_id, shape))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions of a single ``bytes=`` range; None for all.

    Multiple ranges and other units are ignored (the whole file is sent), as
    RFC 9110 allows; an unsatisfiable range is 416.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_s == "":
            suffix = int(last_s)
            if suffix <= 0 or size == 0:
                raise ValueError
            return max(0, size - suffix), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        raise ApiError(416, "range not satisfiable",
                       {"Content-Range": f"bytes */{size}"}) from None
    if first < 0 or first >= size or last < first:
        raise ApiError(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
    return first, min(last, size - 1)


async def download_file(request: Request, state: EmulatorState) -> Response:
    scope, _ = _scope_and_shape(request)
    rec = _get_or_404(state, scope, request.path_params["file_id"])
    if not rec.downloadable:
        raise ApiError(400, "this file is not downloadable: only files created server-side"
                            " can be downloaded")
    try:
        # Opened now: a delete during the transfer cannot cut it short.
        f = state.store.blob_path(rec.id).open("rb")
    except FileNotFoundError:
        raise ApiError(404, f"file not found: {rec.id}") from None
    size = os.fstat(f.fileno()).st_size
    byte_range = None
    if state.config.ranges:
        try:
            byte_range = parse_range(request.headers.get("range"), size)
        except ApiError:
            f.close()
            raise
    first, last = byte_range if byte_range is not None else (0, size - 1)
    headers = {"Content-Length": str(last - first + 1)}
    if state.config.ranges:
        headers["Accept-Ranges"] = "bytes"
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        state.stats.ranged_requests += 1
    pacer = Pacer(state.config.bandwidth)
    stats = state.stats

    async def body() -> AsyncIterator[bytes]:
        try:
            f.seek(first)
            left = last - first + 1
            while left > 0:
                data = f.read(min(pacer.chunk_size(DOWNLOAD_CHUNK), left))
                if not data:
                    break
                left -= len(data)
                yield data
                # Counted once handed to the connection: a client that goes away
                # midway counts only what was sent before.
                stats.bytes_sent += len(data)
                await pacer.consumed(len(data))
        finally:
            f.close()

    log.debug("download %s: %s bytes %d-%d", scope, rec.id, first, last)
    return StreamingResponse(body(), status_code=status, headers=headers,
                             media_type="application/octet-stream")


# -- hooks -------------------------------------------------------------------------


async def create_output(request: Request, state: EmulatorState) -> Response:
    """A server-side output (``downloadable: true``): any content, any size."""
    scope, shape = _scope_and_shape(request)
    store = state.store
    part = await receive_file_part(request, store, max_size=None,
                                   quota_left=store.remaining(scope), pacer=Pacer(None))
    try:
        sniff = functools.partial(sniff_known, utf8_text=part.utf8_text)
        mime = await _sniff(sniff, part.path, part.size) if part.size else None
        mime = mime or _declared_type(part.content_type)
        assert part.filename is not None
        try:
            rec = store.add(scope, part.path, filename=part.filename, mime_type=mime,
                            size=part.size, downloadable=True)
        except QuotaExceeded as e:
            raise ApiError(403, str(e)) from None
    finally:
        part.path.unlink(missing_ok=True)
    return JSONResponse(file_json(rec, shape))


async def create_outputs_bulk(request: Request, state: EmulatorState) -> Response:
    """Many server-side outputs in one request and one transaction (tests, benchmarks).

    Body: ``{"files": [{"filename": str, "content_b64": str}
    | {"filename": str, "size": int, "fill": str}, ...]}`` (``fill`` defaults to
    ``"x"``, repeated to ``size`` bytes; each entry may add ``content_type``, the
    type used when sniffing knows none). All are created, in order, or none.
    """
    scope, shape = _scope_and_shape(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > BULK_BODY_LIMIT:
        raise ApiError(413, f"bulk body too large: the limit is {BULK_BODY_LIMIT} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BULK_BODY_LIMIT:
            raise ApiError(413, f"bulk body too large: the limit is {BULK_BODY_LIMIT} bytes")
    try:
        records = await anyio.to_thread.run_sync(_create_bulk, state.store, scope, body)
    except QuotaExceeded as e:
        raise ApiError(403, str(e)) from None
    log.debug("bulk outputs %s: %d files", scope, len(records))
    return JSONResponse({"data": [file_json(r, shape) for r in records]})


@dataclasses.dataclass(frozen=True, slots=True)
class _BulkEntry:
    filename: str
    content: bytes | None  # None: ``size`` bytes of ``fill``
    size: int
    fill: bytes
    content_type: str


_BULK_KEYS = frozenset({"filename", "content_b64", "size", "fill", "content_type"})


def _bulk_entries(body: bytes | bytearray) -> list[_BulkEntry]:
    """The validated entries of a bulk body; ApiError 400 naming the first bad one."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ApiError(400, "expected a JSON body {\"files\": [...]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise ApiError(400, "expected a JSON body {\"files\": [...]}")
    entries = []
    for i, item in enumerate(doc["files"]):
        where = f"files[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where}: expected an object")
        unknown = set(item) - _BULK_KEYS
        if unknown:
            raise ApiError(400, f"{where}: unknown keys {sorted(unknown)}")
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename:
            raise ApiError(400, f"{where}: filename must be a non-empty string")
        content_type = item.get("content_type", "")
        if not isinstance(content_type, str):
            raise ApiError(400, f"{where}: content_type must be a string")
        if ("content_b64" in item) == ("size" in item):
            raise ApiError(400, f"{where}: give either content_b64 or size (with fill)")
        if "content_b64" in item:
            if "fill" in item:
                raise ApiError(400, f"{where}: fill goes with size, not content_b64")
            try:
                content = base64.b64decode(item["content_b64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ApiError(400, f"{where}: content_b64 is not valid base64") from None
            entries.append(_BulkEntry(filename, content, len(content), b"", content_type))
            continue
        size, fill = item["size"], item.get("fill", "x")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ApiError(400, f"{where}: size must be a non-negative integer")
        if not isinstance(fill, str) or not fill:
            raise ApiError(400, f"{where}: fill must be a non-empty string")
        entries.append(_BulkEntry(filename, None, size, fill.encode(), content_type))
    return entries


def _write_fill(path: Path, fill: bytes, size: int) -> None:
    """``size`` bytes of ``fill`` repeated, in blocks (never the whole file in memory);
    a fill of NUL bytes is a sparse file (a workspace filled to its quota costs no disk)."""
    block = fill * max(1, FILL_BLOCK // len(fill))  # whole repetitions: blocks join up
    with path.open("xb") as f:
        if not fill.strip(b"\0"):
            f.truncate(size)
            return
        left = size
        while left > 0:
            left -= f.write(block[:left])


def _create_bulk(store: Store, scope: Scope, body: bytes | bytearray) -> list[FileRecord]:
    """Parse, write, sniff and store a bulk request (in a worker thread)."""
    entries = _bulk_entries(body)
    needed = sum(e.size for e in entries)
    if needed > store.remaining(scope):  # before writing anything
        raise QuotaExceeded(f"workspace storage quota exceeded: the files need {needed} bytes,"
                            f" {store.remaining(scope)} left")
    temps: list[Path] = []
    try:
        new = []
        for e in entries:
            temps.append(temp := store.temp_path())
            if e.content is not None:
                with temp.open("xb") as f:
                    f.write(e.content)
                mime = sniff_known_bytes(e.content) if e.size else None
            else:
                _write_fill(temp, e.fill, e.size)
                mime = sniff_known(temp) if e.size else None
            new.append(NewFile(temp, e.filename, mime or _declared_type(e.content_type), e.size))
        return store.add_many(scope, new, downloadable=True)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def _declared_type(content_type: str) -> str:
    return content_type.split(";")[0].strip() or "application/octet-stream"


async def _sniff(fn: Callable[[Path], _T], path: Path, size: int) -> _T:
    """``fn(path)``, on the event loop for small files, else in a worker thread."""
    if size <= INLINE_SNIFF_LIMIT:
        return fn(path)
    return await anyio.to_thread.run_sync(fn, path)


async def get_stats(request: Request, state: EmulatorState) -> Response:
    return JSONResponse(state.stats.as_json())


def _refusal(state: EmulatorState, scope: Scope, filename: str) -> tuple[int, str] | None:
    """The next answer /_emulator/refuse-uploads asked for, for this upload (or None)."""
    queue = state.refusals.get((scope, filename))
    if not queue:
        return None
    answer = queue.pop(0)
    if not queue:
        del state.refusals[(scope, filename)]
    return answer


async def refuse_uploads(request: Request, state: EmulatorState) -> Response:
    """Answer the next ``times`` uploads of ``filename`` (in this workspace and provider)
    with ``status`` and ``message`` instead of storing them: a refusal no local rule
    can predict. JSON ``{"filename", "status" (400-599), "message"?, "times"? (1)}``."""
    scope, _ = _scope_and_shape(request)
    try:
        body = await request.json()
        filename = body["filename"]
        status = int(body["status"])
        message = str(body.get("message", f"refused by the emulator ({status})"))
        times = int(body.get("times", 1))
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "expected JSON {filename, status, message?, times?}") from None
    if not isinstance(filename, str) or not filename or not 400 <= status <= 599 or times < 1:
        raise ApiError(400, "filename must be a non-empty string, status 400-599, times >= 1")
    state.refusals.setdefault((scope, filename), []).extend([(status, message)] * times)
    return JSONResponse({"filename": filename, "pending": len(state.refusals[(scope,
                                                                               filename)])})


async def reset_stats(request: Request, state: EmulatorState) -> Response:
    state.stats.reset()
    return JSONResponse(state.stats.as_json())


# -- errors and middleware -----------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


class LatencyMiddleware:
    """Adds ``--latency-ms`` to every request except the hooks."""

    def __init__(self, app: ASGIApp, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not str(scope.get("path", "")).startswith(HOOK_PREFIX):
            await self.faults.delay()
        await self.app(scope, receive, send)


def create_app(config: EmulatorConfig) -> Starlette:
    """The emulator as an ASGI app; its state is ``app.state.emulator``.

    The store is opened here (not at lifespan start) so the app works under
    transports that skip lifespan events, such as ``httpx.ASGITransport``;
    call ``app.state.emulator.store.close()`` when done with it in that case.
    """
    store = Store(config.data_dir, config.quota)
    if config.seed_demo:
        seed_demo(store)
    faults = FaultInjector(latency_ms=config.latency_ms, fail_rate=config.fail_rate,
                           throttle_rate=config.throttle_rate, rng=config.rng)
    state = EmulatorState(config, store, faults, Stats())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    files = API_PREFIX + "/files"
    routes = [
        Route(files, _operation("list", list_files), methods=["GET"]),
        Route(files, _operation("upload", upload_file), methods=["POST"]),
        Route(files + "/{file_id}", _operation("retrieve", retrieve_file), methods=["GET"]),
        Route(files + "/{file_id}", _operation("delete", delete_file), methods=["DELETE"]),
        Route(files + "/{file_id}/content", _operation("download", download_file),
              methods=["GET"]),
        Route(HOOK_PREFIX + "/outputs", _hook(create_output), methods=["POST"]),
        Route(HOOK_PREFIX + "/outputs/bulk", _hook(create_outputs_bulk), methods=["POST"]),
        Route(HOOK_PREFIX + "/stats", _hook(get_stats), methods=["GET"]),
        Route(HOOK_PREFIX + "/reset-stats", _hook(reset_stats), methods=["POST"]),
        Route(HOOK_PREFIX + "/refuse-uploads", _hook(refuse_uploads), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                            Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.emulator = state
    app.add_middleware(LatencyMiddleware, faults=faults)
    return app
