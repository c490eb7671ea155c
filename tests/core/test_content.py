"""The content cache over a fake download client (no network, no kernel)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing

from orfs.api.errors import (
    ApiError,
    BadRequest,
    HttpStatusError,
    NotFound,
    ProtocolError,
    Unreachable,
)
from orfs.api.models import RemoteFile
from orfs.core.cache import (
    CacheHandle,
    ContentCache,
    ContentUnavailable,
    buffers,
    disk_name,
    writers,
)
from orfs.core.cache.inflight import Download
from orfs.core.cache.ranges import RangeSet
from orfs.core.state import State

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB


@pytest.fixture(autouse=True, params=["buffered", "direct"])
def write_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with chunks written as they come and with direct writes through
    the ring of buffers (which must really be in use where the test runs)."""
    monkeypatch.setattr(writers, "DIRECT_WRITES", request.param == "direct")
    if request.param == "direct":
        # Small buffers, so that a test's few MiB go round the ring many times.
        monkeypatch.setattr(buffers, "BUFFER_SIZE", 64 * KiB)


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every offset (so misplaced bytes show)."""
    pattern = bytes((i * 7 + seed) % 251 for i in range(251 * 4))
    reps = size // len(pattern) + 1
    return (pattern * reps)[:size]


def remote(file_id: str, size: int) -> RemoteFile:
    return RemoteFile(id=file_id, filename=f"{file_id}.bin", size=size, mime_type="",
                      created_at=datetime(2025, 1, 1, tzinfo=UTC), downloadable=True)


class Gate:
    """Lets a fake stream send only as many chunks as the test allowed."""

    def __init__(self) -> None:
        self.allowed = 0
        self.sent = 0
        self._changed = trio.Event()

    def allow(self, chunks: int) -> None:
        self.allowed += chunks
        self._changed.set()  # wakes every stream waiting
        self._changed = trio.Event()

    async def pass_one(self) -> None:
        while self.sent >= self.allowed:
            await self._changed.wait()
        self.sent += 1


class FakeStream:
    def __init__(self, data: bytes, offset: int, delay: float,
                 fail_at: int | None, error: Callable[[], ApiError],
                 gate: Gate | None, length: int | None = None) -> None:
        end = len(data) if length is None else min(len(data), offset + length)
        self.size: int | None = end - offset
        self.total_size: int | None = len(data)
        self.ranged: bool | None = True if offset or length is not None else None
        self._gate = gate
        self._data = data[:end]
        self._offset = offset
        self._delay = delay
        self._fail_at = fail_at
        self._error = error
        self.sent = 0

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        pos = self._offset
        while pos < len(self._data):
            if self._fail_at is not None and pos >= self._fail_at:
                raise self._error()
            if self._delay:
                await trio.sleep(self._delay)
            if self._gate is not None:
                await self._gate.pass_one()
            end = min(pos + CHUNK, len(self._data))
            if self._fail_at is not None:
                end = min(end, max(self._fail_at, pos + 1))
            yield self._data[pos:end]
            pos = end
        if self._fail_at is not None and pos >= self._fail_at and self._fail_at < len(
            self._data
        ):
            raise self._error()


class FakeClient:
    """``download(file_id, offset, length)`` over in-memory blobs (``calls`` records
    ``(file_id, offset)``, ``lengths`` the length asked for).

    ``fail_at[file_id]`` is a list, one item per attempt: the byte offset where that
    attempt's stream breaks (None: it does not). ``refuse[file_id]`` is raised before any
    byte is sent.
    """

    def __init__(self, blobs: dict[str, bytes], delay: float = 0.0) -> None:
        self.blobs = blobs
        self.delay = delay
        self.calls: list[tuple[str, int]] = []
        self.lengths: list[int | None] = []
        self.fail_at: dict[str, list[int | None]] = {}
        self.error: Callable[[], ApiError] = lambda: ProtocolError("body truncated")
        self.refuse: dict[str, ApiError] = {}
        self.gate: Gate | None = None

    @asynccontextmanager
    async def download(self, file_id: str, offset: int = 0, length: int | None = None
                       ) -> AsyncIterator[FakeStream]:
        self.calls.append((file_id, offset))
        self.lengths.append(length)
        await trio.lowlevel.checkpoint()
        if file_id in self.refuse:
            raise self.refuse[file_id]
        if file_id not in self.blobs:
            raise NotFound("no such file")
        plan = self.fail_at.get(file_id)
        fail_at = plan.pop(0) if plan else None
        if offset >= len(self.blobs[file_id]) > 0:
            raise HttpStatusError("range not satisfiable", status=416)
        yield FakeStream(self.blobs[file_id], offset, self.delay, fail_at, self.error,
                         self.gate, length)


@asynccontextmanager
async def running(root: Path, client: FakeClient, max_size: int = 1 << 40,
                  streams: int = 1) -> AsyncIterator[tuple[ContentCache, State]]:
    """A cache as a mount runs it: ``run`` in a nursery, cancelled at the end. One
    stream per file by default, so the fake's gate lets chunks through in read order."""
    state = State(root)
    cache = ContentCache(root, max_size, client, state, download_streams=streams)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            yield cache, state
            nursery.cancel_scope.cancel()
    finally:
        state.close()


def asked(client: FakeClient, file_id: str) -> list[tuple[int, int]]:
    """The ranges requested of ``file_id``, in order (an open end: to the end)."""
    size = len(client.blobs[file_id])
    return [(off, size if n is None else off + n)
            for (fid, off), n in zip(client.calls, client.lengths, strict=True)
            if fid == file_id]


def each_byte_once(client: FakeClient, file_id: str) -> bool:
    """The requests for ``file_id`` asked for every byte of it exactly once."""
    spans = sorted(asked(client, file_id))
    pos = 0
    for start, end in spans:
        if start != pos:
            return False
        pos = end
    return pos == len(client.blobs[file_id])


def entry_fetches(cache: ContentCache, file_id: str) -> list[Download]:
    entry = cache._entries.get(file_id)
    return [] if entry is None else list(entry.fetches)


async def read_all(handle: CacheHandle, size: int = 128 * KiB) -> bytes:
    out = bytearray()
    while True:
        data = await handle.read(len(out), size)
        if not data:
            return bytes(out)
        out += data


async def settle(cache: ContentCache) -> None:
    """Wait until no download is in flight (and installed, and fsynced unless a handle
    still reads it: its fsync waits for that)."""
    while (cache.statistics()["downloads_in_flight"] or cache._active
           or any(e.pins == 0 for e in cache._unsynced)):
        await trio.sleep(0.01)


async def test_read_returns_as_soon_as_its_range_arrived(tmp_path: Path) -> None:
    data = blob(4 * MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        handle = await cache.open(remote("f", len(data)))
        gate.allow(2)  # two 64 KiB chunks: exactly the first read
        with trio.fail_after(5):
            assert await handle.read(0, 128 * KiB) == data[: 128 * KiB]
        assert not cache.is_cached("f")
        # A read further on waits for its own range, and only for it.
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def middle() -> None:
                got.append(await handle.read(MiB, 128 * KiB))

            nursery.start_soon(middle)
            await trio.sleep(0.05)
            assert got == []
            gate.allow(MiB // CHUNK)  # up to 1 MiB + 128 KiB
        assert got == [data[MiB : MiB + 128 * KiB]]
        gate.allow(1000)
        with trio.fail_after(10):
            assert await read_all(handle) == data
        handle.close()
        await settle(cache)
        assert cache.is_cached("f")
        assert each_byte_once(client, "f")


class OneChunkClient(FakeClient):
    """Sends each file as a single chunk (a 1 MiB socket read can bring that much)."""

    @asynccontextmanager
    async def download(self, file_id: str, offset: int = 0, length: int | None = None
                       ) -> AsyncIterator[FakeStream]:
        self.calls.append((file_id, offset))
        self.lengths.append(length)
        await trio.lowlevel.checkpoint()
        stream = FakeStream(self.blobs[file_id], offset, 0.0, None, self.error, self.gate,
                            length)

        async def one() -> AsyncIterator[bytes]:
            if self.gate is not None:
                await self.gate.pass_one()
            end = None if length is None else offset + length
            yield self.blobs[file_id][offset:end]

        stream.iter_bytes = one  # type: ignore[method-assign]
        yield stream


async def test_a_reader_is_answered_before_the_rest_of_a_big_chunk_is_written(
        tmp_path: Path) -> None:
    data = blob(MiB)
    client = OneChunkClient({"f": data})
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        handle = await cache.open(remote("f", len(data)))
        arrived_when_answered: list[int] = []
        fetches: list[Download] = []

        async def first_read() -> None:
            got = await handle.read(0, 100 * KiB)
            assert got == data[:100 * KiB]
            arrived_when_answered.append(fetches[0].arrived)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_read)
            await trio.testing.wait_all_tasks_blocked()
            fetches.extend(entry_fetches(cache, "f")[:1])  # the read's, a whole block
            assert fetches[0].start == 0 and fetches[0].end == 128 * KiB
            gate.allow(1)
        if writers.DIRECT_WRITES:
            # Copied into the ring and readable from it at once: nothing to split.
            assert arrived_when_answered
        else:
            # The chunk was written up to the reader's end, the reader answered, then
            # the rest written: it never waited for the other 28 KiB.
            assert arrived_when_answered == [100 * KiB]
        gate.allow(1000)
        with trio.fail_after(10):
            assert await read_all(handle) == data
        handle.close()


async def inspect_ring(handle: CacheHandle, dl: Download, data: bytes, gate: Gate) -> None:
    ring = dl.memory
    assert isinstance(ring, writers.DirectWriter)  # O_DIRECT works here
    start = ring.memory_start
    assert 0 < start < 20 * CHUNK
    for offset, size in ((0, 128 * KiB), (start - 5000, 10_000), (start, 3000),
                         (20 * CHUNK - 4096, 4096)):
        got = handle._read_partial(offset, offset + size)
        assert got == data[offset:offset + size], (offset, size)
    gate.allow(1000)


async def test_direct_writes_serve_the_ring_and_the_file_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With direct writes, the newest bytes are read from the ring and older ones from
    # the file; a range across the boundary is joined; every byte is right, and the
    # ring's buffers go back to the pool once the file is whole and the handle closed.
    monkeypatch.setattr(writers, "DIRECT_WRITES", True)  # whatever the module's mode
    monkeypatch.setattr(buffers, "BUFFER_SIZE", 64 * KiB)
    data = blob(2 * MiB + 1234)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        handle = await cache.open(remote("f", len(data)))
        # One fetch of the whole file (a read wide enough), so the ring goes round.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle.read, 0, len(data))
            await trio.testing.wait_all_tasks_blocked()
            (dl,) = entry_fetches(cache, "f")
            gate.allow(20)  # 20 chunks of 64 KiB: 1.25 MiB, ring of 3 x 64 KiB
            with trio.fail_after(5):
                await dl.wait_for(20 * CHUNK)
            await inspect_ring(handle, dl, data, gate)
        with trio.fail_after(10):
            assert await read_all(handle) == data
        await settle(cache)
        assert dl.written and dl.memory is None  # the file has every byte: ring back
        handle.close()
        assert len(cache._pool) == 3
        again = await cache.open(remote("f", len(data)))
        assert await read_all(again) == data  # from content/, written with O_DIRECT
        again.close()


async def test_direct_writes_refused_midway_go_on_as_plain_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A filesystem may open with O_DIRECT and then refuse the writes (EINVAL): the
    # download goes on with plain writes of the same buffers and loses nothing.
    monkeypatch.setattr(writers, "DIRECT_WRITES", True)
    monkeypatch.setattr(buffers, "BUFFER_SIZE", 64 * KiB)
    real = writers._pwritev_all
    refused: list[int] = []

    def pwritev(fd: int, views: list[memoryview], offset: int) -> None:
        if os.get_blocking(fd) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, views, offset)

    monkeypatch.setattr(writers, "_pwritev_all", pwritev)
    data = blob(MiB + 777)
    async with running(tmp_path, FakeClient({"f": data})) as (cache, _):
        handle = await cache.open(remote("f", len(data)))
        with trio.fail_after(10):
            assert await read_all(handle) == data
        handle.close()
        await settle(cache)
        assert refused == [0]  # refused once, then plain writes
        again = await cache.open(remote("f", len(data)))
        assert await read_all(again) == data
        again.close()


async def test_past_the_ring_limit_downloads_write_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # However many files are read at once, ring memory stays bounded: past RINGS_MAX
    # downloads in flight, the next ones write as they come, and every byte is right;
    # a ring given back makes room for the next download.
    monkeypatch.setattr(writers, "DIRECT_WRITES", True)
    monkeypatch.setattr(buffers, "BUFFER_SIZE", 64 * KiB)
    monkeypatch.setattr(buffers, "RINGS_MAX", 1)
    blobs = {name: blob(300 * KiB, seed=i) for i, name in enumerate("abc")}
    client = FakeClient(blobs)
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        a = await cache.open(remote("a", len(blobs["a"])))
        b = await cache.open(remote("b", len(blobs["b"])))
        got: dict[str, bytes] = {}

        async def read(name: str, h: CacheHandle) -> None:
            got[name] = await h.read(0, len(blobs[name]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "a", a)
            await trio.testing.wait_all_tasks_blocked()  # a's fetch has the ring
            nursery.start_soon(read, "b", b)
            await trio.testing.wait_all_tasks_blocked()
            (fa,), (fb,) = entry_fetches(cache, "a"), entry_fetches(cache, "b")
            assert isinstance(fa.memory, writers.DirectWriter)
            assert fb.memory is None  # plain writes
            gate.allow(1000)
        assert got == {"a": blobs["a"], "b": blobs["b"]}
        a.close()
        b.close()
        await settle(cache)
        c = await cache.open(remote("c", len(blobs["c"])))
        gate.allowed = gate.sent  # closed again
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "c", c)
            await trio.testing.wait_all_tasks_blocked()
            (fc,) = entry_fetches(cache, "c")
            assert isinstance(fc.memory, writers.DirectWriter)  # a's ring came back
            gate.allow(1000)
        assert got["c"] == blobs["c"]
        c.close()


async def test_reads_are_short_at_eof_and_empty_past_it(tmp_path: Path) -> None:
    data = blob(100 * KiB + 3)
    async with running(tmp_path, FakeClient({"f": data})) as (cache, _):
        handle = await cache.open(remote("f", len(data)))
        assert await handle.read(len(data) - 10, 128 * KiB) == data[-10:]
        assert await handle.read(len(data), 4096) == b""
        assert await handle.read(len(data) + 5000, 4096) == b""
        handle.close()
        handle.close()  # idempotent


async def test_concurrent_opens_share_one_download(tmp_path: Path) -> None:
    data = blob(MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    results: list[bytes] = []
    async with running(tmp_path, client) as (cache, _):

        async def reader() -> None:
            handle = await cache.open(remote("f", len(data)))
            try:
                results.append(await read_all(handle))
            finally:
                handle.close()

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(reader)
            await trio.sleep(0.05)
            gate.allow(1000)
        assert results == [data] * 8
        assert each_byte_once(client, "f")  # whoever asked first, nothing twice
        stats = cache.statistics()
        assert stats["downloads_started"] == len(client.calls)
        assert stats["downloads_joined"] >= 7


async def test_second_open_after_completion_makes_no_request(tmp_path: Path) -> None:
    data = blob(300 * KiB)
    client = FakeClient({"f": data})
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h) == data
        h.close()
        await settle(cache)
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h) == data
        h.close()
        assert each_byte_once(client, "f")
        assert cache.statistics()["hits"] == 1


async def test_download_continues_when_the_last_handle_closes(tmp_path: Path) -> None:
    data = blob(MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        gate.allow(1)
        await h.read(0, 1)
        h.close()
        gate.allow(5)
        await trio.sleep(0.05)
        h = await cache.open(remote("f", len(data)))  # joins, does not restart
        gate.allow(1000)
        with trio.fail_after(10):
            assert await read_all(h) == data
        h.close()
        await settle(cache)
        h = await cache.open(remote("f", len(data)))
        h.close()
        assert each_byte_once(client, "f")  # the second open joined what ran
        assert cache.is_cached("f")


async def test_a_new_mount_serves_a_complete_entry_with_no_download(tmp_path: Path) -> None:
    data = blob(500 * KiB)
    client = FakeClient({"f": data})
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        await read_all(h)
        h.close()
        await settle(cache)
    client2 = FakeClient({"f": data})
    async with running(tmp_path, client2) as (cache, _):
        assert cache.is_cached("f")
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h) == data
        h.close()
        assert cache.usage() == (len(data), 1 << 40)
    assert client2.calls == []


async def test_an_interrupted_download_is_discarded_and_redone(tmp_path: Path) -> None:
    data = blob(MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        gate.allow(4)
        await h.read(0, 100 * KiB)  # its fetch: the first 256 KiB, complete
        h.close()
        with trio.fail_after(5):
            await settle(cache)
        # leaving the block cancels run(): an unmount mid-download; what had arrived
        # is recorded as present, what was in flight is not
    state = State(tmp_path)
    rec = state.content_get("f")
    state.close()
    assert rec is not None and not rec.complete and rec.ranges
    kept = RangeSet.loads(rec.ranges)
    assert kept.covers(0, 100 * KiB) and not kept.covers(0, len(data))
    # What a crash would leave: an older mount's partial file, and a file whose index
    # row never said complete (the fsync had not finished) nor listed ranges.
    (tmp_path / "partial" / "f.abc123").write_bytes(data[:1000])
    (tmp_path / "content" / "g").write_bytes(data)
    state = State(tmp_path)
    state.content_put("g", size=len(data), complete=False, atime=1.0)
    state.close()
    client2 = FakeClient({"f": data, "g": data})
    async with running(tmp_path, client2) as (cache, _):
        assert list((tmp_path / "partial").iterdir()) == []
        assert not (tmp_path / "content" / "g").exists()
        assert not cache.is_cached("f") and not cache.is_cached("g")
        for fid in ("f", "g"):
            h = await cache.open(remote(fid, len(data)))
            assert await read_all(h) == data
            h.close()
    # f: only what the first mount did not have; g: all of it.
    assert each_byte_once(client2, "g")
    assert all(not kept.covers(a, a + 1) for a, _ in asked(client2, "f"))
    assert RangeSet([*asked(client2, "f"), *kept]).covers(0, len(data))


async def test_unmount_wakes_readers_of_a_download_in_flight(tmp_path: Path) -> None:
    data = blob(MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    state = State(tmp_path)
    cache = ContentCache(tmp_path, 1 << 30, client, state)
    got: list[BaseException] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            run_scope = trio.CancelScope()

            async def run_cache(task_status: trio.TaskStatus[None]) -> None:
                with run_scope:
                    await cache.run(task_status=task_status)

            await outer.start(run_cache)
            h = await cache.open(remote("f", len(data)))

            async def reader() -> None:
                try:
                    await h.read(512 * KiB, 512 * KiB)
                except ContentUnavailable as exc:
                    got.append(exc)

            outer.start_soon(reader)
            gate.allow(2)
            await trio.sleep(0.05)
            run_scope.cancel()
    h.close()
    state.close()
    assert len(got) == 1


@pytest.mark.parametrize("where", ["on_disk_later", "before_start"])
async def test_a_damaged_entry_is_downloaded_again(tmp_path: Path, where: str) -> None:
    data = blob(200 * KiB)
    async with running(tmp_path, FakeClient({"f": data})) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        await read_all(h)
        h.close()
        await settle(cache)
        first = cache.statistics()["downloads_started"]
        path = tmp_path / "content" / disk_name("f")
        assert path.stat().st_size == len(data)
        if where == "on_disk_later":
            os.truncate(path, 1000)
            assert not cache.is_cached("f")
            h = await cache.open(remote("f", len(data)))
            assert await read_all(h) == data
            h.close()
            assert cache.statistics()["downloads_started"] == 2 * first
    if where == "before_start":
        os.truncate(path, 1000)
        client = FakeClient({"f": data})
        async with running(tmp_path, client) as (cache, _):
            assert not cache.is_cached("f")
            assert cache.usage()[0] == 0
            h = await cache.open(remote("f", len(data)))
            assert await read_all(h) == data
            h.close()
        assert each_byte_once(client, "f")


async def test_a_failed_download_wakes_every_waiter(tmp_path: Path) -> None:
    data = blob(MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    client.fail_at["f"] = [300 * KiB, 400 * KiB]  # the resume breaks too
    errors: list[ContentUnavailable] = []
    async with running(tmp_path, client) as (cache, _):
        handles = [await cache.open(remote("f", len(data))) for _ in range(5)]

        async def reader(h: CacheHandle, offset: int, size: int = 128 * KiB) -> None:
            try:
                await h.read(offset, size)
            except ContentUnavailable as exc:
                errors.append(exc)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                # One fetch of the whole file; four more readers wait inside it.
                nursery.start_soon(reader, handles[0], 0, len(data))
                await trio.testing.wait_all_tasks_blocked()
                for i, h in enumerate(handles[1:]):
                    nursery.start_soon(reader, h, 500 * KiB + i * 100 * KiB)
                await trio.sleep(0.05)
                assert errors == []  # all five are waiting
                gate.allow(1000)
        assert len(errors) == 5
        assert all(e.errno == errno.EIO and not e.not_downloadable for e in errors)
        # Bytes that did arrive are still served, with no request.
        assert await handles[0].read(0, 128 * KiB) == data[: 128 * KiB]
        for h in handles:
            h.close()
        assert client.calls == [("f", 0), ("f", 300 * KiB)]
        assert not cache.is_cached("f")
        assert cache.statistics()["downloads_failed"] == 1
        # A later open tries again.
        client.gate = None
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h) == data
        h.close()


async def test_a_dropped_stream_resumes_from_its_offset(tmp_path: Path) -> None:
    data = blob(MiB + 5)
    client = FakeClient({"f": data})
    client.fail_at["f"] = [333 * KiB + 7]
    client.error = lambda: Unreachable("connection reset")
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        with trio.fail_after(10):
            assert await h.read(0, len(data)) == data  # one fetch
        h.close()
        await settle(cache)
        assert cache.is_cached("f")
        assert cache.statistics()["download_resumes"] == 1
    assert each_byte_once(client, "f") is False  # the resume asked for the rest again
    assert ("f", 333 * KiB + 7) in client.calls


async def test_not_downloadable_is_eacces_and_not_found_is_eio(tmp_path: Path) -> None:
    client = FakeClient({})
    client.refuse["up"] = BadRequest("file is not downloadable")
    async with running(tmp_path, client) as (cache, _):
        for fid, code in (("up", errno.EACCES), ("gone", errno.EIO)):
            h = await cache.open(remote(fid, 10))
            with trio.fail_after(5), pytest.raises(ContentUnavailable) as info:
                await h.read(0, 10)
            assert info.value.errno == code
            h.close()
        assert client.calls == [("up", 0), ("gone", 0)]  # no resume of a refusal
        assert cache.usage()[0] == 0


async def test_a_size_mismatch_keeps_what_arrived_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = blob(70 * KiB)
    async with running(tmp_path, FakeClient({"f": data})) as (cache, state):
        with caplog.at_level(logging.WARNING, logger="orfs.core.cache"):
            h = await cache.open(remote("f", 50 * KiB))
            assert await read_all(h) == data
            h.close()
            await settle(cache)
        assert any("70" in r.getMessage() or "71680" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)
        rec = state.content_get("f")
        assert rec is not None and rec.size == len(data) and rec.complete


async def test_eviction_keeps_usage_under_the_limit_in_lru_order(tmp_path: Path) -> None:
    blobs = {f"f{i}": blob(100 * KiB, i) for i in range(6)}
    client = FakeClient(blobs)
    limit = 350 * KiB
    async with running(tmp_path, client, max_size=limit) as (cache, _):
        for i in range(3):
            h = await cache.open(remote(f"f{i}", 100 * KiB))
            await read_all(h)
            h.close()
            await settle(cache)
        h = await cache.open(remote("f0", 100 * KiB))  # f0 is now the most recent
        h.close()
        for i in range(3, 6):
            h = await cache.open(remote(f"f{i}", 100 * KiB))
            assert await read_all(h) == blobs[f"f{i}"]
            h.close()
            await settle(cache)
            assert cache.usage()[0] <= limit
        assert [cache.is_cached(f"f{i}") for i in range(6)] == [
            False, False, False, True, True, True]
        on_disk = sum(p.stat().st_size for p in (tmp_path / "content").iterdir())
        assert on_disk <= limit
        assert cache.statistics()["evictions"] == 3


async def test_a_pinned_entry_is_never_evicted(tmp_path: Path) -> None:
    blobs = {f"f{i}": blob(100 * KiB, i) for i in range(4)}
    async with running(tmp_path, FakeClient(blobs), max_size=150 * KiB) as (cache, _):
        pinned = await cache.open(remote("f0", 100 * KiB))
        await read_all(pinned)
        await settle(cache)
        for i in range(1, 4):
            h = await cache.open(remote(f"f{i}", 100 * KiB))
            await read_all(h)
            h.close()
            await settle(cache)
        assert cache.is_cached("f0")
        assert await read_all(pinned) == blobs["f0"]
        assert cache.usage()[0] <= 200 * KiB  # f0 plus at most the newest one
        pinned.close()


async def test_an_entry_bigger_than_the_limit_is_served_then_evicted(tmp_path: Path) -> None:
    data = blob(300 * KiB)
    client = FakeClient({"big": data})
    async with running(tmp_path, client, max_size=100 * KiB) as (cache, _):
        h = await cache.open(remote("big", len(data)))
        assert await read_all(h) == data
        await settle(cache)
        assert await h.read(0, 10) == data[:10]  # still readable while open
        h.close()
        assert not cache.is_cached("big")
        assert cache.usage()[0] == 0
        assert list((tmp_path / "content").iterdir()) == []


async def test_adopt_makes_a_staged_file_readable_with_no_download(tmp_path: Path) -> None:
    data = blob(123 * KiB)
    staging = tmp_path / "staging"
    staging.mkdir()
    staged = staging / "upload-1"
    staged.write_bytes(data)
    client = FakeClient({})
    async with running(tmp_path, client) as (cache, state):
        cache.adopt("new", staged, len(data))
        assert not staged.exists()
        assert cache.is_cached("new")
        h = await cache.open(remote("new", len(data)))
        assert await read_all(h) == data
        h.close()
        await trio.sleep(0.2)  # the background fsync records it
        rec = state.content_get("new")
        assert rec is not None and rec.complete and rec.size == len(data)
    assert client.calls == []
    async with running(tmp_path, client) as (cache, _):
        assert cache.is_cached("new")


async def test_drop_removes_now_or_at_the_last_close(tmp_path: Path) -> None:
    blobs = {"a": blob(10 * KiB), "b": blob(20 * KiB)}
    async with running(tmp_path, FakeClient(blobs)) as (cache, _):
        for fid in blobs:
            h = await cache.open(remote(fid, len(blobs[fid])))
            await read_all(h)
            h.close()
        await settle(cache)
        cache.drop("a")
        assert not cache.is_cached("a")
        assert not (tmp_path / "content" / "a").exists()
        h = await cache.open(remote("b", 20 * KiB))
        cache.drop("b")
        assert not cache.is_cached("b")
        assert await read_all(h) == blobs["b"]  # an open reader keeps its bytes
        assert (tmp_path / "content" / "b").exists()
        h.close()
        assert not (tmp_path / "content" / "b").exists()
        assert cache.usage()[0] == 0
        cache.drop("never-seen")


async def test_cache_files_are_0600_and_directories_0700(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    data = blob(MiB)
    client = FakeClient({"done": blob(1000), "slow": data})
    client.gate = gate = Gate()
    gate.allow(1)
    async with running(root, client) as (cache, _):
        h = await cache.open(remote("done", 1000))
        await read_all(h)
        h.close()
        await settle(cache)
        slow = await cache.open(remote("slow", len(data)))
        gate.allow(1)
        await slow.read(0, 1)
        paths = list(root.rglob("*"))
        assert any(p.name == "slow" for p in paths)  # partly fetched: a sparse file
        assert any(p.parent.name == "content" for p in paths)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        for p in paths:
            want = 0o700 if p.is_dir() else 0o600
            assert stat.S_IMODE(p.stat().st_mode) == want, p
        slow.close()
        gate.allow(1000)


def test_ids_that_are_not_tame_names_are_hashed() -> None:
    assert disk_name("or_file_011CNha8iCJcU1wXNR6q4V8w") == "or_file_011CNha8iCJcU1wXNR6q4V8w"
    for bad in ("../x", "a/b", ".hidden", "", "x" * 300, "é"):
        name = disk_name(bad)
        assert name.startswith("~") and "/" not in name and len(name) < 100


async def test_open_without_run_is_an_error(tmp_path: Path) -> None:
    state = State(tmp_path)
    cache = ContentCache(tmp_path, 1 << 20, FakeClient({}), state)
    with pytest.raises(RuntimeError):
        await cache.open(remote("f", 1))
    state.close()


async def test_the_fsync_of_a_download_waits_for_its_readers(tmp_path: Path) -> None:
    # Complete in memory at once; complete in the index only after the fsync, which
    # waits until no handle reads the entry (it would compete with that read).
    data = blob(300 * KiB)
    async with running(tmp_path, FakeClient({"f": data})) as (cache, state):
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h) == data
        await settle(cache)
        assert cache.is_cached("f")
        rec = state.content_get("f")
        assert rec is None or not rec.complete  # still read: not fsynced yet
        h.close()
        await settle(cache)
        rec = state.content_get("f")
        assert rec is not None and rec.complete and rec.size == len(data)


async def test_an_unmount_fsyncs_what_waited_for_its_readers(tmp_path: Path) -> None:
    data = blob(300 * KiB)
    async with running(tmp_path, FakeClient({"f": data})) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h) == data
        await settle(cache)
        # unmounting with the handle still open
    state = State(tmp_path)
    try:
        rec = state.content_get("f")
    finally:
        state.close()
    assert rec is not None and rec.complete
    client2 = FakeClient({"f": data})
    async with running(tmp_path, client2) as (cache, _):
        assert cache.is_cached("f")
    assert client2.calls == []


# ---- eviction classes: adopted uploads go last ----------------------------------------


def stage(root: Path, name: str, data: bytes) -> Path:
    """A staged upload (on the cache's filesystem, as the core keeps them)."""
    staging = root / "staging"
    staging.mkdir(exist_ok=True)
    path = staging / name
    path.write_bytes(data)
    return path


async def read_through(cache: ContentCache, file_id: str, data: bytes) -> None:
    h = await cache.open(remote(file_id, len(data)))
    try:
        assert await read_all(h) == data
    finally:
        h.close()


async def test_adopted_entries_outlive_every_downloadable_one(tmp_path: Path) -> None:
    # The upload is the least recently used entry throughout: plain LRU would evict it
    # first, and the API would never give its bytes back.
    blobs = {f"f{i}": blob(100 * KiB, i) for i in range(6)}
    client = FakeClient(blobs)
    up = blob(100 * KiB, 99)
    limit = 250 * KiB
    async with running(tmp_path, client, max_size=limit) as (cache, state):
        cache.adopt("up", stage(tmp_path, "up", up), len(up))
        for i in range(3):  # one by one
            await read_through(cache, f"f{i}", blobs[f"f{i}"])
            await settle(cache)
            assert cache.is_cached("up")
            assert cache.usage()[0] <= limit
        # Concurrent readers: their downloads pass the limit while open, and only
        # downloadable entries make room.
        handles = [await cache.open(remote(f"f{i}", 100 * KiB)) for i in range(3, 6)]
        for i, h in zip(range(3, 6), handles, strict=True):
            assert await read_all(h) == blobs[f"f{i}"]
        await settle(cache)
        assert cache.is_cached("up")
        for h in handles:
            h.close()
        await settle(cache)
        assert cache.is_cached("up")
        assert cache.usage()[0] <= limit
        assert [cache.is_cached(f"f{i}") for i in range(6)] == [False] * 5 + [True]
        await read_through(cache, "up", up)
        stats = cache.statistics()
        assert stats["adopted_bytes"] == len(up)
        assert stats["adopted_evictions"] == 0
        rec = state.content_get("up")
        assert rec is not None and rec.adopted and rec.complete
    assert all(fid != "up" for fid, _ in client.calls)


async def test_adopted_entries_go_last_and_oldest_first_when_they_alone_exceed_the_limit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orfs.core.cache")
    d0 = blob(100 * KiB, 1)
    ups = {f"a{i}": blob(100 * KiB, 10 + i) for i in range(4)}
    limit = 250 * KiB
    async with running(tmp_path, FakeClient({"d0": d0}), max_size=limit) as (cache, state):
        await read_through(cache, "d0", d0)
        await settle(cache)
        cache.adopt("a0", stage(tmp_path, "a0", ups["a0"]), 100 * KiB)
        assert cache.is_cached("d0") and cache.is_cached("a0")
        cache.adopt("a1", stage(tmp_path, "a1", ups["a1"]), 100 * KiB)
        # Over the limit: the downloadable entry goes, though it is the newer one...
        assert not cache.is_cached("d0")
        assert cache.is_cached("a0") and cache.is_cached("a1")
        assert cache.statistics()["adopted_evictions"] == 0
        await read_through(cache, "a0", ups["a0"])  # a0 is now more recent than a1
        cache.adopt("a2", stage(tmp_path, "a2", ups["a2"]), 100 * KiB)
        # ...and adopted bytes alone are over it: the least recently used one goes.
        assert [cache.is_cached(f"a{i}") for i in range(3)] == [True, False, True]
        cache.adopt("a3", stage(tmp_path, "a3", ups["a3"]), 100 * KiB)
        assert [cache.is_cached(f"a{i}") for i in range(4)] == [False, False, True, True]
        assert cache.usage()[0] <= limit
        assert cache.statistics()["adopted_evictions"] == 2
        await trio.sleep(0.2)  # the background fsyncs record what was kept
        assert {r.file_id for r in state.content_records()} == {"a2", "a3"}
        assert not (tmp_path / "content" / "a1").exists()
    lines = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO and "can no longer be read back" in r.getMessage()]
    assert len(lines) == 2
    assert "a1" in lines[0] and "a0" in lines[1]


async def test_the_class_of_an_entry_survives_a_new_mount(tmp_path: Path) -> None:
    blobs = {f"f{i}": blob(100 * KiB, i) for i in range(3)}
    up = blob(100 * KiB, 99)
    async with running(tmp_path, FakeClient(blobs)) as (cache, _):
        cache.adopt("up", stage(tmp_path, "up", up), len(up))  # the oldest entry
        for fid, data in blobs.items():
            await read_through(cache, fid, data)
        await settle(cache)
    # A new mount with a smaller limit: the index says which entry is an upload.
    client = FakeClient(blobs)
    async with running(tmp_path, client, max_size=250 * KiB) as (cache, state):
        assert cache.is_cached("up")
        assert [cache.is_cached(f) for f in blobs] == [False, False, True]
        await read_through(cache, "up", up)
        rec = state.content_get("up")
        assert rec is not None and rec.adopted
        rec = state.content_get("f2")
        assert rec is not None and not rec.adopted
    assert client.calls == []


async def test_an_index_without_the_class_column_is_migrated(tmp_path: Path) -> None:
    # The content table of schema 2, as an older mount left it, with one entry.
    data = blob(50 * KiB)
    (tmp_path / "content").mkdir(mode=0o700)
    (tmp_path / "content" / "old").write_bytes(data)
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(
        "CREATE TABLE content (id TEXT PRIMARY KEY, size INTEGER NOT NULL, "
        "complete INTEGER NOT NULL, atime REAL NOT NULL);"
        "PRAGMA user_version=2;")
    db.execute("INSERT INTO content VALUES ('old', ?, 1, 1.0)", (len(data),))
    db.commit()
    db.close()
    up = blob(100 * KiB, 7)
    async with running(tmp_path, FakeClient({"old": data}), max_size=120 * KiB
                       ) as (cache, state):
        rec = state.content_get("old")
        assert rec is not None and rec.complete and not rec.adopted  # downloadable
        assert cache.is_cached("old")
        cache.adopt("up", stage(tmp_path, "up", up), len(up))
        assert not cache.is_cached("old") and cache.is_cached("up")
        await trio.sleep(0.2)
        rec = state.content_get("up")
        assert rec is not None and rec.adopted
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4  # the current schema
    finally:
        db.close()


async def test_a_download_deleted_elsewhere_serves_what_arrived_then_eio(
        tmp_path: Path) -> None:
    data, other = blob(MiB), blob(MiB, seed=3)
    client = FakeClient({"f": data, "g": other})
    client.gate = gate = Gate()
    client.fail_at["f"] = [256 * KiB]  # the stream breaks there, after the delete
    client.error = lambda: Unreachable("connection reset")
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        g = await cache.open(remote("g", len(other)))
        gate.allow(2)
        with trio.fail_after(5):
            assert await h.read(0, 128 * KiB) == data[:128 * KiB]
        del client.blobs["f"]           # deleted by another client...
        cache.deleted_elsewhere("f")    # ...and the mount noticed
        gate.allow(1000)
        with trio.fail_after(10), pytest.raises(ContentUnavailable) as info:
            await h.read(256 * KiB, 128 * KiB)  # the resume is 404: no more bytes
        assert info.value.errno == errno.EIO
        # What arrived before is still served, to this handle; other files are unharmed.
        assert await h.read(0, 128 * KiB) == data[:128 * KiB]
        with trio.fail_after(10):
            assert await read_all(g) == other
        h.close()
        g.close()
        await settle(cache)
        assert not cache.is_cached("f") and cache.is_cached("g")
        assert os.listdir(tmp_path / "content") == ["g"]
        assert cache.usage()[0] == len(other)


async def test_a_download_deleted_elsewhere_that_still_streams_is_read_to_its_end(
        tmp_path: Path) -> None:
    data = blob(MiB)
    client = FakeClient({"f": data})
    client.gate = gate = Gate()
    async with running(tmp_path, client) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        gate.allow(2)
        with trio.fail_after(5):
            assert await h.read(0, 128 * KiB) == data[:128 * KiB]
        cache.deleted_elsewhere("f")  # the server goes on sending what it started
        gate.allow(1000)
        with trio.fail_after(10):
            assert await read_all(h) == data
        await settle(cache)
        assert not cache.is_cached("f")  # never installed: the id is gone
        h.close()
        assert os.listdir(tmp_path / "content") == []
        assert cache.usage()[0] == 0
        assert cache.statistics()["entries"] == 0


async def test_a_writer_cancelled_writes_out_what_arrived_before_it_closes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An unmount cancels a direct writer while its last, partial buffer is still in
    # memory: it writes that buffer out first, so the fetch's bytes can be kept (and
    # `done` says so only once they are in the file).
    monkeypatch.setattr(writers, "DIRECT_WRITES", True)
    path = tmp_path / "f"
    path.write_bytes(b"")
    os.truncate(path, 10)
    fetch = Download(path, 0, None, file_size=10)
    fd = writers.open_direct(path)
    assert fd >= 0  # O_DIRECT works where the tests run
    writer = writers.DirectWriter(fd, fetch, buffers.BufferPool())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.put(b"0123456789")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert writer.closed.is_set() and fetch.written
    assert writer.done and fetch.kept
    assert path.read_bytes() == b"0123456789"


async def test_a_writer_that_cannot_write_out_at_cancel_keeps_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same, when the last write fails: the fetch counts as failed with nothing
    # marked present, never as finished with a hole where its bytes should be.
    monkeypatch.setattr(writers, "DIRECT_WRITES", True)
    path = tmp_path / "f"
    path.write_bytes(b"")
    os.truncate(path, 10)
    fetch = Download(path, 0, None, file_size=10)
    fd = writers.open_direct(path)
    assert fd >= 0
    writer = writers.DirectWriter(fd, fetch, buffers.BufferPool())

    async def refuse(views: list[memoryview], offset: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer, "_write", refuse)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.put(b"0123456789")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert writer.closed.is_set() and fetch.written
    assert not writer.done and not fetch.kept
    assert path.read_bytes() == bytes(10)  # indeed not written
