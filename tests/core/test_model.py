"""The core against a plain model: hypothesis drives random sequences of operations.

A `RuleBasedStateMachine` creates, rewrites in place, truncates, renames (over existing
files too), unlinks, makes and removes folders, remounts (a new `Filesystem` over the
same cache directory and emulator), and lets a second client upload and delete files
behind the mount's back. After every step the mount must agree with a model that is
nothing but a dict of path -> bytes and a set of folders:

- every path reads its own bytes, and every folder lists exactly the model's entries;
- the emulator holds exactly one file per model file, under its name, with its bytes:
  nothing replaced left behind, nothing lost;
- each step made exactly the uploads it had to (one per file written or renamed, none
  for unlink, mkdir, rmdir, or a rename onto itself): nothing is uploaded twice.

The core runs in trio in a thread of its own (hypothesis drives steps synchronously);
each step is one `trio.from_thread.run` into it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orfs.core.errors import NoEntry
from orfs.core.inodes import ROOT_INODE
from orfs.emulator.app import EmulatorConfig, create_app
from orfs.emulator.store import Scope
from tests.core.harness import KEY, Env, output, records

T = TypeVar("T")

NAMES = ["a", "b.txt", "c d.md", "ext.txt"]  # few names: collisions on purpose
FOLDERS = ["x", "y"]
TEXT = st.text(alphabet="ab\n", min_size=1, max_size=40).map(str.encode)  # UTF-8 text
PATHS = st.tuples(st.sampled_from(["", *FOLDERS]), st.sampled_from(NAMES)).map(
    lambda t: (t[1],) if not t[0] else (t[0], t[1]))


class CoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="orfs-model-"))
        self.app = create_app(EmulatorConfig(data_dir=self.tmp / "emu", api_key=KEY))
        self.files: dict[tuple[str, ...], bytes] = {}
        self.folders: set[tuple[str, ...]] = set()
        self.external = 0
        self._env: Env | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._remount: trio.Event | None = None
        self._stop = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._wait_ready()

    # ---- the core, in its own trio thread ------------------------------------------------

    def _serve(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by the next step
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        while not self._stop:
            async with Env.running(self.app, self.tmp / "cache") as env:
                self._env = env
                self._remount = trio.Event()
                self._ready.set()
                await self._remount.wait()
                self._env = None

    def _wait_ready(self) -> None:
        assert self._ready.wait(30), "the core did not start"
        if self._error is not None:
            raise self._error

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    @property
    def env(self) -> Env:
        assert self._env is not None
        return self._env

    def teardown(self) -> None:
        if self._token is not None and self._remount is not None:
            self._stop = True
            trio.from_thread.run_sync(self._remount.set, trio_token=self._token)
        self._thread.join(30)
        self.app.state.emulator.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- paths ---------------------------------------------------------------------------

    async def _ino(self, path: tuple[str, ...]) -> int:
        ino = int(ROOT_INODE)
        for name in path:
            ino = int((await self.env.fs.lookup(ino, name)).ino)
        return ino

    async def _exists(self, path: tuple[str, ...]) -> bool:
        try:
            await self._ino(path)
        except NoEntry:
            return False
        return True

    def uploads(self) -> int:
        return self.env.client.stats()["upload"]

    def run_uploading(self, n: int, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a step that must make exactly n uploads (nothing is uploaded twice)."""
        before = self.uploads()
        self.run(fn)
        assert self.uploads() - before == n

    def _folder_ok(self, path: tuple[str, ...]) -> bool:
        return len(path) == 1 or path[:-1] in self.folders

    def _is_folder(self, path: tuple[str, ...]) -> bool:
        return path in self.folders

    # ---- rules ---------------------------------------------------------------------------

    @rule(path=PATHS, data=TEXT)
    def create(self, path: tuple[str, ...], data: bytes) -> None:
        """Write a whole file (new, or over an existing one: O_TRUNC)."""
        if not self._folder_ok(path) or self._is_folder(path):
            return

        async def go() -> None:
            parent = await self._ino(path[:-1])
            fh, _ = await self.env.fs.create(parent, path[-1], 0o644,
                                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            await self.env.fs.write(fh, 0, data)
            await self.env.close(fh)

        self.run_uploading(1, go)
        self.files[path] = data

    @rule(data=st.data(), piece=TEXT)
    @precondition(lambda self: bool(self.files))
    def write_in_place(self, data: st.DataObject, piece: bytes) -> None:
        """Open without O_TRUNC and overwrite or extend from an offset (a rewrite)."""
        path = data.draw(st.sampled_from(sorted(self.files)))
        old = self.files[path]
        offset = data.draw(st.integers(0, len(old)))

        async def go() -> None:
            fh = await self.env.fs.open(await self._ino(path), os.O_WRONLY)
            await self.env.fs.write(fh, offset, piece)
            await self.env.close(fh)

        self.run_uploading(1, go)
        self.files[path] = old[:offset] + piece + old[offset + len(piece):]

    @rule(data=st.data())
    @precondition(lambda self: any(len(b) > 1 for b in self.files.values()))
    def truncate(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(p for p, b in self.files.items() if len(b) > 1)))
        size = data.draw(st.integers(1, len(self.files[path]) - 1))

        async def go() -> None:
            await self.env.fs.setattr(await self._ino(path), size=size)

        self.run_uploading(1, go)
        self.files[path] = self.files[path][:size]

    @rule(data=st.data(), dst=PATHS)
    @precondition(lambda self: bool(self.files))
    def rename(self, data: st.DataObject, dst: tuple[str, ...]) -> None:
        src = data.draw(st.sampled_from(sorted(self.files)))
        if not self._folder_ok(dst) or self._is_folder(dst):
            return

        async def go() -> None:
            await self.env.fs.rename(await self._ino(src[:-1]), src[-1],
                                     await self._ino(dst[:-1]), dst[-1], 0)

        self.run_uploading(0 if src == dst else 1, go)
        self.files[dst] = self.files.pop(src)

    @rule(data=st.data())
    @precondition(lambda self: bool(self.files))
    def unlink(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))

        async def go() -> None:
            await self.env.fs.unlink(await self._ino(path[:-1]), path[-1])

        self.run_uploading(0, go)
        del self.files[path]
        if len(path) > 1:
            self.folders.add(path[:-1])  # a folder the user saw stays when emptied

    @rule(name=st.sampled_from(FOLDERS))
    def mkdir(self, name: str) -> None:
        path = (name,)
        if path in self.folders or path in self.files:
            return
        self.run(self.env.fs.mkdir, ROOT_INODE, name, 0o755)
        self.folders.add(path)

    @rule(name=st.sampled_from(FOLDERS))
    def rmdir(self, name: str) -> None:
        path = (name,)
        if path not in self.folders or any(p[:1] == path for p in self.files):
            return
        self.run(self.env.fs.rmdir, ROOT_INODE, name)
        self.folders.discard(path)

    @rule()
    def remount(self) -> None:
        """A new mount over the same cache and workspace. Folders are not stored by the
        service: an empty one is gone (SEMANTICS.md, mkdir)."""
        assert self._token is not None and self._remount is not None
        self._ready.clear()
        trio.from_thread.run_sync(self._remount.set, trio_token=self._token)
        self._wait_ready()
        self.folders = {f for f in self.folders if any(p[:1] == f for p in self.files)}

    @rule()
    def listing_expires(self) -> None:
        self.env.clock.now += 11

    @rule(data=TEXT)
    def second_client_uploads(self, data: bytes) -> None:
        """Another client adds a file (an output, downloadable); the mount shows it after
        its listing expires."""
        self.external += 1
        name = f"ext-{self.external}.txt"
        output(self.app, name, data)
        self.env.clock.now += 11
        self.files[(name,)] = data

    @rule(data=st.data())
    @precondition(lambda self: any(len(p) == 1 for p in self.files))
    def second_client_deletes(self, data: st.DataObject) -> None:
        """Another client deletes a top-level file; the mount notices when it looks."""
        path = data.draw(st.sampled_from(sorted(p for p in self.files if len(p) == 1)))
        (rec,) = records(self.app, path[0])
        self.app.state.emulator.store.delete(Scope(), rec.id)
        self.env.clock.now += 11
        del self.files[path]

    # ---- what must hold after every step --------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        if self._env is None:
            return

        async def check() -> None:
            for path, data in self.files.items():
                assert await self.env.read_all(await self._ino(path)) == data, path
            for folder in [(), *self.folders]:
                fs = self.env.fs
                fh = await fs.opendir(await self._ino(folder))
                try:
                    listed = {name for _, name, _ in fs.readdir(fh, 0)}
                finally:
                    fs.releasedir(fh)
                want = {p[len(folder)] for p in [*self.files, *self.folders]
                        if len(p) > len(folder) and p[:len(folder)] == folder}
                assert listed == want, (folder, listed, want)
            for folder in FOLDERS:
                if (folder,) not in self.folders and not any(p[:1] == (folder,)
                                                             for p in self.files):
                    assert not await self._exists((folder,)), folder

        self.run(check)
        remote: dict[str, list[bytes]] = {}
        store = self.app.state.emulator.store
        for rec in records(self.app):
            remote.setdefault(rec.filename, []).append(store.blob_path(rec.id).read_bytes())
        want = {"/".join(p): [b] for p, b in self.files.items()}
        assert remote == want


CoreModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("ORFS_MODEL_EXAMPLES", "40")), stateful_step_count=30,
    deadline=None, suppress_health_check=[HealthCheck.too_slow])


class TestCoreModel(CoreModel.TestCase):
    pass
