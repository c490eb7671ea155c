"""`TaskOwner`: a nursery that a part of the core owns while its `run` runs.

The content cache (downloads), the streamed uploads and the held uploads each start
tasks from synchronous code (a read, a write, a flush) that must outlive the request
that started them. Each owns a nursery for that, opened by `run` and closed when `run`
is cancelled at unmount; `Filesystem.run` runs them all. Without a running owner (unit
tests of a single part), `running` is False and the part does its work inline or not
at all, as its own docs say.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class TaskOwner:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a task in the owned nursery (only while `run` runs)."""
        if self._nursery is None:
            raise RuntimeError("no task owner is running")
        self._nursery.start_soon(fn, *args)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the tasks until cancelled; they are cancelled with it."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
