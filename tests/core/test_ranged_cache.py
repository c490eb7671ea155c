"""The ranged cache over a fake client: what a read fetches (request and byte counts,
no timings), what a remount keeps, and the fallback for a server that ignores Range."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from orfs.core.cache import ContentUnavailable, readahead
from orfs.core.cache.ranges import RangeSet
from tests.core.test_content import (
    FakeClient,
    FakeStream,
    KiB,
    MiB,
    asked,
    blob,
    each_byte_once,
    read_all,
    remote,
    running,
    settle,
)

BLOCK = readahead.BLOCK


async def test_a_tail_of_a_big_file_is_one_request_of_one_block(tmp_path: Path) -> None:
    data = blob(64 * MiB + 123)
    client = FakeClient({"f": data})
    async with running(tmp_path, client, streams=4) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await h.read(len(data) - 64 * KiB, 64 * KiB) == data[-64 * KiB:]
        h.close()
        await settle(cache)
    (span,) = asked(client, "f")
    assert span[1] == len(data) and span[1] - span[0] <= BLOCK + 123


async def test_random_reads_fetch_only_their_blocks(tmp_path: Path) -> None:
    data = blob(16 * MiB)
    client = FakeClient({"f": data})
    rng = random.Random(3)
    offsets = [rng.randrange(0, len(data) - 4096) for _ in range(20)]
    async with running(tmp_path, client, streams=4) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        for off in offsets:
            assert await h.read(off, 4096) == data[off:off + 4096]
        h.close()
        await settle(cache)
    spans = asked(client, "f")
    assert len(spans) <= 20
    assert sum(b - a for a, b in spans) <= 20 * 2 * BLOCK  # a read may straddle two
    assert not cache.is_cached("f")


async def test_a_sequential_read_fetches_each_byte_once_and_ends_complete(
        tmp_path: Path) -> None:
    data = blob(40 * MiB + 5)
    client = FakeClient({"f": data})
    async with running(tmp_path, client, streams=4) as (cache, state):
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h, 128 * KiB) == data
        h.close()
        await settle(cache)
        assert cache.is_cached("f")
        rec = state.content_get("f")
        assert rec is not None and rec.complete
    assert each_byte_once(client, "f")
    # The window grew: a few big parts, not 320 reads' worth of requests.
    assert len(client.calls) <= 20
    assert max(b - a for a, b in asked(client, "f")) >= 4 * readahead.PART_MIN


class LinkStream:
    """A body over a link: ``chunk``-byte pieces at ``rate`` bytes a second, counting
    how many bodies are being received at once."""

    def __init__(self, link: LinkClient, data: bytes, total: int) -> None:
        self._link = link
        self._data = data
        self.size: int | None = len(data)
        self.total_size: int | None = total
        self.ranged: bool | None = True

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        link = self._link
        link.receiving += 1
        link.most_receiving = max(link.most_receiving, link.receiving)
        try:
            for pos in range(0, len(self._data), link.chunk):
                piece = self._data[pos:pos + link.chunk]
                await trio.sleep(len(piece) / link.rate)
                yield piece
        finally:
            link.receiving -= 1


class LinkClient(FakeClient):
    """A service at a distance: each request waits ``rtt`` for its first byte, each
    body then arrives at ``rate``. Counts the bodies arriving at once and the requests
    open at once, and how many requests had closed when each was sent."""

    def __init__(self, blobs: dict[str, bytes], rtt: float, rate: float) -> None:
        super().__init__(blobs)
        self.rtt = rtt
        self.rate = rate
        self.chunk = 64 * KiB
        self.closed = 0  # requests closed so far
        self.closed_at_send: list[int] = []  # ... when each request was sent
        self.receiving = 0
        self.most_receiving = 0
        self.open = 0  # requests sent and not closed: connections in use
        self.most_open = 0

    @asynccontextmanager
    async def download(self, file_id: str, offset: int = 0, length: int | None = None
                       ) -> AsyncIterator[LinkStream]:  # type: ignore[override]
        self.calls.append((file_id, offset))
        self.lengths.append(length)
        self.closed_at_send.append(self.closed)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await trio.sleep(self.rtt)
            data = self.blobs[file_id]
            end = len(data) if length is None else min(len(data), offset + length)
            yield LinkStream(self, data[offset:end], len(data))
        finally:
            self.open -= 1
            self.closed += 1


async def test_parallel_streams_run_at_once_for_one_sequential_reader(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    data = blob(64 * MiB)
    client = LinkClient({"f": data}, rtt=0.040, rate=16e6)
    async with running(tmp_path, client, streams=4) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h, MiB) == data
        h.close()
        await settle(cache)
    # Several bodies arrive at once. At most --download-streams requests hold the
    # file's streams; each may have handed its stream on in its last round trip, so
    # at most twice that many are open.
    assert client.most_receiving >= 2
    assert client.most_open <= 2 * 4
    assert each_byte_once(client, "f")


async def test_two_readers_share_what_is_in_flight(tmp_path: Path) -> None:
    data = blob(20 * MiB)
    client = FakeClient({"f": data}, delay=0.001)
    async with running(tmp_path, client, streams=4) as (cache, _):

        async def reader() -> bytes:
            h = await cache.open(remote("f", len(data)))
            try:
                return await read_all(h, MiB)
            finally:
                h.close()

        got: list[bytes] = []

        async def run_one() -> None:
            got.append(await reader())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_one)
            nursery.start_soon(run_one)
        await settle(cache)
    assert got == [data, data]
    assert each_byte_once(client, "f")


async def test_a_remount_serves_present_ranges_and_fetches_only_the_rest(
        tmp_path: Path) -> None:
    data = blob(10 * MiB)
    client = FakeClient({"f": data})
    async with running(tmp_path, client) as (cache, state):
        h = await cache.open(remote("f", len(data)))
        assert await h.read(0, 3 * MiB) == data[:3 * MiB]
        assert await h.read(8 * MiB, MiB) == data[8 * MiB:9 * MiB]
        h.close()
        await settle(cache)
    first = RangeSet(asked(client, "f"))
    client2 = FakeClient({"f": data})
    async with running(tmp_path, client2) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await h.read(0, 3 * MiB) == data[:3 * MiB]
        assert await h.read(8 * MiB, MiB) == data[8 * MiB:9 * MiB]
        assert client2.calls == []  # all present: no request
        assert await read_all(h, MiB) == data
        h.close()
        await settle(cache)
        assert cache.is_cached("f")
    # The second mount asked only for what the first did not have.
    for a, b in asked(client2, "f"):
        assert not any(first.covers(x, x + 1) for x in (a, b - 1))


async def test_a_failed_range_is_eio_for_its_reader_only(tmp_path: Path) -> None:
    data = blob(8 * MiB)
    client = FakeClient({"f": data})
    async with running(tmp_path, client, streams=4) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        client.fail_at["f"] = [4 * MiB + 1000, 4 * MiB + 1000]  # the resume breaks too
        with pytest.raises(ContentUnavailable):
            await h.read(4 * MiB, 64 * KiB)
        # Other ranges, and the same range tried again, work.
        assert await h.read(0, 64 * KiB) == data[:64 * KiB]
        assert await h.read(4 * MiB, 64 * KiB) == data[4 * MiB:4 * MiB + 64 * KiB]
        h.close()
        await settle(cache)
        entry = cache._entries["f"]
        assert entry.present.covers(0, 64 * KiB)


class NoRangesClient(FakeClient):
    """A server that ignores Range: every answer is the whole file (200), which the
    real client cuts to the range asked for, and says so (``ranged`` False)."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        super().__init__(blobs)
        self.sent = 0

    @asynccontextmanager
    async def download(self, file_id: str, offset: int = 0, length: int | None = None
                       ) -> AsyncIterator[FakeStream]:
        async with super().download(file_id, offset, length) as stream:
            stream.ranged = False if (offset or length is not None) else None
            self.sent += len(self.blobs[file_id])  # the whole body went over the wire
            yield stream


async def test_a_server_ignoring_ranges_gives_the_same_bytes_in_one_stream(
        tmp_path: Path) -> None:
    data = blob(6 * MiB + 7)
    client = NoRangesClient({"f": data})
    async with running(tmp_path, client, streams=4) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await h.read(3 * MiB, 4096) == data[3 * MiB:3 * MiB + 4096]
        assert await read_all(h, 128 * KiB) == data
        h.close()
        await settle(cache)
        assert cache.statistics()["ranges_off"] == 1
        assert cache.is_cached("f")
    # Once ranges were found off: a gap is fetched in one stream to what is there,
    # not in parts (each part would cost the whole file again).
    assert len(client.calls) <= 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * MiB), st.integers(1, 300 * KiB)),
                min_size=1, max_size=12),
       st.integers(1, 4))
def test_reads_at_random_offsets_match_the_file(
        tmp_path_factory: pytest.TempPathFactory, reads: list[tuple[int, int]],
        streams: int) -> None:
    data = blob(3 * MiB + 777, seed=5)
    root = tmp_path_factory.mktemp("c")

    async def main() -> None:
        client = FakeClient({"f": data})
        async with running(root, client, streams=streams) as (cache, _):
            h = await cache.open(remote("f", len(data)))
            for off, size in reads:
                assert await h.read(off, size) == data[off:off + size]
            h.close()
            await settle(cache)
        spans = sorted(asked(client, "f"))
        for (_, b), (c, _) in zip(spans, spans[1:], strict=False):
            assert b <= c  # no byte asked twice

    trio.run(main)


async def test_the_next_part_is_asked_for_a_round_trip_before_a_stream_ends(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    # 40 ms and 16 MB/s per connection (the WAN profile), in virtual time: each stream
    # sends its next request while its current body is still arriving.
    data = blob(64 * MiB)
    client = LinkClient({"f": data}, rtt=0.040, rate=16e6)
    async with running(tmp_path, client, streams=4) as (cache, _):
        h = await cache.open(remote("f", len(data)))
        assert await read_all(h, MiB) == data
        h.close()
        await settle(cache)
    assert each_byte_once(client, "f")
    assert client.most_open <= 2 * 4
    # Without the hand-on, a stream is free only once its request has closed, so the
    # k-th request (from 1) is sent after at least k - 4 have closed; with it, some are
    # sent earlier, while the request they follow is still open.
    early = [k for k, closed in enumerate(client.closed_at_send, 1) if k - 4 > closed]
    assert early
