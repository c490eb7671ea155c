"""A file deleted elsewhere (another client, through the API) while this mount reads it:
handles opened before the delete keep reading, new opens are ENOENT, and the cache lets
go of the bytes at the last close."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from starlette.applications import Starlette

from orfs.core import errors as ce
from orfs.core.cache import disk_name
from orfs.core.inodes import ROOT_INODE
from orfs.emulator.store import Scope
from tests.core.harness import Env, env_fixture, output

env = env_fixture()


def cached_on_disk(tmp_path: Path, file_id: str) -> bool:
    return (tmp_path / "cache" / "content" / disk_name(file_id)).exists()


async def fully_cached(env: Env, file_id: str) -> None:
    """Until the download of ``file_id`` is installed in ``content/``."""
    with trio.fail_after(10):
        while not env.fs._content.is_cached(file_id):
            await trio.sleep(0.01)


async def test_an_open_reader_keeps_reading_after_a_delete_elsewhere(
        app: Starlette, env: Env, tmp_path: Path) -> None:
    data = os.urandom(300 * 1024)
    fid = output(app, "a.bin", data)
    ino = await env.path("a.bin")
    assert await env.read_all(ino) == data
    await fully_cached(env, fid)
    fh = await env.fs.open(ino, os.O_RDONLY)
    assert app.state.emulator.store.delete(Scope(), fid) is not None
    env.clock.now += 11  # the attributes expire: the next getattr retrieves, gets 404
    # The kernel asks for attributes before a read: they must not be ENOENT.
    attrs = await env.fs.getattr(ino)
    assert (attrs.nlink, attrs.size) == (0, len(data))
    assert await env.fs.read(fh, 0, 1 << 20) == data
    assert await env.fs.read(fh, 1000, 10) == data[1000:1010]
    # Only new opens and lookups learn of the delete.
    with pytest.raises(ce.NoEntry):
        await env.fs.lookup(ROOT_INODE, "a.bin")
    with pytest.raises(ce.NoEntry):
        await env.fs.open(ino, os.O_RDONLY)
    assert cached_on_disk(tmp_path, fid)
    assert env.fs._content.statistics()["open_handles"] == 1
    await env.fs.release(fh)
    # The last close frees the bytes of an id that no longer exists.
    assert not cached_on_disk(tmp_path, fid)
    assert env.fs._content.statistics()["entries"] == 0
    with pytest.raises(ce.NoEntry):
        await env.fs.getattr(ino)


async def test_a_listing_that_no_longer_shows_a_file_frees_its_cached_bytes(
        app: Starlette, env: Env, tmp_path: Path) -> None:
    kept, gone = b"kept\n" * 1000, b"gone\n" * 1000
    output(app, "kept.txt", kept)
    fid = output(app, "gone.txt", gone)
    held = output(app, "held.txt", gone)
    assert await env.read_all("kept.txt") == kept
    assert await env.read_all("gone.txt") == gone
    assert await env.read_all("held.txt") == gone
    await fully_cached(env, fid)
    await fully_cached(env, held)
    fh = await env.fs.open(await env.path("held.txt"), os.O_RDONLY)
    assert await env.fs.read(fh, 0, 100) == gone[:100]
    for file_id in (fid, held):
        assert app.state.emulator.store.delete(Scope(), file_id) is not None
    env.clock.now += 11
    dh = await env.fs.opendir(ROOT_INODE)  # a new listing: the files are gone
    assert [n for _, n, _ in env.fs.readdir(dh, 0)] == ["kept.txt"]
    env.fs.releasedir(dh)
    assert not cached_on_disk(tmp_path, fid)  # nobody held it: freed at once
    assert cached_on_disk(tmp_path, held)     # held: kept until its last close
    assert await env.fs.read(fh, 0, len(gone)) == gone
    await env.fs.release(fh)
    assert not cached_on_disk(tmp_path, held)
    assert await env.read_all("kept.txt") == kept
    assert env.client.stats()["download"] == 3
