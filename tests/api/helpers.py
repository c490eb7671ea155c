"""Shared pieces of the API client tests: a fake clock, canned answers, a client factory."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import trio

from orfs.api import FilesClient, RetryPolicy

KEY = "sk-or-v1-SECRETSECRETSECRET0123456789"
BASE = "https://api.test/api/v1"

Handler = (Callable[[httpx.Request], httpx.Response]
           | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]])


class FakeClock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await trio.lowlevel.checkpoint()


def policy(clock: FakeClock, **kw: Any) -> RetryPolicy:
    # random() == 1.0: every backoff is its ceiling, so sleeps are predictable.
    return RetryPolicy(sleep=clock.sleep, clock=clock, random=lambda: 1.0, **kw)


def make_client(handler: Handler, clock: FakeClock | None = None, **kw: Any) -> FilesClient:
    clock = clock or FakeClock()
    kw.setdefault("retry", policy(clock))
    return FilesClient(BASE + "/", KEY, transport=httpx.MockTransport(handler), **kw)


def or_file(fid: str = "file_1", filename: str = "a.txt", size: int = 3,
            **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"_shape": "openrouter", "id": fid, "type": "file",
                         "filename": filename, "mime_type": "text/plain", "size_bytes": size,
                         "created_at": "2025-01-01T00:00:00Z", "downloadable": False}
    d.update(extra)
    return d


def json_response(status: int, body: Any, headers: dict[str, str] | None = None
                  ) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"content-type": "application/json", **(headers or {})})


def error_response(status: int, message: str = "nope",
                   headers: dict[str, str] | None = None) -> httpx.Response:
    return json_response(status, {"error": {"code": status, "message": message,
                                            "metadata": {}}, "user_id": None}, headers)
