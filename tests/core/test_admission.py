"""Refused at close, before any request (orfs/core/admission.py), over the emulator in
process: what the service refuses for certain fails close() with no upload sent and the
bytes kept as a failed upload; anything doubtful is sent and the service decides."""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
import zipfile

import pytest
import trio
from starlette.applications import Starlette

from orfs.api.errors import BadRequest, Unreachable
from orfs.api.upload import UploadBody
from orfs.core import admission
from orfs.core import errors as ce
from orfs.core.inodes import ROOT_INODE
from orfs.core.streaming import STREAM_AFTER
from orfs.emulator.store import Scope
from tests.core.harness import Env, env_fixture, output

env = env_fixture()
streaming = env_fixture(streams=True)
held = env_fixture(held_uploads=True)

PIECE = 128 * 1024


def a_zip(*names: str, size: int = 16) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in names:
            z.writestr(name, os.urandom(size))
    return buf.getvalue()


def a_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CERTAIN = [
    ("gzip", gzip.compress(b"some text\n" * 100), "gzip"),
    ("tar", a_tar(), "tar"),
    ("elf", b"\x7fELF\x02\x01\x01\x00" + bytes(200), "ELF"),
    ("sqlite", b"SQLite format 3\x00" + bytes(200), "SQLite"),
    ("zip", a_zip("notes/a.bin", "notes/b.bin"), "zip archive that is not DOCX"),
]
DOUBTFUL = [
    ("random", bytes(range(256)) * 8),  # no known format: another reader may find one
    ("latin-1", "caf\u00e9 cr\u00e8me\n".encode("latin-1")),  # text, not UTF-8
    ("utf-16", "hello\n".encode("utf-16")),
    ("control", b"text with a \x01 in it\n"),
    ("docx-like", a_zip("word/document.xml")),          # word/ but no [Content_Types].xml
    ("mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(200)),  # media not on the list: may be added
    ("bad-zip", b"PK\x03\x04" + bytes(100)),            # a zip that cannot be read
]


@pytest.mark.parametrize(("name", "data", "why"), CERTAIN, ids=[c[0] for c in CERTAIN])
async def test_a_type_refused_for_certain_fails_close_with_no_request(
        env: Env, caplog: pytest.LogCaptureFixture, name: str, data: bytes, why: str) -> None:
    caplog.set_level(logging.WARNING, "orfs.core.writes")
    with pytest.raises(ce.Unsupported, match="unsupported file type") as err:
        await env.write_file(f"{name}.dat", data)
    assert why in err.value.message
    assert env.client.stats()["upload"] == 0 and env.remote() == []
    ino = await env.path(f"{name}.dat")
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"
    assert why.encode() in await env.fs.getxattr(ino, "user.orfs.error")
    assert await env.read_all(ino) == data  # the bytes are kept, readable
    assert env.fs.status()["failed"] == [{"path": f"{name}.dat", "error": err.value.message}]
    assert any(f"{name}.dat" in r.getMessage() and "refused before sending" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)
    # The service agrees: sent directly, it is refused too.
    with pytest.raises(BadRequest, match="unsupported file type"):
        await env.client.upload("direct.dat", UploadBody.from_bytes(data))


@pytest.mark.parametrize(("name", "data"), DOUBTFUL, ids=[d[0] for d in DOUBTFUL])
async def test_a_doubtful_type_is_sent_and_the_service_decides(env: Env, name: str,
                                                               data: bytes) -> None:
    with pytest.raises(ce.Unsupported):
        await env.write_file(f"{name}.dat", data)
    assert env.client.stats()["upload"] == 1  # sent: the emulator's answer is the 400
    ino = await env.path(f"{name}.dat")
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"


async def test_a_refused_file_written_again_uploads(env: Env) -> None:
    with pytest.raises(ce.Unsupported):
        await env.write_file("x.dat", CERTAIN[0][1])
    fh = await env.fs.open(await env.path("x.dat"), os.O_WRONLY | os.O_TRUNC)
    await env.fs.write(fh, 0, b"now it is text\n")
    await env.close(fh)
    assert env.client.stats()["upload"] == 1
    assert [r.filename for r in env.remote()] == ["x.dat"]


async def test_a_second_close_of_a_refused_file_sends_nothing(env: Env) -> None:
    fh, _ = await env.fs.create(ROOT_INODE, "x.gz", 0o644, os.O_WRONLY | os.O_CREAT)
    await env.fs.write(fh, 0, CERTAIN[0][1])
    with pytest.raises(ce.Unsupported):
        await env.fs.flush(fh)
    await env.fs.flush(fh)  # nothing new: no upload, no second refusal
    await env.fs.release(fh)
    assert env.client.stats()["upload"] == 0


async def test_a_temporary_name_is_refused_at_close_not_held(held: Env) -> None:
    with pytest.raises(ce.Unsupported):
        await held.write_file(".x.gz.AbC123", CERTAIN[0][1])
    await held.fs.rename(ROOT_INODE, ".x.gz.AbC123", ROOT_INODE, "x.gz", 0)
    assert held.client.stats()["upload"] == 0
    assert await held.fs.getxattr(await held.path("x.gz"), "user.orfs.state") == b"failed"


# -- streamed uploads ------------------------------------------------------------------


async def _write_in_order(env: Env, name: str, data: bytes) -> int:
    fh, _ = await env.fs.create(ROOT_INODE, name, 0o644, os.O_WRONLY | os.O_CREAT)
    for i in range(0, len(data), PIECE):
        await env.fs.write(fh, i, data[i:i + PIECE])
    for _ in range(50):
        await trio.lowlevel.checkpoint()
    return int(fh)


async def test_a_large_file_refused_by_its_header_never_streams(streaming: Env) -> None:
    data = gzip.compress(os.urandom(2 * STREAM_AFTER), compresslevel=1)
    fh = await _write_in_order(streaming, "big.gz", data)
    assert streaming.fs.streams.started == 0
    with pytest.raises(ce.Unsupported):
        await streaming.close(fh)
    assert streaming.client.stats()["upload"] == 0
    assert await streaming.read_all("big.gz") == data


async def test_a_large_zip_streams_and_is_cancelled_at_close(streaming: Env) -> None:
    # A zip is known only from its end: its stream starts, and close cancels it before
    # its end, so the request creates nothing (docs/SEMANTICS.md, "Refused at close").
    data = a_zip("a.bin", "b.bin", size=STREAM_AFTER)
    fh = await _write_in_order(streaming, "big.zip", data)
    assert streaming.fs.streams.started == 1
    with pytest.raises(ce.Unsupported, match="zip archive"):
        await streaming.close(fh)
    for _ in range(50):
        await trio.lowlevel.checkpoint()
    assert streaming.fs.streams.cancelled == 1 and streaming.fs.streams.completed == 0
    assert streaming.remote() == []
    assert await streaming.read_all("big.zip") == data


# -- the quota -------------------------------------------------------------------------


@pytest.fixture
def quota(app: Starlette, monkeypatch: pytest.MonkeyPatch) -> int:
    """A 1 MiB workspace, known to the emulator and to the mount."""
    size = 1024 * 1024
    monkeypatch.setattr(admission, "QUOTA", size)
    app.state.emulator.store.quota = size
    return size


async def test_a_full_workspace_fails_close_with_no_request(app: Starlette, env: Env,
                                                            quota: int) -> None:
    output(app, "big.txt", b"x" * (quota - 100))
    await env.write_file("fits.txt", b"y" * 50)  # 50 more bytes fit
    with pytest.raises(ce.NoSpace, match="quota exceeded") as err:
        await env.write_file("over.txt", b"z" * 51)
    assert f"of {quota} bytes" in err.value.message
    stats = env.client.stats()
    assert stats["upload"] == 1 and stats["list"] == 1  # the listing was fresh: not redone
    ino = await env.path("over.txt")
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"
    assert await env.read_all(ino) == b"z" * 51
    # The service agrees.
    assert app.state.emulator.store.remaining(Scope()) == 50


async def test_a_stale_listing_is_refreshed_before_refusing(app: Starlette, env: Env,
                                                            quota: int) -> None:
    big = output(app, "big.txt", b"x" * (quota - 100))
    fh, _ = await env.fs.create(ROOT_INODE, "now-fits.txt", 0o644, os.O_WRONLY | os.O_CREAT)
    app.state.emulator.store.delete(Scope(), big)  # deleted elsewhere: room again
    env.clock.now += 11  # the listing that counted it is stale
    await env.fs.write(fh, 0, b"z" * 1000)
    lists = env.client.stats()["list"]
    await env.close(fh)
    assert env.client.stats()["list"] == lists + 1
    assert [r.filename for r in env.remote()] == ["now-fits.txt"]


async def test_a_listing_that_cannot_be_refreshed_leaves_it_to_the_service(
        app: Starlette, env: Env, quota: int, monkeypatch: pytest.MonkeyPatch) -> None:
    output(app, "big.txt", b"x" * (quota - 100))
    fh, _ = await env.fs.create(ROOT_INODE, "over.txt", 0o644, os.O_WRONLY | os.O_CREAT)
    env.clock.now += 11
    await env.fs.write(fh, 0, b"z" * 1000)

    async def down(*args: object, **kwargs: object) -> None:
        raise Unreachable("down", request_sent=False)
    monkeypatch.setattr(env.client, "list_all", down)
    with pytest.raises(ce.NoSpace):
        await env.close(fh)
    assert env.client.stats()["upload"] == 1  # sent: the service's 403 answered


async def test_a_rewrite_counts_the_file_it_replaces(app: Starlette, env: Env,
                                                     quota: int) -> None:
    # Until the new bytes are uploaded the old ones are stored too.
    await env.write_file("a.txt", b"a" * (quota // 2))
    fh = await env.fs.open(await env.path("a.txt"), os.O_WRONLY | os.O_TRUNC)
    await env.fs.write(fh, 0, b"b" * (quota // 2 + 1))
    with pytest.raises(ce.NoSpace):
        await env.close(fh)
    assert env.client.stats()["upload"] == 1
