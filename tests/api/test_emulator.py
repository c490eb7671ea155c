"""FilesClient against the emulator: in process (httpx.ASGITransport) for breadth,
and one real subprocess over loopback HTTP for true streaming both ways.

Known limit of the in-process path: httpx.ASGITransport collects a response body
before handing it over, so download memory is measured only against the subprocess.
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from orfs.api import (
    BadRequest,
    FilesClient,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    UploadBody,
)
from orfs.emulator.app import EmulatorConfig, create_app
from orfs.emulator.store import Scope

from ..conftest import EmulatorProcess
from .helpers import KEY, FakeClock, policy

URL = "http://emulator.test/api/v1"
MiB = 1024 * 1024


def make_app(data_dir: Path, **kw: object) -> Starlette:
    return create_app(EmulatorConfig(data_dir=data_dir, api_key=KEY, **kw))  # type: ignore[arg-type]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    a = make_app(tmp_path / "emu")
    yield a
    a.state.emulator.store.close()


def client(app: Starlette, clock: FakeClock | None = None, key: str = KEY,
           **kw: object) -> FilesClient:
    clock = clock or FakeClock()
    return FilesClient(URL, key, transport=httpx.ASGITransport(app=app),
                       retry=policy(clock), **kw)  # type: ignore[arg-type]


def add_output(app: Starlette, data: bytes, name: str = "out.bin",
               scope: Scope | None = None) -> str:
    store = app.state.emulator.store
    rec = store.add_bytes(scope or Scope(), data, filename=name,
                          mime_type="application/octet-stream", downloadable=True)
    return str(rec.id)


def text_body(total: int, chunk: int = 64 * 1024) -> tuple[UploadBody, list[int]]:
    """A UTF-8 text body of `total` bytes made chunk by chunk (never whole in memory);
    also a list recording each open."""
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    block = (line * (chunk // len(line) + 1))[:chunk]
    opens: list[int] = []

    async def gen() -> AsyncIterator[bytes]:
        opens.append(1)
        left = total
        while left > 0:
            piece = block[:min(chunk, left)]
            left -= len(piece)
            yield piece
    return UploadBody(gen, total), opens


async def test_pagination_across_three_pages(app: Starlette) -> None:
    store = app.state.emulator.store
    ids = [store.add_bytes(Scope(), b"x", filename=f"f{i}.txt", mime_type="text/plain",
                           downloadable=False).id for i in range(2500)]
    async with client(app) as c:
        pages = [page async for page in c.list_pages(limit=1000)]
        assert [len(p) for p in pages] == [1000, 1000, 500]
        assert [f.id for p in pages for f in p] == ids
        assert c.stats()["list"] == 3
    assert app.state.emulator.stats.counts["list"] == 3


@pytest.mark.parametrize("provider", [None, "openai", "anthropic"])
async def test_each_provider_shape_round_trips(app: Starlette, provider: str | None) -> None:
    ws = str(uuid.uuid4())
    async with client(app, workspace=ws, provider=provider) as c:
        up = [await c.upload(f"dir/{i}.md", UploadBody.from_bytes(b"# title\n\ntext\n"))
              for i in range(5)]
        assert all(f.size == len(b"# title\n\ntext\n") for f in up)
        assert all(f.mime_type == ("" if provider == "openai" else "text/markdown") for f in up)
        listed = [f async for f in c.list_files(limit=2)]
        assert [f.id for f in listed] == [f.id for f in up]
        got = await c.retrieve(up[0].id)
        assert got.filename == "dir/0.md" and got.created_at.tzinfo is not None
        assert got == listed[0]
        await c.delete(up[0].id)
        with pytest.raises(NotFound):
            await c.retrieve(up[0].id)
        with pytest.raises(NotFound):
            await c.delete(up[0].id)
        assert c.stats()["list"] == 3
    # The default scope saw none of it: workspace and provider were sent every time.
    async with client(app) as c:
        assert [f async for f in c.list_files()] == []


@pytest.mark.parametrize("name", ['quote "q".txt', "back\\slash.txt", "naïve/日本語.txt",
                                  "semi;colon.txt", "C:\\win.txt", "a b  c.txt"])
async def test_awkward_filenames_are_stored_exactly(app: Starlette, name: str) -> None:
    async with client(app) as c:
        f = await c.upload(name, UploadBody.from_bytes(b"hello\n"))
        assert f.filename == name
        assert (await c.retrieve(f.id)).filename == name


async def test_error_statuses_from_the_emulator(tmp_path: Path, app: Starlette) -> None:
    async with client(app) as c:
        with pytest.raises(BadRequest, match="empty"):
            await c.upload("e.txt", UploadBody.from_bytes(b""))
        with pytest.raises(BadRequest):
            await c.upload("x.bin", UploadBody.from_bytes(b"\x00\x01\x02binary"))
        with pytest.raises(NotFound):
            await c.retrieve("or_file_nope")
        f = await c.upload("a.txt", UploadBody.from_bytes(b"hi\n"))
        with pytest.raises(BadRequest, match="not downloadable"):
            async with c.download(f.id):
                pass
        body, _ = text_body(100 * MiB + 1)
        with pytest.raises(PayloadTooLarge):
            await c.upload("big.txt", body)
    async with client(app, workspace="not-a-uuid") as c:
        with pytest.raises(BadRequest, match="UUID"):
            await c.check()
    async with client(app, key="wrong-key") as c:
        with pytest.raises(Unauthorized):
            await c.check()
    small = make_app(tmp_path / "small", quota=10)
    try:
        async with client(small) as c:
            with pytest.raises(Forbidden, match="quota"):
                await c.upload("a.txt", UploadBody.from_bytes(b"0123456789abc\n"))
    finally:
        small.state.emulator.store.close()


async def test_injected_faults_are_retried_for_reads_not_for_uploads(tmp_path: Path) -> None:
    faulty = make_app(tmp_path / "f", fail_rate=1.0, rng=random.Random(1))
    clock = FakeClock()
    try:
        async with client(faulty, clock) as c:
            with pytest.raises(ServerError, match="injected"):
                await c.check()
            assert len(clock.sleeps) >= 4 and sum(clock.sleeps) <= 20
            n = c.stats()["list"]
            with pytest.raises(ServerError):
                await c.upload("a.txt", UploadBody.from_bytes(b"hi\n"))
            assert c.stats()["upload"] == 1 and n > 1
    finally:
        faulty.state.emulator.store.close()
    throttled = make_app(tmp_path / "t", throttle_rate=1.0, rng=random.Random(1))
    clock = FakeClock()
    try:
        async with client(throttled, clock) as c:
            with pytest.raises(RateLimited):
                await c.upload("a.txt", UploadBody.from_bytes(b"hi\n"))
            # retry-after-ms (50..200) preferred over Retry-After: 1 as the minimum sleep.
            assert c.stats()["upload"] > 1
            assert all(s >= 0.05 for s in clock.sleeps)
    finally:
        throttled.state.emulator.store.close()


async def test_flaky_emulator_lets_reads_through(tmp_path: Path) -> None:
    flaky = make_app(tmp_path / "f", fail_rate=0.1, throttle_rate=0.1, rng=random.Random(7))
    flaky.state.emulator.store.add_bytes(Scope(), b"x", filename="a", mime_type="text/plain",
                                         downloadable=True)
    try:
        async with client(flaky) as c:
            for _ in range(30):
                assert len([f async for f in c.list_files()]) == 1
            assert c.stats()["retries"] > 0
    finally:
        flaky.state.emulator.store.close()


async def test_upload_of_20_mib_streams_in_small_memory(
        app: Starlette, monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator runs in this process, so tracemalloc would count its content
    # sniffer too (which reads text in large blocks); measure the client alone.
    import orfs.emulator.app
    monkeypatch.setattr(orfs.emulator.app, "sniff_file", lambda path, **_: "text/plain")
    body, opens = text_body(20 * MiB)
    tracemalloc.start()
    try:
        async with client(app) as c:
            f = await c.upload("big.txt", body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.size == 20 * MiB and f.mime_type == "text/plain" and opens == [1]
    assert peak < 1 * MiB, peak


async def test_chunked_upload_of_unknown_size(app: Starlette) -> None:
    body, _ = text_body(3 * MiB + 17)
    unknown = UploadBody(body.open, None)
    async with client(app) as c:
        f = await c.upload("chunked.txt", unknown)
    assert f.size == 3 * MiB + 17
    async with client(app, chunked_upload=False) as c:
        f = await c.upload("counted.txt", unknown)
    assert f.size == 3 * MiB + 17


async def test_download_and_range_download(app: Starlette) -> None:
    data = random.Random(3).randbytes(3 * MiB + 5)
    fid = add_output(app, data)
    async with client(app) as c:
        async with c.download(fid) as d:
            assert d.size == len(data)
            chunks = [chunk async for chunk in d.iter_bytes()]
        # (ASGITransport hands the body over in one piece; the subprocess test below
        # checks real chunking.)
        assert b"".join(chunks) == data
        async with c.download(fid, offset=MiB + 1) as d:
            assert d.size == len(data) - MiB - 1 and d.total_size == len(data)
            assert b"".join([chunk async for chunk in d.iter_bytes()]) == data[MiB + 1:]
        f = await c.retrieve(fid)
        assert f.downloadable and f.size == len(data)


# -- over real loopback HTTP ---------------------------------------------------------


async def test_real_http_streams_both_ways(emulator: EmulatorProcess, tmp_path: Path) -> None:
    size = 20 * MiB
    src = tmp_path / "src.bin"
    rnd = random.Random(5)
    digest = hashlib.sha256()
    with src.open("wb") as out:
        for _ in range(size // MiB):
            block = rnd.randbytes(MiB)
            digest.update(block)
            out.write(block)
    out_json = emulator.create_output("out/big.bin", b"seed")  # proves the hook; small
    assert out_json["downloadable"]
    async with FilesClient(emulator.url, emulator.api_key, retry=policy(FakeClock())) as c:
        await c.check()
        # A random binary is not an accepted upload type: the emulator refuses it
        # after reading it all, streamed.
        with pytest.raises(BadRequest):
            await c.upload_path("big.bin", src)
        text, _ = text_body(size)
        tracemalloc.start()
        try:
            up = await c.upload("big.txt", text)
            _, up_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert up.size == size and up_peak < 2 * MiB, up_peak
    # Put the random file in as a server-side output directly in the store, then
    # download it over HTTP.
    from orfs.emulator.store import Store
    store = Store(emulator.data_dir)
    try:
        temp = store.temp_path()
        temp.write_bytes(src.read_bytes())
        fid = store.add(Scope(), temp, filename="big.bin", mime_type="application/octet-stream",
                        size=size, downloadable=True).id
    finally:
        store.close()
    async with FilesClient(emulator.url, emulator.api_key, retry=policy(FakeClock())) as c:
        got = hashlib.sha256()
        chunks = 0
        tracemalloc.start()
        try:
            async with c.download(fid) as d:
                assert d.size == size
                async for chunk in d.iter_bytes():
                    chunks += 1
                    got.update(chunk)
            _, down_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got.digest() == digest.digest() and chunks > 20
        assert down_peak < 2 * MiB, down_peak
        async with c.download(fid, offset=size - 10) as d:
            tail = b"".join([chunk async for chunk in d.iter_bytes()])
        assert tail == src.read_bytes()[-10:]
