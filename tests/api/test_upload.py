"""Upload bodies: the streamed multipart encoding, lengths, re-opening on retry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from orfs.api import FilesClient, UploadBody, UploadSizeMismatch
from orfs.api.upload import MultipartUpload, encode_filename

from .helpers import BASE, KEY, FakeClock, error_response, json_response, make_client, or_file


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bytes]:
    """The part headers and data, as python-multipart (the emulator's parser) sees them."""
    _, params = parse_options_header(content_type)
    headers: dict[str, str] = {}
    data: list[bytes] = []
    field: list[bytes] = []
    value: list[bytes] = []

    def on_header_field(b: bytes, s: int, e: int) -> None:
        field.append(b[s:e])

    def on_header_value(b: bytes, s: int, e: int) -> None:
        value.append(b[s:e])

    def on_header_end() -> None:
        headers[b"".join(field).decode().lower()] = b"".join(value).decode()
        field.clear()
        value.clear()

    def on_part_data(b: bytes, s: int, e: int) -> None:
        data.append(b[s:e])

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data})
    parser.write(body)
    parser.finalize()
    return headers, b"".join(data)


async def collect(stream: MultipartUpload) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_multipart_with_known_size_has_exact_length() -> None:
    mp = MultipartUpload("r/q3.csv", UploadBody.from_bytes(b"a,b\n1,2\n", chunk_size=3))
    body = await collect(mp)
    assert mp.content_length == len(body)
    headers, data = parse_multipart(mp.content_type, body)
    assert data == b"a,b\n1,2\n"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == 'form-data; name="file"; filename="r/q3.csv"'


@pytest.mark.parametrize("name", ['say "hi".txt', "back\\slash.txt", "naïve 日本/ü.md",
                                  "semi;colon=x.txt", "C:\\x.txt", "pct%22.txt"])
def test_filename_escaping_round_trips_through_the_emulator_parser(name: str) -> None:
    from orfs.emulator.app import parse_content_disposition
    header = f'form-data; name="file"; filename="{encode_filename(name)}"'
    assert parse_content_disposition(header)["filename"] == name


def test_control_characters_are_percent_encoded() -> None:
    assert encode_filename("a\nb\r\x00c") == "a%0Ab%0D%00c"


async def test_size_mismatch_is_refused() -> None:
    async def short() -> AsyncIterator[bytes]:
        yield b"abc"

    with pytest.raises(UploadSizeMismatch):
        await collect(MultipartUpload("x", UploadBody(short, 5)))
    with pytest.raises(UploadSizeMismatch):
        await collect(MultipartUpload("x", UploadBody(short, 2)))


async def test_upload_with_known_size_sends_content_length() -> None:
    seen: dict[str, object] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        seen["headers"] = request.headers
        seen["parsed"] = parse_multipart(request.headers["content-type"], body)
        seen["len"] = len(body)
        return json_response(200, or_file(size=5))

    async with make_client(handler) as c:
        f = await c.upload('dir/"x".txt', UploadBody.from_bytes(b"hello"))
    assert f.size == 5
    headers = seen["headers"]
    assert isinstance(headers, httpx.Headers)
    assert headers["content-length"] == str(seen["len"])
    assert "transfer-encoding" not in headers
    assert seen["parsed"] == ({"content-disposition":
                               'form-data; name="file"; filename="dir/\\"x\\".txt"',
                               "content-type": "application/octet-stream"}, b"hello")


async def test_upload_of_unknown_size_is_chunked() -> None:
    seen: list[httpx.Headers] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request.headers)
        return json_response(200, or_file())

    async def gen() -> AsyncIterator[bytes]:
        yield b"abc"

    async with make_client(handler) as c:
        await c.upload("a", UploadBody(gen))
    assert seen[0]["transfer-encoding"] == "chunked" and "content-length" not in seen[0]


async def test_unknown_size_without_chunked_uploads_is_measured_first() -> None:
    seen: list[httpx.Headers] = []
    opened = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request.headers)
        return json_response(200, or_file())

    async def gen() -> AsyncIterator[bytes]:
        nonlocal opened
        opened += 1
        yield b"abc"
        yield b"de"

    async with make_client(handler, chunked_upload=False) as c:
        await c.upload("a", UploadBody(gen))
    assert opened == 2  # once to count, once to send
    assert "transfer-encoding" not in seen[0] and int(seen[0]["content-length"]) > 5


async def test_retried_upload_sends_the_whole_body_again() -> None:
    bodies: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        bodies.append(parse_multipart(request.headers["content-type"], body)[1])
        if len(bodies) == 1:
            return error_response(503, "busy")
        return json_response(200, or_file())

    async with make_client(handler, FakeClock()) as c:
        await c.upload("a", UploadBody.from_bytes(b"x" * 1000, chunk_size=100))
    assert bodies == [b"x" * 1000] * 2


async def test_upload_body_is_pulled_lazily() -> None:
    """The producer never runs more than a chunk ahead of what was sent."""
    produced = 0
    lead: list[int] = []

    async def gen() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(100):
            produced += 1
            yield b"y" * 1024

    class StreamingTransport(httpx.AsyncBaseTransport):
        # MockTransport reads the whole request first; this one reads as a server does.
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            consumed = 0
            async for _chunk in request.stream:  # type: ignore[union-attr]
                consumed += 1
                lead.append(produced - consumed)
            return json_response(200, or_file())

    async with FilesClient(BASE, KEY, transport=StreamingTransport()) as c:
        await c.upload("a", UploadBody(gen, 100 * 1024))
    assert produced == 100 and max(lead) <= 1


async def test_upload_path_streams_from_disk(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789" * 1000)
    got: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        got.append(parse_multipart(request.headers["content-type"], body)[1])
        assert int(request.headers["content-length"]) == len(body)
        return json_response(200, or_file(size=10000))

    async with make_client(handler) as c:
        await c.upload_path("f.bin", p)
    assert got == [p.read_bytes()]
