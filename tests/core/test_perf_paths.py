"""Behaviour kept by the hot-path shortcuts (no timings: bench.py has those).

- getxattr of a non-`user.` name is answered before any core call (ops.py);
- attribute freshness is one listing time plus refresh times per retrieved file
  (namespace.py), still "one retrieve of that file, never a re-list".
"""

from __future__ import annotations

import errno

import pyfuse3
import pytest
from starlette.applications import Starlette

from orfs.core.inodes import ROOT_INODE
from orfs.fuse.ops import Operations
from tests.core.harness import Env, env_fixture, output

env = env_fixture()  # the emulator-backed core, as test_fs has it


class _NoCore:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the core was called: {name}")


@pytest.mark.parametrize("name", [b"security.selinux", b"system.posix_acl_access",
                                  b"system.posix_acl_default", b"trusted.x"])
async def test_non_user_xattrs_answer_enotsup_without_the_core(name: bytes) -> None:
    # ENOTSUP, not ENODATA: the namespace does not exist here, and ls remembers that.
    ops = Operations(_NoCore())  # type: ignore[arg-type]
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getxattr(1, name, None)  # type: ignore[arg-type]
    assert info.value.errno == errno.ENOTSUP


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
