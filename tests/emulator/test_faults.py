"""Fault injection: 500s, 429s, latency and the bandwidth cap, with a seeded random source."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from orfs.emulator.faults import THROTTLE_MAX_MS, THROTTLE_MIN_MS, FaultInjector
from tests.emulator.conftest import InProcess, MakeEmu


async def _all_five(emu: InProcess) -> list[httpx.Response]:
    out = await emu.output("o.txt", b"o\n")  # hooks are never faulted
    return [
        await emu.client.get("files"),
        await emu.upload("a.txt", b"a\n"),
        await emu.client.get(f"files/{out['id']}"),
        await emu.client.get(f"files/{out['id']}/content"),
        await emu.client.delete(f"files/{out['id']}"),
    ]


async def test_fail_rate_1_answers_500_to_every_operation_but_not_hooks(
        make_emu: MakeEmu) -> None:
    emu = await make_emu(fail_rate=1.0)
    for r in await _all_five(emu):
        assert r.status_code == 500
        assert r.json()["error"]["code"] == 500
    assert (await emu.client.get("_emulator/stats")).status_code == 200
    # Faulted requests are counted, and nothing was done.
    assert await emu.stats() == dict.fromkeys(
        ("list", "retrieve", "upload", "delete", "download"), 1)
    assert len(list((emu.config.data_dir / "blobs").iterdir())) == 1  # only the output


async def test_throttle_rate_1_answers_429_with_retry_headers(make_emu: MakeEmu) -> None:
    emu = await make_emu(throttle_rate=1.0)
    for r in await _all_five(emu):
        assert r.status_code == 429
        assert r.json()["error"]["code"] == 429
        assert THROTTLE_MIN_MS <= int(r.headers["retry-after-ms"]) <= THROTTLE_MAX_MS
        assert r.headers["retry-after"] == "1"


async def test_faults_follow_the_injected_random_source(make_emu: MakeEmu) -> None:
    emu = await make_emu(fail_rate=0.3, throttle_rate=0.3, rng=random.Random(7))
    statuses = [(await emu.client.get("files")).status_code for _ in range(40)]
    # The same seed gives the same fates, drawn the same way.
    reference = FaultInjector(fail_rate=0.3, throttle_rate=0.3, rng=random.Random(7))
    expected = []
    for _ in range(40):
        fault = reference.draw()
        expected.append(fault.status if fault else 200)
    assert statuses == expected
    assert {200, 429, 500} <= set(statuses)


async def test_no_faults_configured_draws_nothing(make_emu: MakeEmu) -> None:
    rng = random.Random(3)
    emu = await make_emu(rng=rng)
    state = rng.getstate()
    await emu.client.get("files")
    assert rng.getstate() == state


async def test_latency_is_added_to_operations_not_hooks(make_emu: MakeEmu) -> None:
    emu = await make_emu(latency_ms=150)
    t = time.monotonic()
    await emu.client.get("files")
    assert time.monotonic() - t >= 0.15
    await emu.client.get("nowhere")  # every request, even unknown routes
    assert time.monotonic() - t >= 0.3
    t = time.monotonic()
    await emu.client.get("_emulator/stats")
    assert time.monotonic() - t < 0.15  # hooks get no added latency


async def test_bandwidth_caps_downloads(make_emu: MakeEmu) -> None:
    emu = await make_emu(bandwidth=2 * 1024 * 1024)
    data = b"x" * (1024 * 1024)
    f = await emu.output("o.bin", data)  # hooks are not capped
    t = time.monotonic()
    r = await emu.client.get(f"files/{f['id']}/content")
    elapsed = time.monotonic() - t
    assert r.content == data
    assert 0.4 <= elapsed < 3


async def test_bandwidth_caps_uploads(make_emu: MakeEmu) -> None:
    emu = await make_emu(bandwidth=1024 * 1024)
    t = time.monotonic()
    await emu.upload_ok("a.txt", b"a" * (512 * 1024))
    assert time.monotonic() - t >= 0.4


@pytest.mark.parametrize(("fail", "throttle", "latency"), [(1.5, 0, 0), (0, -0.1, 0), (0, 0, -1)])
def test_bad_fault_settings_are_refused(fail: float, throttle: float, latency: float) -> None:
    with pytest.raises(ValueError):
        FaultInjector(fail_rate=fail, throttle_rate=throttle, latency_ms=latency)
