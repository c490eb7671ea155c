"""Files shown under a name that is not their filename: duplicates (``a [or_file_X].csv``),
names over 255 bytes (shown shortened) and names with control characters (which no
upload can carry as they are). Rewriting one must upload under its real filename and
replace its own id; a name made through the mount keeps resolving."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette

from orfs.core.inodes import ROOT_INODE
from tests.core.harness import Env, env_fixture, output, records

env = env_fixture()

TRUNC = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _bytes(app: Starlette, file_id: str) -> bytes:
    return app.state.emulator.store.blob_path(file_id).read_bytes()


def _remote(app: Starlette, filename: str) -> dict[str, bytes]:
    return {r.id: _bytes(app, r.id) for r in records(app, filename)}


async def _names(env: Env) -> list[str]:
    fh = await env.fs.opendir(ROOT_INODE)
    try:
        return sorted(name for _, name, _ in env.fs.readdir(fh, 0))
    finally:
        env.fs.releasedir(fh)


async def _rewrite(env: Env, name: str, data: bytes) -> int:
    fh, attrs = await env.fs.create(ROOT_INODE, name, 0o644, TRUNC)
    await env.fs.write(fh, 0, data)
    await env.close(fh)
    return int(attrs.ino)


async def test_rewriting_a_duplicate_replaces_its_own_id_under_its_real_name(
        env: Env, app: Starlette) -> None:
    first = output(app, "report.csv", b"a,first\n")
    twin = output(app, "report.csv", b"b,twin\n")
    shown = f"report [{twin}].csv"
    assert await _names(env) == sorted(["report.csv", shown])
    ino = await _rewrite(env, shown, b"c,new\n")
    remote = _remote(app, "report.csv")
    assert len(remote) == 2 and remote[first] == b"a,first\n"  # the twin: untouched
    assert twin not in remote                                 # its own id replaced
    (new_id,) = remote.keys() - {first}
    assert remote[new_id] == b"c,new\n"
    assert records(app, shown) == []                          # no file named by display
    assert await env.read_all(ino) == b"c,new\n"
    assert await env.read_all(f"report [{new_id}].csv") == b"c,new\n"
    assert await env.read_all("report.csv") == b"a,first\n"


async def test_an_editors_save_over_a_duplicate_uploads_under_its_real_name(
        env: Env, app: Starlette) -> None:
    first = output(app, "notes.md", b"# first\n")
    twin = output(app, "notes.md", b"# twin\n")
    shown = f"notes [{twin}].md"
    await _names(env)
    await _rewrite(env, ".notes.swp", b"# saved\n")  # write a temporary, rename it over
    await env.fs.rename(ROOT_INODE, ".notes.swp", ROOT_INODE, shown, 0)
    remote = _remote(app, "notes.md")
    assert remote[first] == b"# first\n" and twin not in remote
    assert sorted(remote.values()) == [b"# first\n", b"# saved\n"]
    assert records(app, shown) == [] and records(app, ".notes.swp") == []


async def test_appending_to_a_duplicate_rewrites_it_under_its_real_name(
        env: Env, app: Starlette) -> None:
    output(app, "log.txt", b"one\n")
    twin = output(app, "log.txt", b"two\n")
    await _names(env)
    ino = int((await env.fs.lookup(ROOT_INODE, f"log [{twin}].txt")).ino)
    fh = await env.fs.open(ino, os.O_WRONLY | os.O_APPEND)
    await env.fs.write(fh, 4, b"more\n")
    await env.close(fh)
    assert sorted(_remote(app, "log.txt").values()) == [b"one\n", b"two\nmore\n"]


async def test_rewriting_a_shortened_name_uploads_the_whole_name(
        env: Env, app: Starlette) -> None:
    long = "x" * 300 + ".txt"
    old = output(app, long, b"old\n")
    (shown,) = await _names(env)
    assert shown != long and len(shown.encode()) <= 255
    ino = await _rewrite(env, shown, b"new\n")
    remote = _remote(app, long)
    assert old not in remote and list(remote.values()) == [b"new\n"]
    assert records(app, shown) == []
    assert await env.read_all(ino) == b"new\n"
    assert await _names(env) == [shown]  # the same display name as before


async def test_a_name_with_a_control_character_keeps_resolving_after_its_upload(
        env: Env, app: Starlette) -> None:
    for name in ("a\nb.txt", "tab\there", "cr\r"):
        await _rewrite(env, name, b"bytes of " + name.encode() + b"\n")
    env.clock.now += 11  # a new listing: the service's names, mapped back
    for name in ("a\nb.txt", "tab\there", "cr\r"):
        assert await env.read_all(name) == b"bytes of " + name.encode() + b"\n"
    assert "a\nb.txt" in await _names(env)
    stored = {r.filename for r in records(app)}
    assert stored == {"a%0Ab.txt", "tab%09here", "cr%0D"}  # what other clients see


async def test_a_created_name_survives_a_remount_and_a_rewrite(
        app: Starlette, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    async with Env.running(app, cache) as e:
        await _rewrite(e, "line\nbreak", b"v1\n")
    async with Env.running(app, cache) as e:
        assert await e.read_all("line\nbreak") == b"v1\n"
        await _rewrite(e, "line\nbreak", b"v2\n")  # a new id: named as created again
        e.clock.now += 11
        assert await e.read_all("line\nbreak") == b"v2\n"
        assert [r.filename for r in records(app)] == ["line%0Abreak"]


async def test_a_rewrite_of_the_plain_named_duplicate_keeps_its_place(
        app: Starlette, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = output(app, "report.csv", b"a,first\n")
    twin = output(app, "report.csv", b"b,twin\n")
    shown = f"report [{twin}].csv"
    async with Env.running(app, cache) as e:
        await _rewrite(e, "report.csv", b"c,new\n")
        for _ in range(2):  # as the upload left it, then as a new listing shows it
            assert await _names(e) == sorted(["report.csv", shown])
            assert await e.read_all("report.csv") == b"c,new\n"
            assert await e.read_all(shown) == b"b,twin\n"
            e.clock.now += 11
    remote = _remote(app, "report.csv")
    assert first not in remote and remote[twin] == b"b,twin\n"
    (new_id,) = remote.keys() - {twin}
    async with Env.running(app, cache) as e:  # the place is kept in the cache directory
        assert await _names(e) == sorted(["report.csv", shown])
        assert await e.read_all("report.csv") == b"c,new\n"
        await _rewrite(e, "report.csv", b"d,again\n")  # a rewrite of a rewrite: the same
        e.clock.now += 11
        assert await e.read_all("report.csv") == b"d,again\n"
        assert await _names(e) == sorted(["report.csv", shown])
        assert e.fs._state.ages.keys() == _remote(app, "report.csv").keys() - {twin}
    assert new_id not in _remote(app, "report.csv")


async def test_mv_over_the_plain_named_duplicate_keeps_its_place(
        env: Env, app: Starlette) -> None:
    output(app, "report.csv", b"a,first\n")
    twin = output(app, "report.csv", b"b,twin\n")
    output(app, "other.csv", b"c,other\n")
    shown = f"report [{twin}].csv"
    assert await _names(env) == sorted(["other.csv", "report.csv", shown])
    await env.fs.rename(ROOT_INODE, "other.csv", ROOT_INODE, "report.csv", 0)
    for _ in range(2):  # as the rename left it, then as a new listing shows it
        assert await _names(env) == sorted(["report.csv", shown])
        assert await env.read_all("report.csv") == b"c,other\n"
        assert await env.read_all(shown) == b"b,twin\n"
        env.clock.now += 11
    assert _remote(app, "report.csv")[twin] == b"b,twin\n"
