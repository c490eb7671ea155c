"""The filesystem core over the emulator in process (httpx.ASGITransport): no kernel.

Shared by the kernel-free core tests (tests/core, tests/reliability/test_core_faults.py):

- ``app``: the emulator app, its data in ``tmp_path / "emu"`` (a fixture; tests/core gets
  it from its conftest, other folders import it);
- ``output(app, name, data)``: a downloadable output file added behind the API's back;
- ``records(app, filename=None)``: what the emulator stores, without a request;
- ``Env``: a ``Filesystem`` with its client, content cache and state over the emulator;
  ``Env.running(app, cache, ...)`` runs one (subclasses get their own class back) and
  ``env_fixture(...)`` makes an ``env`` fixture of it, with the variations as parameters.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import trio
from starlette.applications import Starlette

from orfs.api.client import FilesClient
from orfs.core.cache import ContentCache
from orfs.core.fs import Filesystem
from orfs.core.inodes import ROOT_INODE
from orfs.core.state import State
from orfs.emulator.app import EmulatorConfig, create_app
from orfs.emulator.store import FileRecord, Scope

KEY = "core-test-key"
URL = "http://emulator.test/api/v1"


class Clock:
    """A clock that moves only when a test moves it (``clock.now += 11``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    a = create_app(EmulatorConfig(data_dir=tmp_path / "emu", api_key=KEY))
    yield a
    a.state.emulator.store.close()


def output(app: Starlette, name: str, data: bytes) -> str:
    rec = app.state.emulator.store.add_bytes(Scope(), data, filename=name,
                                             mime_type="text/plain", downloadable=True)
    return str(rec.id)


def records(app: Starlette, filename: str | None = None) -> list[FileRecord]:
    recs, _ = app.state.emulator.store.page(Scope(), after_seq=None, limit=1000)
    return [r for r in recs if filename is None or r.filename == filename]


def asgi(app: Starlette) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=app)


class Env:
    """One running core: ``fs``, its ``client`` and ``clock``, the emulator ``app`` and the
    ``transport`` the client sends through."""

    def __init__(self, app: Starlette, fs: Filesystem, client: FilesClient, clock: Clock,
                 transport: httpx.AsyncBaseTransport) -> None:
        self.app = app
        self.fs = fs
        self.client = client
        self.clock = clock
        self.transport = transport

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, app: Starlette, cache: Path, *,
                      transport: Callable[[Starlette], httpx.AsyncBaseTransport] = asgi,
                      client_class: type[FilesClient] = FilesClient,
                      client_options: Mapping[str, Any] | None = None,
                      held_uploads: bool = False, streams: bool = False,
                      **fs_options: Any) -> AsyncIterator[Self]:
        """The core over ``app`` with its state in ``cache``, until the block ends.

        ``transport(app)`` is what the client sends through; ``client_options`` go to the
        client, ``fs_options`` (``temp_grace``, ``stream_uploads``, ...) to ``Filesystem``.
        ``fs.run`` runs throughout; ``held_uploads`` turns on the uploads held for
        temporary names and ``streams`` the streamed uploads (both off by default).
        """
        via = transport(app)
        client = client_class(URL, KEY, transport=via, **(client_options or {}))
        state = State(cache)
        content = ContentCache(cache, 1 << 30, client, state)
        clock = Clock()
        # `fs.run` runs all of the core's background work; what a test leaves off is
        # switched off by its own option: no grace period holds nothing, and uploads
        # that may not stream do not.
        if not held_uploads:
            fs_options.setdefault("temp_grace", 0.0)
        if not streams:
            fs_options.setdefault("stream_uploads", False)
        fs = Filesystem(client, content, state, staging_dir=cache / "staging",
                        dir_cache_ttl=10.0, clock=clock, **fs_options)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(fs.run)
                yield cls(app, fs, client, clock, via)
                nursery.cancel_scope.cancel()
        finally:
            await client.aclose()
            state.close()

    def remote(self, filename: str | None = None) -> list[FileRecord]:
        return records(self.app, filename)

    async def path(self, *names: str) -> int:
        ino = int(ROOT_INODE)
        for n in names:
            ino = int((await self.fs.lookup(ino, n)).ino)
        return ino

    async def close(self, fh: int) -> None:
        try:
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def write_file(self, name: str, data: bytes, parent: int = ROOT_INODE) -> int:
        fh, attrs = await self.fs.create(parent, name, 0o644, os.O_WRONLY | os.O_CREAT)
        await self.fs.write(fh, 0, data)
        await self.close(fh)
        return int(attrs.ino)

    async def read_all(self, file: int | str) -> bytes:
        """Every byte of a file: an inode, or a name in the root folder."""
        if isinstance(file, str):
            file = int((await self.fs.lookup(ROOT_INODE, file)).ino)
        fh = await self.fs.open(file, os.O_RDONLY)
        out = b""
        try:
            while chunk := await self.fs.read(fh, len(out), 1 << 20):
                out += chunk
        finally:
            await self.fs.release(fh)
        return out


def env_fixture(env_class: type[Env] = Env, **options: Any) -> Any:
    """An ``env`` fixture: ``env_class.running(app, tmp_path / "cache", **options)``."""

    @pytest.fixture
    async def env(app: Starlette, tmp_path: Path) -> AsyncIterator[Env]:
        async with env_class.running(app, tmp_path / "cache", **options) as e:
            yield e

    return env
