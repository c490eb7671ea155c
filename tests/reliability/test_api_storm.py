"""429 storms at the client: Retry-After honoured, never a loop hotter than the server
asks, bounded in time. (The mount-level storm is in test_faults_mount.py.)"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import trio

from orfs.api.client import FilesClient
from orfs.api.errors import RateLimited
from orfs.api.retry import INTERACTIVE_RETRY, RetryPolicy
from tests.conftest import EmulatorProcess


@pytest.mark.parametrize("headers,asked", [
    ({"retry-after-ms": "150"}, 0.150),
    ({"Retry-After": "1"}, 1.0),
])
async def test_every_retry_waits_at_least_what_the_server_asked(
        headers: dict[str, str], asked: float) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        if len(times) < 4:
            return httpx.Response(429, headers=headers,
                                  json={"error": {"code": 429, "message": "slow down"}})
        return httpx.Response(200, json={"data": [], "cursor": None, "has_more": False,
                                         "_shape": "openrouter"})

    # A tiny backoff, so only the server's ask can account for the gaps.
    policy = RetryPolicy(initial=0.001, max_delay=0.002, total=30.0)
    async with FilesClient("http://api.test/api/v1", "k" * 20, retry=policy,
                           transport=httpx.MockTransport(handler)) as client:
        with trio.fail_after(20):
            await client.check()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3
    assert all(g >= asked * 0.98 for g in gaps), gaps


def test_a_storm_from_the_emulator_is_bounded_in_requests_and_time(
        emulator_factory: Callable[..., EmulatorProcess]) -> None:
    emu = emulator_factory("--throttle-rate", "1.0", "--seed", "1")

    async def main() -> tuple[int, float]:
        async with FilesClient(emu.url, emu.api_key, read_retry=INTERACTIVE_RETRY) as c:
            t0 = time.monotonic()
            with pytest.raises(RateLimited):
                await c.check()
            return c.stats()["list"], time.monotonic() - t0

    n, elapsed = trio.run(main)
    assert n == emu.stats()["list"] <= INTERACTIVE_RETRY.max_attempts
    assert elapsed <= INTERACTIVE_RETRY.deadline + 1  # type: ignore[operator]
    assert n / elapsed <= 1 / 0.05                    # retry-after-ms is >= 50
    print(f"FIGURES 429-client: {n} requests in {elapsed:.1f}s, then RateLimited")
