"""Fault injection: added latency, random 500s and 429s, a bandwidth cap.

Randomness comes from an injectable ``random.Random`` so tests are exact: one
draw per operation request decides its fate (``r < fail_rate`` → 500, else
``r < fail_rate + throttle_rate`` → 429).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import anyio

THROTTLE_MIN_MS = 50
THROTTLE_MAX_MS = 200


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected error answer."""

    status: int
    message: str
    headers: dict[str, str]


class FaultInjector:
    def __init__(self, *, latency_ms: float = 0.0, fail_rate: float = 0.0,
                 throttle_rate: float = 0.0, rng: random.Random | None = None) -> None:
        for name, rate in (("fail_rate", fail_rate), ("throttle_rate", throttle_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        self.latency_ms = latency_ms
        self.fail_rate = fail_rate
        self.throttle_rate = throttle_rate
        self.rng = rng if rng is not None else random.Random()

    async def delay(self) -> None:
        """The added latency of every (non-hook) request."""
        if self.latency_ms > 0:
            await anyio.sleep(self.latency_ms / 1000)

    def draw(self) -> Fault | None:
        """The injected error for one operation request, if any."""
        if self.fail_rate <= 0 and self.throttle_rate <= 0:
            return None  # no draw: a clean run does not consume the random source
        r = self.rng.random()
        if r < self.fail_rate:
            return Fault(500, "injected failure (emulator --fail-rate)", {})
        if r < self.fail_rate + self.throttle_rate:
            wait_ms = self.rng.randint(THROTTLE_MIN_MS, THROTTLE_MAX_MS)
            headers = {"retry-after-ms": str(wait_ms), "Retry-After": "1"}
            return Fault(429, "rate limited (emulator --throttle-rate)", headers)
        return None


class Pacer:
    """Caps one transfer at ``bandwidth`` bytes per second (None: no cap).

    Call ``consumed(n)`` after each chunk; it sleeps until the transfer is back
    under the cap, so a slow transfer can be caught midway.
    """

    def __init__(self, bandwidth: int | None) -> None:
        self.bandwidth = bandwidth
        self._start = time.monotonic()
        self._bytes = 0

    def chunk_size(self, default: int) -> int:
        """A chunk small enough for the transfer to progress smoothly (~20 per second)."""
        if self.bandwidth is None:
            return default
        return max(1, min(default, self.bandwidth // 20))

    async def consumed(self, n: int) -> None:
        if self.bandwidth is None:
            return
        self._bytes += n
        due = self._start + self._bytes / self.bandwidth
        wait = due - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)
