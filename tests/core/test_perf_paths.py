"""Behaviour kept by the hot-path shortcuts of issue 5 (no timings: bench.py has those).

- h11's receive buffer hands a body over without copying it twice (tuning.py);
- getxattr of a non-`user.` name is answered before any core call (ops.py);
- attribute freshness is one listing time plus refresh times per retrieved file
  (namespace.py), still "one retrieve of that file, never a re-list".
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import h11
import pyfuse3
import pytest
from starlette.applications import Starlette

from orfs.core.inodes import ROOT_INODE
from orfs.fuse import tuning
from orfs.fuse.ops import Operations
from tests.core import test_fs
from tests.core.test_fs import Env, output

# The emulator-backed core of test_fs, as fixtures of this module too.
app = test_fs.app
env = test_fs.env


@pytest.fixture
def patched_h11() -> Iterator[None]:
    from h11._receivebuffer import ReceiveBuffer

    original = ReceiveBuffer.maybe_extract_at_most
    assert tuning.tune_h11_body_reads()
    try:
        yield
    finally:
        ReceiveBuffer.maybe_extract_at_most = original  # type: ignore[method-assign]


def _parse(pieces: list[bytes]) -> list[object]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    events: list[object] = []
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                break
            events.append(ev)
    return events


@pytest.mark.parametrize("split", [1, 7, 100, 10_000])
def test_h11_body_is_unchanged_by_the_shortcut(patched_h11: None, split: int) -> None:
    body = bytes(range(256)) * 40
    raw = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    pieces = [raw[i:i + split] for i in range(0, len(raw), split)]
    events = _parse(pieces)
    data = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
    assert data == body
    assert isinstance(events[-1], h11.EndOfMessage)


def test_h11_stops_at_content_length(patched_h11: None) -> None:
    # The body ends inside a buffer that holds more: only Content-Length bytes are body.
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(raw)
    assert isinstance(conn.next_event(), h11.Response)
    ev = conn.next_event()
    assert isinstance(ev, h11.Data) and bytes(ev.data) == b"hello"
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert conn.trailing_data[0] == b"EXTRA"


class _NoCore:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the core was called: {name}")


@pytest.mark.parametrize("name", [b"security.selinux", b"system.posix_acl_access",
                                  b"system.posix_acl_default", b"trusted.x"])
async def test_non_user_xattrs_answer_enodata_without_the_core(name: bytes) -> None:
    ops = Operations(_NoCore())  # type: ignore[arg-type]
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getxattr(1, name, None)  # type: ignore[arg-type]
    assert info.value.errno == errno.ENODATA


async def test_user_xattrs_still_reach_the_core(app: Starlette, env: Env) -> None:
    output(app, "a.txt", b"hello\n")
    ops = Operations(env.fs)
    ino = await env.path("a.txt")
    value = await ops.getxattr(ino, b"user.openrouter.filename", None)  # type: ignore[arg-type]
    assert value == b"a.txt"
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getxattr(ino, b"user.nothing", None)  # type: ignore[arg-type]
    assert info.value.errno == errno.ENODATA


async def test_expired_attributes_cost_one_retrieve_per_file(app: Starlette, env: Env) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        output(app, name, b"x\n")
    a, b = await env.path("a.txt"), await env.path("b.txt")
    assert env.client.stats()["list"] == 1
    env.clock.now += 11  # the listing (TTL 10 s) expired
    await env.fs.getattr(a)
    await env.fs.getattr(a)  # refreshed by the retrieve: fresh again
    assert env.client.stats()["retrieve"] == 1
    await env.fs.getattr(b)  # its own retrieve
    assert env.client.stats()["retrieve"] == 2
    env.clock.now += 11  # the refreshes expire too
    await env.fs.getattr(a)
    assert env.client.stats()["retrieve"] == 3
    assert env.client.stats()["list"] == 1
    # a new listing makes every file fresh again
    env.fs.drop_listing()
    fh = await env.fs.opendir(ROOT_INODE)
    env.fs.releasedir(fh)
    await env.fs.getattr(a)
    await env.fs.getattr(b)
    assert env.client.stats()["list"] == 2
    assert env.client.stats()["retrieve"] == 3
