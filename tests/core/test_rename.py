"""Rename by re-upload, rewrites of uploaded files, held uploads of temporary names and
unlink by id: the core over the in-process emulator, no kernel."""

from __future__ import annotations

import os

import pytest
import trio
from starlette.applications import Starlette

from orfs.core import errors as ce
from orfs.core.fs import RENAME_EXCHANGE, RENAME_NOREPLACE
from orfs.core.inodes import ROOT_INODE
from orfs.core.upload_policy import looks_temporary
from orfs.emulator.store import Scope
from tests.core.harness import Env, env_fixture, output

GRACE = 0.3
BINARY = bytes(range(256)) * 4  # the service refuses it (unsupported type)

# With the held uploads of temporary names running, after GRACE seconds.
env = env_fixture(temp_grace=GRACE, held_uploads=True)


def counts(env: Env) -> tuple[int, int, int]:
    s = env.client.stats()
    return s["upload"], s["delete"], s["download"]


async def remote(env: Env) -> dict[str, bytes | None]:
    """filename -> bytes (None when the API will not serve them)."""
    out: dict[str, bytes | None] = {}
    async for f in env.client.list_files():
        out[f.filename] = None
        if f.downloadable:
            async with env.client.download(f.id) as stream:
                out[f.filename] = b"".join([c async for c in stream.iter_bytes()])
    return out


async def names(env: Env) -> list[str]:
    return sorted([f.filename async for f in env.client.list_files()])


def test_the_temporary_name_rule() -> None:
    temporary = [".data.csv.AbC123", ".x.Q1w2E3", "x.tmp", "notes.md~", ".x.swp", "sedA1b2C3",
                 "tmpab12cd34", "tmp_x9y8z7w.json", "tmp.AbCdEf1234", ".goutputstream-ABC123",
                 "#notes.md#", "x.part", ".data.csv.abcdef"]
    ordinary = ["data.csv", "report.pdf", ".env.local", ".bashrc", "tmp.txt", "sedate",
                "output.json", "4913", "x.txt.bak", "notes.md"]
    assert [n for n in temporary if not looks_temporary(n)] == []
    assert [n for n in ordinary if looks_temporary(n)] == []


async def test_rename_of_an_uploaded_file_reuploads_once_and_keeps_inode_and_mtime(
        env: Env) -> None:
    ino = await env.write_file("a.txt", b"alpha\n")
    await env.fs.setattr(ino, mtime_ns=1_500_000_000 * 10**9)
    before = counts(env)
    await env.fs.rename(ROOT_INODE, "a.txt", ROOT_INODE, "b.txt", RENAME_NOREPLACE)
    up, dele, down = counts(env)
    assert (up - before[0], dele - before[1], down - before[2]) == (1, 1, 0)
    assert await remote(env) == {"b.txt": None}  # uploaded files are not served back
    b = await env.fs.lookup(ROOT_INODE, "b.txt")
    assert b.ino == ino
    assert b.mtime_ns == 1_500_000_000 * 10**9
    assert await env.read_all(ino) == b"alpha\n"  # from the cache: no download
    with pytest.raises(ce.NoEntry):
        await env.fs.lookup(ROOT_INODE, "a.txt")


async def test_rename_keeps_the_time_it_showed_when_none_was_set(app: Starlette,
                                                                 env: Env) -> None:
    output(app, "o.txt", b"out\n")
    shown = (await env.fs.getattr(await env.path("o.txt"))).mtime_ns
    await env.fs.rename(ROOT_INODE, "o.txt", ROOT_INODE, "p.txt", 0)
    assert (await env.fs.getattr(await env.path("p.txt"))).mtime_ns == shown


async def test_rename_onto_an_existing_file_replaces_it(env: Env) -> None:
    await env.write_file("src.txt", b"new\n")
    await env.write_file("dst.txt", b"old\n")
    with pytest.raises(ce.Exists):
        await env.fs.rename(ROOT_INODE, "src.txt", ROOT_INODE, "dst.txt", RENAME_NOREPLACE)
    with pytest.raises(ce.InvalidArgument):
        await env.fs.rename(ROOT_INODE, "src.txt", ROOT_INODE, "dst.txt", RENAME_EXCHANGE)
    before = counts(env)
    await env.fs.rename(ROOT_INODE, "src.txt", ROOT_INODE, "dst.txt", 0)
    up, dele, _ = counts(env)
    assert (up - before[0], dele - before[1]) == (1, 2)
    assert await names(env) == ["dst.txt"]
    assert await env.read_all(await env.path("dst.txt")) == b"new\n"


async def test_move_between_folders_is_a_rename_of_the_filename(app: Starlette,
                                                                env: Env) -> None:
    output(app, "in/deep/r.csv", b"a,b\n1,2\n")
    await env.fs.mkdir(ROOT_INODE, "out", 0o755)
    src = await env.path("in", "deep")
    dst = await env.path("out")
    await env.fs.rename(src, "r.csv", dst, "r.csv", 0)
    assert await remote(env) == {"out/r.csv": None}
    up, dele, down = counts(env)
    assert (up, dele, down) == (1, 1, 1)  # not cached: downloaded once, through the cache
    assert await env.read_all(await env.path("out", "r.csv")) == b"a,b\n1,2\n"


async def test_rename_of_bytes_not_held_is_eperm_and_costs_nothing(app: Starlette,
                                                                   env: Env) -> None:
    app.state.emulator.store.add_bytes(Scope(), b"secret\n", filename="up.txt",
                                       mime_type="text/plain", downloadable=False)
    await env.path("up.txt")
    before = counts(env)
    with pytest.raises(ce.NotPermitted):
        await env.fs.rename(ROOT_INODE, "up.txt", ROOT_INODE, "down.txt", 0)
    assert counts(env) == before
    assert await names(env) == ["up.txt"]


async def test_a_failed_reupload_changes_nothing(app: Starlette, env: Env) -> None:
    output(app, "blob.txt", BINARY)  # an output the service would not take as an upload
    await env.write_file("keep.txt", b"keep\n")
    with pytest.raises(ce.Unsupported):
        await env.fs.rename(ROOT_INODE, "blob.txt", ROOT_INODE, "keep.txt", 0)
    assert sorted(await names(env)) == ["blob.txt", "keep.txt"]
    assert env.client.stats()["delete"] == 0
    assert await env.read_all(await env.path("keep.txt")) == b"keep\n"
    assert await env.read_all(await env.path("blob.txt")) == BINARY
    assert env.fs._state.journal_entries() == []


async def test_folders_rename_only_when_empty_and_local(app: Starlette, env: Env) -> None:
    output(app, "full/x.txt", b"x\n")
    with pytest.raises(ce.NotPermitted):
        await env.fs.rename(ROOT_INODE, "full", ROOT_INODE, "other", 0)
    await env.fs.mkdir(ROOT_INODE, "empty", 0o755)
    await env.fs.rename(ROOT_INODE, "empty", ROOT_INODE, "renamed", 0)
    await env.path("renamed")


# ---- temporary names -------------------------------------------------------------------

async def write_closed(env: Env, name: str, data: bytes, parent: int = ROOT_INODE,
                       fsync: bool = False) -> int:
    fh, attrs = await env.fs.create(parent, name, 0o600, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    await env.fs.write(fh, 0, data)
    if fsync:
        await env.fs.fsync(fh)
    await env.fs.flush(fh)
    await env.fs.release(fh)
    return int(attrs.ino)


async def test_write_temp_then_rename_uploads_once_under_the_final_name(env: Env) -> None:
    await env.write_file("data.csv", b"a,b\n")
    ino = await write_closed(env, ".data.csv.Xy12Ab", b"a,b\n1,2\n", fsync=True)
    await env.fs.setattr(ino, mode=0o644, mtime_ns=1_234_000_000_000_000_000)
    assert counts(env)[0] == 1  # held: neither fsync nor flush uploaded it
    await env.fs.rename(ROOT_INODE, ".data.csv.Xy12Ab", ROOT_INODE, "data.csv", 0)
    up, dele, _ = counts(env)
    assert (up, dele) == (2, 1)
    assert await names(env) == ["data.csv"]
    attrs = await env.fs.lookup(ROOT_INODE, "data.csv")
    assert attrs.ino == ino and attrs.mtime_ns == 1_234_000_000_000_000_000
    await trio.sleep(GRACE * 2)
    assert counts(env)[0] == 2  # nothing left to upload later


async def test_a_temp_file_not_renamed_uploads_after_the_grace_period(env: Env) -> None:
    ino = await write_closed(env, "notes.txt~", b"backup\n")
    assert counts(env)[0] == 0
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"pending"
    await trio.sleep(GRACE * 3)
    assert counts(env)[0] == 1
    assert await names(env) == ["notes.txt~"]


async def test_a_temp_file_removed_in_its_grace_period_costs_nothing(env: Env) -> None:
    await write_closed(env, ".x.swp", b"swap\n")
    await env.fs.unlink(ROOT_INODE, ".x.swp")
    await trio.sleep(GRACE * 2)
    assert counts(env) == (0, 0, 0)


async def test_a_failed_rename_upload_keeps_the_bytes_at_the_old_name(env: Env) -> None:
    await write_closed(env, "x.tmp", BINARY)
    with pytest.raises(ce.Unsupported):
        await env.fs.rename(ROOT_INODE, "x.tmp", ROOT_INODE, "x.bin", 0)
    ino = await env.path("x.tmp")
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"failed"
    assert await env.read_all(ino) == BINARY
    with pytest.raises(ce.NoEntry):
        await env.fs.lookup(ROOT_INODE, "x.bin")


async def test_an_ordinary_name_still_uploads_at_close(env: Env) -> None:
    await write_closed(env, "plain.txt", BINARY[:0] + b"plain\n")
    assert counts(env)[0] == 1
    with pytest.raises(ce.Unsupported):
        await write_closed(env, "refused.txt", BINARY)  # close() gets the error


async def test_held_uploads_go_out_before_unmount(env: Env) -> None:
    await write_closed(env, "tmpab12cd34", b"held\n")
    await env.fs.upload_held()
    assert await names(env) == ["tmpab12cd34"]


# ---- rewrites: open without O_TRUNC, truncate ------------------------------------------

async def test_append_to_a_downloadable_output_replaces_it(app: Starlette, env: Env) -> None:
    old = output(app, "output.csv", b"a,b\n1,2\n")
    ino = await env.path("output.csv")
    fh = await env.fs.open(ino, os.O_WRONLY | os.O_APPEND)
    await env.fs.write(fh, 8, b"3,4\n")
    await env.fs.flush(fh)
    await env.fs.release(fh)
    files = [f async for f in env.client.list_files()]
    assert [f.filename for f in files] == ["output.csv"] and files[0].id != old
    assert await env.read_all(ino) == b"a,b\n1,2\n3,4\n"
    assert counts(env) == (1, 1, 1)


async def test_read_only_and_unwritten_opens_copy_nothing_upload_nothing(
        app: Starlette, env: Env) -> None:
    output(app, "r.txt", b"read me\n")
    ino = await env.path("r.txt")
    assert await env.read_all(ino) == b"read me\n"
    fh = await env.fs.open(ino, os.O_RDWR)
    assert await env.fs.read(fh, 0, 100) == b"read me\n"
    await env.fs.flush(fh)
    await env.fs.release(fh)
    assert counts(env) == (0, 0, 1)
    assert env.fs._locals == {}
    assert os.listdir(env.fs._staging) == []
    assert (await env.fs.getattr(ino)).size == 8


async def test_rewrite_of_bytes_not_held_is_eperm(app: Starlette, env: Env) -> None:
    app.state.emulator.store.add_bytes(Scope(), b"secret\n", filename="up.txt",
                                       mime_type="text/plain", downloadable=False)
    ino = await env.path("up.txt")
    with pytest.raises(ce.NotPermitted):
        await env.fs.open(ino, os.O_WRONLY | os.O_APPEND)
    with pytest.raises(ce.NotPermitted):
        await env.fs.setattr(ino, size=3)
    fh = await env.fs.open(ino, os.O_WRONLY | os.O_TRUNC)  # needs no bytes
    await env.fs.release(fh)


async def test_in_place_edit_of_a_file_written_here(env: Env) -> None:
    ino = await env.write_file("f.txt", b"hello world\n")
    fh = await env.fs.open(ino, os.O_RDWR)
    await env.fs.write(fh, 0, b"HELLO")
    await env.fs.flush(fh)
    await env.fs.release(fh)
    assert counts(env) == (2, 1, 0)
    assert await env.read_all(await env.path("f.txt")) == b"HELLO world\n"


async def test_truncate_of_an_uploaded_file(app: Starlette, env: Env) -> None:
    output(app, "t.txt", b"0123456789\n")
    ino = await env.path("t.txt")
    attrs = await env.fs.setattr(ino, size=4)
    assert attrs.size == 4 and attrs.ino == ino
    assert await remote(env) == {"t.txt": None}
    assert await env.read_all(ino) == b"0123"
    assert counts(env) == (1, 1, 1)
    attrs = await env.fs.setattr(ino, size=0)  # no download, nothing to upload (empty)
    assert attrs.size == 0
    assert await env.fs.getxattr(ino, "user.orfs.state") == b"pending"
    assert counts(env) == (1, 1, 1)


# ---- .by-id ----------------------------------------------------------------------------

async def test_unlink_by_id(app: Starlette, env: Env) -> None:
    fid = output(app, "deep/o.txt", b"o\n")
    by_id = await env.path(".by-id")
    ino = await env.path(".by-id", fid)
    assert await env.read_all(ino) == b"o\n"
    assert await env.fs.getxattr(ino, "user.openrouter.id") == fid.encode()
    await env.fs.unlink(by_id, fid)
    assert await names(env) == []
    with pytest.raises(ce.NoEntry):
        await env.fs.lookup(by_id, fid)
    with pytest.raises(ce.NotPermitted):
        await env.fs.rename(by_id, fid, ROOT_INODE, "x", 0)
