"""Downloads: streamed, ranged, resumed after a dropped connection, truncation caught."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from orfs.api import HttpStatusError, NotFound, ProtocolError, Unreachable
from orfs.api.client import FilesClient

from .helpers import FakeClock, error_response, make_client

DATA = bytes(range(256)) * 400  # 102,400 bytes


def ranged(data: bytes, request: httpx.Request, *, chunk: int = 4096,
           fail_after: int | None = None, honour_range: bool = True) -> httpx.Response:
    """A server of `data` that honours ``Range: bytes=N-`` and can drop the connection."""
    start = 0
    headers = {"content-type": "application/octet-stream"}
    status = 200
    rng = request.headers.get("range")
    last = len(data) - 1
    if rng and honour_range:
        first, _, end = rng.removeprefix("bytes=").partition("-")
        start = int(first)
        last = min(last, int(end)) if end else last
        status = 206
        headers["content-range"] = f"bytes {start}-{last}/{len(data)}"
    body = data[start:last + 1]
    headers["content-length"] = str(len(body))

    async def gen() -> AsyncIterator[bytes]:
        sent = 0
        for i in range(0, len(body), chunk):
            if fail_after is not None and sent >= fail_after:
                raise httpx.ReadError("connection reset", request=request)
            sent += len(body[i:i + chunk])
            yield body[i:i + chunk]

    return httpx.Response(status, headers=headers, content=gen())


async def read_all(c: FilesClient, fid: str, offset: int = 0) -> tuple[bytes, int | None]:
    async with c.download(fid, offset) as d:
        data = b"".join([chunk async for chunk in d.iter_bytes()])
        return data, d.size


async def test_download_streams_with_accept_and_size() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ranged(DATA, request)

    async with make_client(handler, workspace="w") as c:
        async with c.download("or_file_1") as d:
            assert d.size == len(DATA) and d.total_size == len(DATA)
            chunks = [chunk async for chunk in d.iter_bytes()]
        assert c.stats()["download"] == 1
    assert b"".join(chunks) == DATA and len(chunks) == 25
    r = seen[0]
    assert r.url.path == "/api/v1/files/or_file_1/content"
    assert r.headers["accept"] == "application/octet-stream" and "range" not in r.headers
    assert r.url.params["workspace_id"] == "w"


async def test_range_download_from_offset() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ranged(DATA, request)

    async with make_client(handler) as c:
        async with c.download("f", offset=1000) as d:
            assert d.size == len(DATA) - 1000 and d.total_size == len(DATA)
            data = b"".join([chunk async for chunk in d.iter_bytes()])
    assert data == DATA[1000:] and seen[0].headers["range"] == "bytes=1000-"


async def test_server_ignoring_range_is_handled_by_skipping() -> None:
    async with make_client(lambda r: ranged(DATA, r, honour_range=False)) as c:
        data, size = await read_all(c, "f", 5000)
    assert data == DATA[5000:] and size == len(DATA) - 5000


async def test_a_bounded_range_asks_for_its_end_and_says_it_was_ranged() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ranged(DATA, request)

    async with make_client(handler) as c:
        async with c.download("f", offset=8192, length=10000) as d:
            assert d.size == 10000 and d.total_size == len(DATA) and d.ranged is True
            data = b"".join([chunk async for chunk in d.iter_bytes()])
    assert data == DATA[8192:18192] and seen[0].headers["range"] == "bytes=8192-18191"


async def test_a_bounded_range_from_a_server_ignoring_ranges_is_cut_to_its_end() -> None:
    async with make_client(lambda r: ranged(DATA, r, honour_range=False)) as c:
        async with c.download("f", offset=5000, length=3000) as d:
            assert d.ranged is False and d.size == 3000
            data = b"".join([chunk async for chunk in d.iter_bytes()])
    assert data == DATA[5000:8000]


async def test_a_bounded_range_resumed_after_a_drop_keeps_its_end() -> None:
    clock = FakeClock()
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        return ranged(DATA, request, fail_after=8192 if len(seen) == 1 else None)

    async with make_client(handler, clock=clock) as c:
        async with c.download("f", offset=4096, length=40000) as d:
            data = b"".join([chunk async for chunk in d.iter_bytes()])
    assert data == DATA[4096:44096]
    assert seen == ["bytes=4096-44095", "bytes=12288-44095"]


async def test_dropped_connection_is_resumed_with_range() -> None:
    clock = FakeClock()
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        # Every answer drops after 3 chunks (12 KiB): the download needs many resumes.
        return ranged(DATA, request, fail_after=3 * 4096)

    async with make_client(handler, clock) as c:
        data, _ = await read_all(c, "f")
        stats = c.stats()
    assert data == DATA
    assert seen[:3] == [None, "bytes=12288-", "bytes=24576-"]
    # Progress resets the budget: every resume is a first retry.
    assert clock.sleeps == [0.5] * (len(seen) - 1)
    assert stats["retries"] == len(seen) - 1 and stats["download"] == len(seen)


async def test_resume_gives_up_when_no_progress() -> None:
    clock = FakeClock()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return ranged(DATA, request, fail_after=4096)
        raise httpx.ConnectError("refused", request=request)

    async with make_client(handler, clock) as c:
        with pytest.raises(Unreachable):
            await read_all(c, "f")
    assert sum(clock.sleeps) <= 20


async def test_truncated_body_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"x" * 10
        return httpx.Response(200, headers={"content-length": "100"}, content=gen())

    async with make_client(handler) as c:
        async with c.download("f") as d:
            got = []
            with pytest.raises(ProtocolError, match="truncated"):
                async for chunk in d.iter_bytes():
                    got.append(chunk)
    assert got == [b"x" * 10]


async def test_overlong_body_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"x" * 200
        return httpx.Response(200, headers={"content-length": "100"}, content=gen())

    async with make_client(handler) as c:
        with pytest.raises(ProtocolError):
            await read_all(c, "f")


async def test_unknown_length_download() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"def"
        return httpx.Response(200, content=gen())

    async with make_client(handler) as c:
        assert await read_all(c, "f") == (b"abcdef", None)


async def test_bad_content_range_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"content-range": "bytes 0-9/10"}, content=b"0" * 10)

    async with make_client(handler) as c:
        with pytest.raises(ProtocolError):
            await read_all(c, "f", 5)


async def test_download_errors_are_classified_and_retried() -> None:
    clock = FakeClock()
    answers = [error_response(503, "busy"), error_response(400, "not downloadable")]
    async with make_client(lambda r: answers.pop(0), clock) as c:
        with pytest.raises(HttpStatusError, match="not downloadable") as info:
            await read_all(c, "f")
    assert info.value.status == 400 and clock.sleeps == [0.5]
    async with make_client(lambda r: error_response(404, "gone")) as c:
        with pytest.raises(NotFound):
            await read_all(c, "f")
