"""Real mounts of the emulator: ``python -m orfs.fuse MOUNTPOINT -f`` in a subprocess.

If FUSE is unusable (no /dev/fuse or no fusermount3) these tests fail when CI=true and
are skipped otherwise. Teardown always unmounts (``fusermount3 -u``, then ``-u -z`` if
busy) and stops the child by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorProcess, new_workspace

FUSE_OK = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None
if not FUSE_OK:
    if os.environ.get("CI") == "true":
        pytest.fail("FUSE is not usable here (/dev/fuse or fusermount3 missing) and CI=true",
                    pytrace=False)
    pytest.skip("FUSE is not usable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

MOUNT_TIMEOUT = 20.0


class Mount:
    """One mount process; ``path`` is the mountpoint, ``workspace`` its workspace id."""

    def __init__(self, emu: EmulatorProcess, base: Path, *, workspace: str,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.emu = emu
        self.workspace = workspace
        self.path = base / "mnt"
        self.cache = base / "cache"
        self.log_path = base / "mount.log"
        self.path.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "orfs.fuse", str(self.path), "-f",
                "--api-base", self.emu.url, "--workspace", self.workspace,
                "--cache-dir", str(self.cache), *self.extra_args]

    def env(self, api_key: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["OPENROUTER_API_KEY"] = api_key or self.emu.api_key
        return env

    def start(self) -> Mount:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=self.env())
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None:
                raise AssertionError(f"the mount exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"not mounted within {MOUNT_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if os.path.ismount(self.path) or _listed(self.path):
            r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True,
                               check=False)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)],
                               capture_output=True, check=False)
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)

    # -- helpers for tests -------------------------------------------------------------

    def api(self) -> Any:
        return self.emu.client(params={"workspace_id": self.workspace})

    def remote_files(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.api() as c:
            params: dict[str, str] = {"limit": "1000"}
            while True:
                page = c.get("files", params=params).json()
                out.extend(page["data"])
                if not page.get("cursor"):
                    return out
                params = {"limit": "1000", "cursor": page["cursor"]}

    def remote_named(self, filename: str) -> list[dict[str, Any]]:
        return [f for f in self.remote_files() if f["filename"] == filename]

    def output(self, filename: str, data: bytes) -> dict[str, Any]:
        return self.emu.create_output(filename, data, workspace_id=self.workspace)


def _listed(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == str(path) for line in f)
    except OSError:
        return False


@pytest.fixture
def mount_factory(emulator_session: EmulatorProcess, tmp_path: Path
                  ) -> Iterator[Callable[..., Mount]]:
    """``mount_factory(*extra_args, workspace=None, emu=None)``: a fresh mount (of the
    session emulator unless ``emu`` is given)."""
    mounts: list[Mount] = []

    def make(*extra_args: str, workspace: str | None = None,
             emu: EmulatorProcess | None = None) -> Mount:
        m = Mount(emu or emulator_session, tmp_path / f"m{len(mounts)}",
                  workspace=workspace or new_workspace(), extra_args=extra_args)
        mounts.append(m)
        return m.start()

    try:
        yield make
    finally:
        for m in mounts:
            m.stop()


@pytest.fixture(scope="module")
def shared_mount(emulator_session: EmulatorProcess,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount of a fresh workspace shared by a module's tests (they must not assume
    an empty root: each uses its own names)."""
    m = Mount(emulator_session, tmp_path_factory.mktemp("shared-mount"),
              workspace=new_workspace())
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def mnt(shared_mount: Mount) -> Mount:
    shared_mount.emu.reset_stats()
    return shared_mount
