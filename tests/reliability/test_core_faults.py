"""Faults injected under the filesystem core (no kernel): a transport wrapped around the
in-process emulator decides, request by request, to pass it, fail it before or after the
emulator applied it, hang, or answer something that breaks the contract.

Covers: exactly-once uploads over ambiguous failures, the journal's crash recovery, API
responses that break the contract (EIO and a log line, never a crash), a remote deletion
under a reader, and the API going down under a warm cache.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pyfuse3
import pytest
import trio
from starlette.applications import Starlette

from orfs.api.retry import RetryPolicy
from orfs.core import errors as ce
from orfs.core.fs import INTERRUPTED
from orfs.core.inodes import ROOT_INODE, FileKey
from orfs.core.namespace import API_DOWN_BACKOFF, PROBE_INTERVAL
from orfs.core.state import JournalEntry, State
from orfs.emulator.store import Scope
from orfs.fuse.ops import Operations
from tests.core import harness
from tests.core.harness import app, env_fixture

__all__ = ["app"]  # the emulator fixture of tests.core.harness

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64

# A fast retry policy: the same rules, milliseconds instead of seconds.
FAST = RetryPolicy(initial=0.005, max_delay=0.02, total=0.5, deadline=5.0)


def op_of(request: httpx.Request) -> str:
    path = request.url.path
    if request.method == "POST":
        return "upload"
    if request.method == "DELETE":
        return "delete"
    if path.endswith("/content"):
        return "download"
    return "list" if path.rstrip("/").endswith("/files") else "retrieve"


class _Body(httpx.AsyncByteStream):
    """An unread body (httpx reads a `content=` body at once, which a streaming
    download cannot consume again)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), 65536):
            yield self.data[i:i + 65536]


def answer(status: int, headers: object, body: bytes) -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=_Body(body))  # type: ignore[arg-type]


class Faults(httpx.AsyncBaseTransport):
    """Per operation, a queue of actions (then `default[op]`):

    pass           forward to the emulator
    500-before     answer 500 without forwarding (nothing applied)
    500-after      forward (applied), then answer 500
    timeout-after  forward (applied), then raise ReadTimeout
    garbage-after  forward (applied), then answer 200 with a body that is not JSON
    garbage        answer 200 "{nope" without forwarding
    missing        answer 200 with a file object missing its fields
    truncate       forward, then cut the body to half under the full Content-Length
    overlong       forward, then send more bytes than Content-Length says
    down           raise ConnectError (the API is unreachable)
    """

    def __init__(self, app: Starlette) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.plan: dict[str, list[str]] = defaultdict(list)
        self.default: dict[str, str] = defaultdict(lambda: "pass")
        self.seen: Counter[str] = Counter()

    def down(self, is_down: bool = True) -> None:
        for op in ("list", "retrieve", "upload", "delete", "download"):
            self.default[op] = "down" if is_down else "pass"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        op = op_of(request)
        self.seen[op] += 1
        action = self.plan[op].pop(0) if self.plan[op] else self.default[op]
        if action == "down":
            raise httpx.ConnectError("connection refused (injected)", request=request)
        if action == "500-before":
            return httpx.Response(500, json={"error": {"code": 500, "message": "injected"}})
        if action == "garbage":
            return httpx.Response(200, content=b"{nope",
                                  headers={"content-type": "application/json"})
        if action == "missing":
            return httpx.Response(200, json={"id": "or_file_x", "data": [{"id": "x"}]})
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if action == "pass":
            return answer(response.status_code, response.headers, body)
        if action == "500-after":
            return httpx.Response(500, json={"error": {"code": 500, "message": "injected"}})
        if action == "timeout-after":
            raise httpx.ReadTimeout("timed out (injected)", request=request)
        if action == "garbage-after":
            return httpx.Response(200, content=b"{nope",
                                  headers={"content-type": "application/json"})
        headers = dict(response.headers)
        if action == "truncate":
            return answer(response.status_code, headers, body[:len(body) // 2])
        if action == "overlong":
            return answer(response.status_code, headers, body + b"extra bytes")
        raise AssertionError(action)


class Env(harness.Env):
    """The core over a `Faults` transport, with fast retries."""

    @property
    def faults(self) -> Faults:
        assert isinstance(self.transport, Faults)
        return self.transport


# The core here: the faults under its client, which retries fast.
FAULTY: dict[str, Any] = {"transport": Faults,
                          "client_options": {"retry": FAST, "read_retry": FAST}}


def make_env(app: Starlette, cache: Path) -> contextlib.AbstractAsyncContextManager[Env]:
    return Env.running(app, cache, **FAULTY)


env = env_fixture(Env, **FAULTY)


# ---- exactly-once uploads --------------------------------------------------------------

@pytest.mark.parametrize("failure", ["500-after", "timeout-after", "garbage-after"])
async def test_an_upload_that_landed_despite_the_error_is_adopted_not_sent_again(
        env: Env, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    env.faults.plan["upload"] = [failure]
    with caplog.at_level(logging.INFO):
        ino = await env.write_file("a.pdf", PDF)
    assert env.faults.seen["upload"] == 1          # never sent twice
    [rec] = env.remote("a.pdf")
    key = env.fs.inodes.key_of(ino)
    assert key == FileKey(rec.id)                  # bound to the file that landed
    assert await env.read_all("a.pdf") == PDF
    assert "may have been applied" in caplog.text and "adopting" in caplog.text


async def test_an_ambiguous_failure_that_did_not_land_is_sent_again_once(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.faults.plan["upload"] = ["500-before", "500-before"]
    with caplog.at_level(logging.INFO):
        await env.write_file("b.pdf", PDF)
    assert env.faults.seen["upload"] == 3
    assert env.faults.seen["list"] >= 2           # looked before each re-send
    assert len(env.remote("b.pdf")) == 1
    assert caplog.text.count("did not land; sending it again") == 2


async def test_rounds_are_bounded_and_the_bytes_stay(env: Env) -> None:
    env.faults.default["upload"] = "500-before"
    with pytest.raises(ce.IOFailure):
        await env.write_file("c.pdf", PDF)
    assert env.faults.seen["upload"] == 4          # landed.MAX_ROUNDS
    assert env.remote("c.pdf") == []
    assert await env.read_all("c.pdf") == PDF      # staged, readable, failed
    ino = (await env.fs.lookup(ROOT_INODE, "c.pdf")).ino
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"


async def test_when_the_check_cannot_list_nothing_is_sent_again(env: Env) -> None:
    await env.fs.opendir(ROOT_INODE)               # a fresh listing: create needs none
    env.faults.plan["upload"] = ["500-after"]
    env.faults.plan["list"] = ["down"] * 50
    with pytest.raises(ce.IOFailure):
        await env.write_file("d.pdf", PDF)
    assert env.faults.seen["upload"] == 1
    assert len(env.remote("d.pdf")) == 1           # it had landed: no duplicate made
    assert await env.read_all("d.pdf") == PDF      # and the bytes stay local


async def test_an_older_file_of_the_same_name_and_size_is_never_adopted(env: Env) -> None:
    old = env.app.state.emulator.store.add_bytes(Scope(), PDF, filename="e.pdf",
                                                 mime_type="application/pdf",
                                                 downloadable=False)
    await env.fs.opendir(ROOT_INODE)               # the listing knows it
    env.faults.plan["upload"] = ["500-before"]
    fh, _ = await env.fs.create(ROOT_INODE, "e2.pdf", 0o644, os.O_WRONLY | os.O_CREAT)
    await env.fs.release(fh)
    # Replace e.pdf (same name, same size) through O_TRUNC: the old id must survive
    # the check and be deleted only after the new upload.
    ino = (await env.fs.lookup(ROOT_INODE, "e.pdf")).ino
    fh = await env.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
    await env.fs.write(fh, 0, PDF)
    await env.fs.flush(fh)
    await env.fs.release(fh)
    [rec] = env.remote("e.pdf")
    assert rec.id != old.id
    assert env.faults.seen["upload"] == 2


# ---- the journal: crash recovery -------------------------------------------------------

def _stage(cache: Path, name: str, data: bytes, *, state: str, closed: bool,
           attempted: float | None) -> None:
    st = State(cache)
    staging = cache / "staging"
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = staging / f"k-{name}"
    path.write_bytes(data)
    now = time.time()
    st.journal_add(JournalEntry(key=f"k-{name}", filename=name, staged=str(path),
                                state=state, created=now - 5,  # type: ignore[arg-type]
                                closed=now if closed else None, attempted=attempted))
    st.close()


async def test_resume_adopts_an_upload_that_landed_before_the_crash(
        app: Starlette, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    t = time.time()
    _stage(cache, "landed.pdf", PDF, state="uploading", closed=True, attempted=t)
    rec = app.state.emulator.store.add_bytes(Scope(), PDF, filename="landed.pdf",
                                             mime_type="application/pdf", downloadable=False)
    async with make_env(app, cache) as env:
        todo = env.fs.restore_journal()
        await env.fs.resume_uploads(todo)
        assert env.faults.seen["upload"] == 0
        assert [r.id for r in env.remote("landed.pdf")] == [rec.id]
        assert await env.read_all("landed.pdf") == PDF
        assert env.fs.status()["pending"] == 0
    assert State(cache).journal_entries() == []


async def test_resume_sends_an_upload_that_had_not_landed_exactly_once(
        app: Starlette, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _stage(cache, "sent.pdf", PDF, state="uploading", closed=True, attempted=time.time())
    _stage(cache, "queued.pdf", PDF + b"2", state="pending", closed=True, attempted=None)
    async with make_env(app, cache) as env:
        await env.fs.resume_uploads(env.fs.restore_journal())
        assert env.faults.seen["upload"] == 2
        assert len(env.remote("sent.pdf")) == 1 and len(env.remote("queued.pdf")) == 1
        assert await env.read_all("queued.pdf") == PDF + b"2"


async def test_a_file_still_being_written_at_the_crash_is_kept_not_uploaded(
        app: Starlette, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _stage(cache, "torn.pdf", PDF[:1000], state="pending", closed=False, attempted=None)
    async with make_env(app, cache) as env:
        todo = env.fs.restore_journal()
        assert todo == []
        await env.fs.resume_uploads(todo)
        assert env.faults.seen["upload"] == 0
        ino = (await env.fs.lookup(ROOT_INODE, "torn.pdf")).ino
        assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"
        assert await env.fs.getxattr(ino, "user.orfs.error") == INTERRUPTED.encode()
        assert await env.read_all("torn.pdf") == PDF[:1000]
        # Writing and closing it again uploads it.
        fh = await env.fs.open(ino, os.O_WRONLY)
        await env.fs.write(fh, 1000, PDF[1000:])
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert len(env.remote("torn.pdf")) == 1


async def test_a_write_after_close_unseals_the_journal_entry(env: Env, tmp_path: Path) -> None:
    env.faults.default["upload"] = "500-before"
    with pytest.raises(ce.IOFailure):
        await env.write_file("w.pdf", PDF)
    [entry] = env.fs._state.journal_entries()
    assert entry.closed is not None and entry.attempted is not None
    ino = (await env.fs.lookup(ROOT_INODE, "w.pdf")).ino
    fh = await env.fs.open(ino, os.O_WRONLY)
    await env.fs.write(fh, 0, b"%PDF-1.5")
    [entry] = env.fs._state.journal_entries()
    assert entry.closed is None and entry.state == "pending"
    await env.fs.release(fh)


# ---- API answers that break the contract: EIO and a log line -------------------------

@pytest.mark.parametrize("action", ["garbage", "missing"])
async def test_a_bad_listing_is_eio_with_a_log_line(env: Env, action: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    env.faults.default["list"] = action
    ops = Operations(env.fs)
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.opendir(ROOT_INODE, None)  # type: ignore[arg-type]
    assert info.value.errno == errno.EIO
    assert any(r.levelno == logging.WARNING and "opendir -> EIO" in r.getMessage()
               for r in caplog.records)
    env.faults.default["list"] = "pass"
    env.clock.now += API_DOWN_BACKOFF + 1
    await ops.opendir(ROOT_INODE, None)  # type: ignore[arg-type]  # and then it works


async def test_a_bad_retrieve_is_eio_and_the_mount_goes_on(env: Env) -> None:
    fid = env.app.state.emulator.store.add_bytes(
        Scope(), b"x,y\n1,2\n", filename="r.csv", mime_type="text/csv", downloadable=True).id
    ops = Operations(env.fs)
    ino = (await env.fs.lookup(ROOT_INODE, "r.csv")).ino
    env.clock.now += 11                            # attributes expired
    env.faults.plan["retrieve"] = ["missing"]
    env.faults.plan["list"] = ["garbage"]
    # The last known attributes are served (the API failed, the file did not change).
    attrs = await ops.getattr(ino, None)  # type: ignore[arg-type]
    assert attrs.st_size == 8
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getxattr(env.fs.inodes.inode_for(FileKey("nope")), b"user.openrouter.id",
                           None)  # type: ignore[arg-type]
    assert info.value.errno in (errno.EIO, errno.ENOENT)
    env.clock.now += API_DOWN_BACKOFF + 1
    assert await env.read_all("r.csv") == b"x,y\n1,2\n"
    assert fid


async def test_a_truncated_download_is_resumed_and_never_served_torn(env: Env) -> None:
    data = os.urandom(3 * 1024 * 1024)
    env.app.state.emulator.store.add_bytes(Scope(), data, filename="t.bin",
                                           mime_type="application/octet-stream",
                                           downloadable=True)
    env.faults.plan["download"] = ["truncate"]     # once: the resume (Range) heals it
    assert await env.read_all("t.bin") == data


@pytest.mark.parametrize("action", ["truncate", "overlong"])
async def test_a_download_that_keeps_breaking_is_eio_never_wrong_bytes(
        env: Env, action: str, caplog: pytest.LogCaptureFixture) -> None:
    """A body cut short of its Content-Length, or longer than it, on every attempt:
    each read returns the right bytes (those that arrived) or EIO, never other bytes,
    never hangs; nothing torn is kept in the cache; the log says what went wrong (an
    overlong body of a ranged request has every byte asked for: the extra is dropped,
    and logged)."""
    caplog.set_level(logging.INFO, logger="orfs")
    data = os.urandom(2 * 1024 * 1024)
    env.app.state.emulator.store.add_bytes(Scope(), data, filename="u.bin",
                                           mime_type="application/octet-stream",
                                           downloadable=True)
    env.faults.default["download"] = action
    ino = (await env.fs.lookup(ROOT_INODE, "u.bin")).ino
    fh = await env.fs.open(ino, os.O_RDONLY)
    failures = 0
    try:
        with trio.fail_after(10):
            for off in (len(data) - 4096, 0, len(data) // 2):
                try:
                    got = await env.fs.read(fh, off, 4096)
                except ce.IOFailure:
                    failures += 1
                else:
                    assert got == data[off:off + 4096]
    finally:
        await env.fs.release(fh)
    if action == "truncate":
        assert failures >= 1                       # the second half never arrived
    # An overlong body is found after the readers had their bytes: the download task
    # logs it on its own time, so wait for the line (bounded).
    said = "failed" if action == "truncate" else "more bytes than"
    with trio.move_on_after(5):
        while not ("download" in caplog.text and said in caplog.text):
            await trio.sleep(0.01)
    assert "download" in caplog.text and said in caplog.text
    assert not env.fs._content.is_cached(env.remote("u.bin")[0].id)  # nothing torn kept


# ---- deleted remotely under a reader ---------------------------------------------------

async def test_a_file_deleted_remotely_under_a_reader(env: Env) -> None:
    data = os.urandom(2 * 1024 * 1024)
    rec = env.app.state.emulator.store.add_bytes(Scope(), data, filename="gone.bin",
                                                 mime_type="application/octet-stream",
                                                 downloadable=True)
    rec2 = env.app.state.emulator.store.add_bytes(Scope(), data, filename="gone2.bin",
                                                  mime_type="application/octet-stream",
                                                  downloadable=True)
    # 1) fetched before the deletion: the reader gets every byte.
    ino = (await env.fs.lookup(ROOT_INODE, "gone.bin")).ino
    fh = await env.fs.open(ino, os.O_RDONLY)
    assert await env.fs.read(fh, 0, len(data)) == data
    env.app.state.emulator.store.delete(Scope(), rec.id)
    assert await env.fs.read(fh, 1000, 1000) == data[1000:2000]
    await env.fs.release(fh)
    # 2) deleted before the bytes came: the stream breaks, its resume finds 404 -> EIO,
    # promptly, for the bytes that never arrived.
    env.faults.plan["download"] = ["truncate"]
    ino2 = (await env.fs.lookup(ROOT_INODE, "gone2.bin")).ino
    env.app.state.emulator.store.delete(Scope(), rec2.id)
    fh = await env.fs.open(ino2, os.O_RDONLY)
    try:
        with trio.fail_after(10), pytest.raises(ce.IOFailure):
            await env.fs.read(fh, len(data) - 10, 10)
    finally:
        await env.fs.release(fh)


# ---- the API down under a warm cache ---------------------------------------------------

async def test_api_down_cached_reads_work_stale_listing_fails_fast_then_recovers(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data = b"a,b\n1,2\n"
    env.app.state.emulator.store.add_bytes(Scope(), data, filename="c.csv",
                                           mime_type="text/csv", downloadable=True)
    env.app.state.emulator.store.add_bytes(Scope(), data * 2, filename="u.csv",
                                           mime_type="text/csv", downloadable=True)
    assert await env.read_all("c.csv") == data   # now cached
    env.faults.down()
    env.clock.now += 11                          # listing and attributes expired
    # ls: EIO (the listing cannot be refreshed)
    with pytest.raises(ce.IOFailure):
        await env.fs.opendir(ROOT_INODE)
    # a cached file: its last known attributes and its cached bytes
    assert await env.read_all("c.csv") == data
    # an uncached file: EIO
    with pytest.raises(ce.IOFailure):
        await env.read_all("u.csv")
    # a new file: the name cannot be checked against a stale listing: EIO
    before = sum(env.faults.seen.values())
    with pytest.raises(ce.IOFailure):
        await env.fs.lookup(ROOT_INODE, "new.csv")
    assert sum(env.faults.seen.values()) == before   # while down: no request, at once
    assert "the API failed" in caplog.text
    env.faults.down(False)
    env.clock.now += API_DOWN_BACKOFF + 0.1
    await env.fs.opendir(ROOT_INODE)
    assert await env.read_all("u.csv") == data * 2
    await env.write_file("new.csv", data)
    assert "the API answers again" in caplog.text
    assert json.dumps(env.fs.status())            # status still renders


async def test_the_api_down_window_ends_at_the_first_request_that_succeeds(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data = b"a,b\n1,2\n"
    env.faults.down()
    env.clock.now += 11
    with pytest.raises(ce.IOFailure):
        await env.fs.opendir(ROOT_INODE)          # opens the window
    assert env.fs.ns.api_down()
    env.faults.down(False)                        # the API is back, the window still open
    # A create within the window, once the last probe is PROBE_INTERVAL old: its name
    # check probes the API, which answers: the window ends and the create works.
    env.clock.now += PROBE_INTERVAL
    await env.write_file("new.csv", data)
    assert not env.fs.ns.api_down()
    assert await env.read_all("new.csv") == data
    # Any request that succeeds ends it too: here a delete, with no probe needed.
    env.faults.down()
    env.clock.now += 11
    with pytest.raises(ce.IOFailure):
        await env.fs.opendir(ROOT_INODE)
    assert env.fs.ns.api_down()
    env.faults.down(False)
    await env.fs.unlink(ROOT_INODE, "new.csv")    # known name: one DELETE, no listing
    assert not env.fs.ns.api_down()
    assert "the API answers again" in caplog.text
