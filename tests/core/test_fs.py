"""The filesystem core over the emulator in process (httpx.ASGITransport): no kernel."""

from __future__ import annotations

import os

import pytest
from starlette.applications import Starlette

from orfs.config import MAX_FILE_SIZE
from orfs.core import errors as ce
from orfs.core.inodes import ROOT_INODE
from orfs.emulator.store import Scope
from tests.core.harness import Env, env_fixture, output

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

env = env_fixture()


async def test_lookup_getattr_readdir_come_from_one_listing(app: Starlette, env: Env) -> None:
    output(app, "a.txt", b"hello\n")
    output(app, "reports/q3/summary.csv", b"a,b\n")
    fh = await env.fs.opendir(ROOT_INODE)
    entries = [(name, attrs) for _, name, attrs in env.fs.readdir(fh, 0)]
    env.fs.releasedir(fh)
    assert [n for n, _ in entries] == ["a.txt", "reports"]
    ino = await env.path("reports", "q3", "summary.csv")
    assert (await env.fs.getattr(ino)).size == 4
    assert env.client.stats()["list"] == 1
    assert env.client.stats()["retrieve"] == 0
    # attributes expire: one retrieve for that file, no re-list
    env.clock.now += 11
    assert (await env.fs.getattr(ino)).size == 4
    assert env.client.stats()["retrieve"] == 1
    assert env.client.stats()["list"] == 1
    assert await env.read_all(ino) == b"a,b\n"


async def test_readdir_offsets_are_stable(app: Starlette, env: Env) -> None:
    for i in range(5):
        output(app, f"f{i}.txt", b"x\n")
    fh = await env.fs.opendir(ROOT_INODE)
    first = [n for _, n, _ in list(env.fs.readdir(fh, 0))[:2]]
    await env.write_file("a-new.txt", b"new\n")  # changes the folder between calls
    rest = [n for _, n, _ in env.fs.readdir(fh, 2)]
    assert first + rest == [f"f{i}.txt" for i in range(5)]


async def test_missing_name_is_noentry_without_a_request_when_fresh(env: Env) -> None:
    await env.fs.opendir(ROOT_INODE)
    n = env.client.stats()["list"]
    with pytest.raises(ce.NoEntry):
        await env.fs.lookup(ROOT_INODE, "nope")
    assert env.client.stats()["list"] == n


async def test_create_write_flush_uploads_once_and_keeps_the_inode(env: Env) -> None:
    ino = await env.write_file("doc.pdf", PDF)
    stats = env.client.stats()
    assert stats["upload"] == 1
    attrs = await env.fs.lookup(ROOT_INODE, "doc.pdf")
    assert attrs.ino == ino
    assert attrs.mode & 0o777 == 0o644
    assert await env.read_all(ino) == PDF  # from the adopted cache, no download
    assert env.client.stats()["download"] == 0
    assert env.fs._state.journal_entries() == []
    xattrs = await env.fs.listxattr(ino)
    assert "user.openrouter.id" in xattrs


async def test_a_flush_before_any_write_and_an_empty_file_upload_nothing(env: Env) -> None:
    fh, attrs = await env.fs.create(ROOT_INODE, "e.txt", 0o644, os.O_WRONLY)
    await env.fs.flush(fh)
    await env.fs.release(fh)
    assert env.client.stats()["upload"] == 0
    assert await env.fs.getxattr(attrs.ino, "user.orfs.state") == b"pending"


async def test_unsupported_upload_fails_and_keeps_the_bytes(env: Env) -> None:
    data = bytes(range(256)) * 4
    with pytest.raises(ce.Unsupported):
        await env.write_file("blob.bin", data)
    ino = await env.path("blob.bin")
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"
    assert b"unsupported" in await env.fs.getxattr(ino, "user.orfs.error")
    assert await env.read_all(ino) == data
    status = env.fs.status()
    assert status["failed"] == [{"path": "blob.bin",
                                 "error": (await env.fs.getxattr(ino, "user.orfs.error")
                                           ).decode()}]


async def test_o_trunc_over_a_remote_file_replaces_it_after_upload(app: Starlette,
                                                                   env: Env) -> None:
    old = output(app, "r.txt", b"old\n")
    ino = await env.path("r.txt")
    fh = await env.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
    await env.fs.write(fh, 0, b"new text\n")
    await env.fs.flush(fh)
    await env.fs.release(fh)
    files = [f async for f in env.client.list_files()]
    assert [f.filename for f in files] == ["r.txt"] and files[0].id != old
    assert await env.read_all(ino) == b"new text\n"


async def test_unlink_and_rmdir(app: Starlette, env: Env) -> None:
    output(app, "d/x.txt", b"x\n")
    d = await env.path("d")
    with pytest.raises(ce.NotEmpty):
        await env.fs.rmdir(ROOT_INODE, "d")
    await env.fs.unlink(d, "x.txt")
    assert [f async for f in env.client.list_files()] == []
    with pytest.raises(ce.NoEntry):
        await env.fs.unlink(d, "x.txt")
    await env.fs.rmdir(ROOT_INODE, "d")  # kept as a local folder for rm -r, now removed
    with pytest.raises(ce.NoEntry):
        await env.fs.lookup(ROOT_INODE, "d")


async def test_mkdir_then_create_uploads_with_the_folder_path(env: Env) -> None:
    d = await env.fs.mkdir(ROOT_INODE, "newdir", 0o755)
    await env.write_file("f.pdf", PDF, parent=d.ino)
    assert [f.filename async for f in env.client.list_files()] == ["newdir/f.pdf"]


async def test_a_write_past_the_limit_is_efbig_and_nothing_uploads(env: Env) -> None:
    fh, attrs = await env.fs.create(ROOT_INODE, "big.txt", 0o644, os.O_WRONLY)
    await env.fs.write(fh, 0, b"a")
    with pytest.raises(ce.FileTooBig):
        await env.fs.write(fh, MAX_FILE_SIZE, b"b")
    await env.fs.flush(fh)
    await env.fs.release(fh)
    assert env.client.stats()["upload"] == 0


async def test_rename_local_is_free_and_uploaded_reuploads(env: Env) -> None:
    fh, _ = await env.fs.create(ROOT_INODE, ".tmp123", 0o600, os.O_WRONLY)
    await env.fs.release(fh)
    await env.fs.rename(ROOT_INODE, ".tmp123", ROOT_INODE, "final.txt", 0)
    await env.path("final.txt")
    await env.write_file("up.txt", b"text\n")
    await env.fs.rename(ROOT_INODE, "up.txt", ROOT_INODE, "down.txt", 0)
    assert env.client.stats()["upload"] == 2
    with pytest.raises(ce.InvalidArgument):
        await env.fs.rename(ROOT_INODE, "final.txt", ROOT_INODE, "x", 2)


async def test_chmod_and_times_after_close_are_remembered(env: Env) -> None:
    ino = await env.write_file("m.txt", b"mode\n")
    await env.fs.setattr(ino, mode=0o600, mtime_ns=5 * 10**18, atime_ns=5 * 10**18)
    a = await env.fs.getattr(ino)
    assert a.mode & 0o777 == 0o600 and a.mtime_ns == 5 * 10**18
    assert (await env.fs.setattr(ino, size=1)).size == 1  # a rewrite


async def test_unreadable_file_shows_no_read_bits_and_open_is_eacces(app: Starlette,
                                                                     env: Env) -> None:
    rec = app.state.emulator.store.add_bytes(Scope(), b"secret\n", filename="up.txt",
                                             mime_type="text/plain", downloadable=False)
    ino = await env.path("up.txt")
    await env.fs.setattr(ino, mode=0o644)
    assert (await env.fs.getattr(ino)).mode & 0o777 == 0o200
    with pytest.raises(ce.AccessDenied):
        await env.fs.open(ino, os.O_RDONLY)
    assert str(rec.id)


async def test_read_only_refuses_writes(env: Env) -> None:
    env.fs.read_only = True
    with pytest.raises(ce.ReadOnly):
        await env.fs.create(ROOT_INODE, "x.txt", 0o644, os.O_WRONLY)
    with pytest.raises(ce.ReadOnly):
        await env.fs.mkdir(ROOT_INODE, "d", 0o755)
