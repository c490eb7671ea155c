"""The background upload queue of --uploads async, in the core without the kernel.

Uploads go through `Gate`, a transport in front of the emulator that can hold every
upload until the test lets it go (so what a queued file is can be looked at) or answer
one with a refusal, and counts what reached it.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from starlette.applications import Starlette

from orfs.api.retry import RetryPolicy
from orfs.core.errors import IOFailure, Unsupported
from orfs.core.inodes import ROOT_INODE
from orfs.core.state import JournalEntry, State
from tests.core.harness import Env, asgi


class Gate(httpx.AsyncBaseTransport):
    """Forwards to the emulator; uploads wait for `open` while `closed`, and the next
    answers in `refuse` (status codes) are given instead of forwarding."""

    def __init__(self, app: Starlette) -> None:
        self._inner = asgi(app)
        self.closed = False
        self._open = trio.Event()
        self.refuse: list[int] = []
        self.uploads = 0          # upload requests that reached the emulator
        self.in_flight = 0
        self.most_in_flight = 0

    def open(self) -> None:
        self.closed = False
        self._open.set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        upload = request.method == "POST" and request.url.path.endswith("/files")
        if not upload:
            return await self._inner.handle_async_request(request)
        if self.refuse:
            status = self.refuse.pop(0)
            return httpx.Response(status, json={"error": {"code": status,
                                                          "message": f"refused ({status})"}})
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.closed:
                await self._open.wait()
            self.uploads += 1
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def env(app: Starlette, tmp_path: Path) -> AsyncIterator[Env]:
    async with Env.running(app, tmp_path / "cache", transport=Gate, async_uploads=True,
                           upload_streams=3,
                           client_options={"retry": RetryPolicy(total=0.0,
                                                                max_attempts=1)}) as e:
        yield e


def gate(env: Env) -> Gate:
    assert isinstance(env.transport, Gate)
    return env.transport


async def state_of(env: Env, name: str) -> str:
    ino = await env.path(name)
    xattrs = await env.fs.listxattr(ino)
    if "user.orfs.state" not in xattrs:
        return "remote"
    return (await env.fs.getxattr(ino, "user.orfs.state")).decode()


async def settle(env: Env) -> None:
    """Until nothing is queued or uploading."""
    with trio.fail_after(10):
        while any(True for _ in env.fs.queue.waiting()):
            await trio.sleep(0.01)


async def test_close_returns_before_the_upload_oldest_first_n_at_once(env: Env) -> None:
    gate(env).closed = True
    for i in range(7):
        await env.write_file(f"f{i}.txt", f"bytes {i}\n".encode())
    await trio.sleep(0.1)
    assert gate(env).uploads == 0                 # every close returned, nothing landed
    assert gate(env).in_flight == 3               # --upload-streams 3
    states = [await state_of(env, f"f{i}.txt") for i in range(7)]
    assert states == ["uploading"] * 3 + ["queued"] * 4   # oldest first
    assert await env.read_all("f5.txt") == b"bytes 5\n"   # readable back while queued
    status = env.fs.status()
    assert status["queued"] == 4 and status["uploading"] == 3
    assert status["waiting_count"] == 7
    assert status["waiting_bytes"] == sum(len(f"bytes {i}\n") for i in range(7))
    gate(env).open()
    await settle(env)
    assert gate(env).uploads == 7 and gate(env).most_in_flight == 3
    assert sorted(r.filename for r in env.remote()) == [f"f{i}.txt" for i in range(7)]
    assert [await state_of(env, f"f{i}.txt") for i in range(7)] == ["remote"] * 7
    assert env.fs.queue_stats()["uploaded_files"] == 7
    assert env.fs._state.journal_entries() == []


async def test_close_makes_the_journal_row_queued(env: Env) -> None:
    gate(env).closed = True
    for i in range(4):
        await env.write_file(f"j{i}", b"x")
    rows = {e.filename: e for e in env.fs._state.journal_entries()}
    assert rows["j3"].state == "queued" and rows["j3"].closed is not None
    gate(env).open()
    await settle(env)


async def test_unlink_of_a_queued_file_sends_nothing(env: Env) -> None:
    gate(env).closed = True
    for i in range(3):
        await env.write_file(f"busy{i}", b"b")   # fill the three streams
    await env.write_file("doomed.txt", b"never sent")
    assert await state_of(env, "doomed.txt") == "queued"
    await env.fs.unlink(ROOT_INODE, "doomed.txt")
    gate(env).open()
    await settle(env)
    assert gate(env).uploads == 3
    assert env.remote("doomed.txt") == []
    assert not [p for p in env.fs._staging.iterdir() if p.is_file()]


async def test_rename_of_a_queued_file_renames_its_upload(env: Env) -> None:
    gate(env).closed = True
    for i in range(3):
        await env.write_file(f"busy{i}", b"b")
    await env.write_file("draft.txt", b"final words")
    await env.fs.rename(ROOT_INODE, "draft.txt", ROOT_INODE, "final.txt", 0)
    assert await state_of(env, "final.txt") == "queued"
    gate(env).open()
    await settle(env)
    assert gate(env).uploads == 4                 # one upload, under the final name
    assert env.remote("draft.txt") == []
    assert [r.filename for r in env.remote("final.txt")] == ["final.txt"]
    assert await env.read_all("final.txt") == b"final words"


async def test_rewrite_of_a_queued_file_uploads_its_last_version_once(env: Env) -> None:
    gate(env).closed = True
    for i in range(3):
        await env.write_file(f"busy{i}", b"b")
    await env.write_file("note.txt", b"first")
    ino = await env.path("note.txt")
    fh = await env.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
    assert await state_of(env, "note.txt") == "pending"   # written again: not queued
    await env.fs.write(fh, 0, b"second version")
    await env.close(fh)
    gate(env).open()
    await settle(env)
    assert gate(env).uploads == 4
    [rec] = env.remote("note.txt")
    assert rec.size == len(b"second version")
    assert await env.read_all("note.txt") == b"second version"


async def test_fsync_waits_for_the_upload_and_returns_its_error(env: Env) -> None:
    fh, attrs = await env.fs.create(ROOT_INODE, "refused.bin", 0o644,
                                    os.O_WRONLY | os.O_CREAT)
    await env.fs.write(fh, 0, b"payload")
    gate(env).refuse = [400]
    with pytest.raises(Unsupported):
        await env.fs.fsync(fh)
    assert await state_of(env, "refused.bin") == "failed"
    with pytest.raises(Unsupported):   # asked again: the same truth, no new request
        await env.fs.fsync(fh)
    await env.close(fh)                 # close after a failed fsync: nothing queued
    assert gate(env).refuse == []
    ino = await env.path("refused.bin")
    assert (await env.fs.getxattr(ino, "user.orfs.error")).decode() == "refused (400)"
    status = env.fs.status()
    assert status["failed"] == [{"path": "refused.bin", "error": "refused (400)"}]
    assert await env.read_all("refused.bin") == b"payload"   # bytes kept


async def test_fsync_of_a_queued_file_uploads_it_now(env: Env) -> None:
    fh, _ = await env.fs.create(ROOT_INODE, "synced.txt", 0o644, os.O_WRONLY | os.O_CREAT)
    await env.fs.write(fh, 0, b"durable")
    await env.fs.fsync(fh)
    assert [r.size for r in env.remote("synced.txt")] == [7]
    await env.close(fh)
    await settle(env)
    assert len(env.remote("synced.txt")) == 1 and gate(env).uploads == 1


async def test_a_refusal_after_close_is_failed_with_the_bytes_kept(env: Env) -> None:
    gate(env).refuse = [400]
    await env.write_file("bad.csv", b"a,b\n")
    await settle(env)
    assert await state_of(env, "bad.csv") == "failed"
    status = env.fs.status()
    assert status["failed"] == [{"path": "bad.csv", "error": "refused (400)"}]
    assert "next_try" not in status["failed"][0]          # a refusal is not retried alone
    assert await env.read_all("bad.csv") == b"a,b\n"
    [row] = env.fs._state.journal_entries()
    assert row.state == "failed" and row.error == "refused (400)"
    # A later write-and-close tries again.
    fh = await env.fs.open(await env.path("bad.csv"), os.O_WRONLY | os.O_APPEND)
    await env.fs.write(fh, 4, b"1,2\n")
    await env.close(fh)
    await settle(env)
    assert [r.size for r in env.remote("bad.csv")] == [8]


async def test_a_transient_failure_is_tried_again_later(env: Env) -> None:
    gate(env).refuse = [503]
    await env.write_file("flaky.txt", b"flaky")
    await settle(env)
    failures = env.fs.status()["failed"]
    assert isinstance(failures, list) and len(failures) == 1
    failed = failures[0]
    assert failed["path"] == "flaky.txt"
    next_try = failed["next_try"]
    assert isinstance(next_try, float)
    # 5 s after the first failure, jittered in its upper half.
    assert 2.5 - 0.5 <= next_try - env.fs.queue._wall() <= 5.0 + 0.5
    # Move the queue's wall clock past the next try: it uploads by itself.
    later = next_try + 1
    env.fs.queue._wall = lambda: later
    env.fs.queue._wake()
    with trio.fail_after(10):
        while await state_of(env, "flaky.txt") != "remote":
            await trio.sleep(0.01)
    assert [r.size for r in env.remote("flaky.txt")] == [5]


async def test_a_transient_failure_is_tried_again_by_the_next_mount(
        app: Starlette, tmp_path: Path) -> None:
    # The next try is in the journal: a mount stopped before it (a reboot) leaves it to
    # the next mount, which tries it when due, with no `orfs sync --retry`; a refusal
    # is not tried again by itself.
    cache = tmp_path / "cache"
    no_retries = {"retry": RetryPolicy(total=0.0, max_attempts=1)}
    async with Env.running(app, cache, transport=Gate, async_uploads=True,
                           client_options=no_retries) as first:
        gate(first).refuse = [503, 400]
        await first.write_file("flaky.txt", b"flaky")
        await settle(first)
        await first.write_file("refused.txt", b"refused")
        await settle(first)
        assert first.fs.status()["failed_count"] == 2
    state = State(cache)
    rows = {r.filename: r for r in state.journal_entries()}
    state.close()
    assert rows["flaky.txt"].next_try is not None and rows["refused.txt"].next_try is None
    async with Env.running(app, cache, async_uploads=True) as second:
        second.fs.queue._wall = lambda: rows["flaky.txt"].next_try + 1  # type: ignore[operator]
        todo = second.fs.restore_journal()
        assert todo == []  # nothing pending: both are failed
        await second.fs.resume_uploads(todo)
        with trio.fail_after(10):
            while not second.remote("flaky.txt"):
                await trio.sleep(0.01)
        assert [r.size for r in second.remote("flaky.txt")] == [5]
        assert second.remote("refused.txt") == []
        assert await state_of(second, "refused.txt") == "failed"


async def test_retry_failed_queues_every_failed_upload(env: Env) -> None:
    gate(env).refuse = [400, 400]
    await env.write_file("a.txt", b"a")
    await env.write_file("b.txt", b"b")
    await settle(env)
    assert env.fs.status()["failed_count"] == 2
    assert env.fs.retry_failed() == 2
    await settle(env)
    assert env.fs.status()["failed_count"] == 0
    assert sorted(r.filename for r in env.remote()) == ["a.txt", "b.txt"]
    assert env.fs.queue_stats()["retry_requests"] == 1


async def test_queued_files_hold_no_descriptors(env: Env) -> None:
    gate(env).closed = True
    before = len(os.listdir("/proc/self/fd"))
    for i in range(60):
        await env.write_file(f"m{i:03}.txt", b"m" * 10)
    after = len(os.listdir("/proc/self/fd"))
    assert sum(1 for _ in env.fs.queue.waiting()) == 60
    assert after - before <= 6      # the three uploads in flight, not one per file
    gate(env).open()
    await settle(env)


async def test_a_queue_left_by_a_crash_is_uploaded_once_by_the_next_mount(
        app: Starlette, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    async with Env.running(app, cache, transport=Gate, async_uploads=True) as first:
        gate(first).closed = True
        for i in range(12):
            await first.write_file(f"c{i:02}.txt", f"crash {i}".encode())
        await trio.sleep(0.05)
        # The mount dies here: nothing landed, 8 were being sent.
        assert gate(first).uploads == 0
    state = State(cache)
    rows = state.journal_entries()
    state.close()
    assert sorted(r.state for r in rows) == ["queued"] * 4 + ["uploading"] * 8
    async with Env.running(app, cache, async_uploads=True) as second:
        todo = second.fs.restore_journal()
        assert len(todo) == 12
        await second.fs.resume_uploads(todo)
        await settle(second)
        names = sorted(r.filename for r in second.remote())
        assert names == [f"c{i:02}.txt" for i in range(12)]   # each exactly once
        assert await second.read_all("c07.txt") == b"crash 7"


async def test_sync_mode_has_no_queue(app: Starlette, tmp_path: Path) -> None:
    async with Env.running(app, tmp_path / "cache", transport=Gate, client_options={
            "retry": RetryPolicy(total=0.0, max_attempts=1)}) as env:
        gate(env).refuse = [503]
        with pytest.raises(IOFailure):
            await env.write_file("now.txt", b"now")   # close waits and gets the error
        assert env.fs.status()["failed"] == [{"path": "now.txt", "error": "refused (503)"}]
        await env.write_file("ok.txt", b"ok")
        assert [r.filename for r in env.remote()] == ["ok.txt"]
        assert env.fs.status()["queued"] == 0


# Generous: a queued file costs its LocalFile record, its place in the namespace
# overlay and the queue's serial (measured about 2.9 KiB); fails on a regression that
# keeps, say, a descriptor, a buffer or a task per queued file.
QUEUED_BYTES_PER_FILE = 6 * 1024


async def test_10000_queued_files_hold_no_descriptors_and_little_memory(
        app: Starlette, tmp_path: Path) -> None:
    n = 10_000
    cache = tmp_path / "cache"
    staging = cache / "staging"
    staging.mkdir(parents=True)
    state = State(cache)
    closed = time.time() + 5
    for i in range(n):
        staged = staging / f"{i}-queued"
        staged.write_bytes(b"q%d\n" % i)
        state.journal_add(JournalEntry(key=staged.name, filename=f"q/{i:05}.txt",
                                       staged=str(staged), state="queued",
                                       created=1000.0 + i, closed=closed))
    state.close()
    async with Env.running(app, cache, transport=Gate, async_uploads=True) as env:
        gate(env).closed = True
        fds = len(os.listdir("/proc/self/fd"))
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            await env.fs.resume_uploads(env.fs.restore_journal())
            await trio.sleep(0.2)
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert len(os.listdir("/proc/self/fd")) - fds <= 12   # 8 streams, not 10,000
        assert gate(env).in_flight == 8
        assert grown / n < QUEUED_BYTES_PER_FILE, grown / n
        status = env.fs.status()
        assert status["queued"] == n - 8 and status["uploading"] == 8
        # The oldest first: the ones on the wire are the first eight rows.
        on_wire = sorted(lf.path[-1] for lf in env.fs.queue.waiting()
                         if lf.state == "uploading")
        assert on_wire == [f"{i:05}.txt" for i in range(8)]
        print(f"FIGURES {n} queued files: {grown / n:.0f} bytes each, "
              f"{len(os.listdir('/proc/self/fd')) - fds} more descriptors")


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_refusal_by_the_close_time_check_sends_and_queues_nothing(
        app: Starlette, tmp_path: Path, mode: str) -> None:
    async with Env.running(app, tmp_path / "cache", transport=Gate,
                           async_uploads=mode == "async") as env:
        def refuse(local: object) -> None:
            raise Unsupported("refused here")

        env.fs.queue.check = refuse  # type: ignore[method-assign]
        with pytest.raises(Unsupported):
            await env.write_file("checked.bin", b"checked\n")
        await trio.sleep(0.05)
        assert gate(env).uploads == 0 and env.fs.status()["queued"] == 0
        assert await state_of(env, "checked.bin") == "failed"
        assert env.fs.status()["failed"] == [{"path": "checked.bin", "error": "refused here"}]
        assert await env.read_all("checked.bin") == b"checked\n"
        assert env.fs.retry_failed() == 0           # a retry is checked too
        assert gate(env).uploads == 0
        env.fs.queue.check = lambda local: None     # type: ignore[method-assign]
        assert env.fs.retry_failed() == 1
        await settle(env)
        assert [r.filename for r in env.remote()] == ["checked.bin"]


async def test_a_held_temporary_name_counts_as_waiting_until_it_is_queued(
        app: Starlette, tmp_path: Path) -> None:
    async with Env.running(app, tmp_path / "cache", async_uploads=True, held_uploads=True,
                           temp_grace=0.3) as env:
        await env.write_file(".data.ab12CD", b"held a moment")   # rsync's temporary name
        status = env.fs.status()
        assert status["waiting"] == [{"path": ".data.ab12CD", "size": 13, "state": "held"}]
        assert status["waiting_count"] == 1 and status["waiting_bytes"] == 13
        with trio.fail_after(10):
            while env.fs.status()["waiting_count"]:
                await trio.sleep(0.02)
        assert [r.filename for r in env.remote()] == [".data.ab12CD"]


async def test_a_rewrite_during_its_upload_is_made_durable_and_uploaded_after_it(
        env: Env) -> None:
    gate(env).closed = True
    await env.write_file("moving.txt", b"version one")
    await trio.sleep(0.05)
    assert await state_of(env, "moving.txt") == "uploading"
    fh = await env.fs.open(await env.path("moving.txt"), os.O_WRONLY | os.O_TRUNC)
    await env.fs.write(fh, 0, b"version two, longer")
    await env.close(fh)
    [row] = env.fs._state.journal_entries()
    assert row.state == "uploading" and row.closed is not None   # durable, not lost
    gate(env).open()
    with trio.fail_after(10):
        while await state_of(env, "moving.txt") != "remote":
            await trio.sleep(0.01)
    [rec] = env.remote("moving.txt")              # the first version was replaced
    assert rec.size == len(b"version two, longer")
    assert gate(env).uploads == 2
    assert await env.read_all("moving.txt") == b"version two, longer"
