"""Real mounts for the tests: start an orfs mount process, wait for it, always clean up.

The processes themselves are run by `orfs.testing.processes` (shared with scripts/);
this adds what every FUSE test folder needs:

- whether FUSE is usable here (`fuse_missing_reason`; FUSE tests fail, never skip,
  when `in_ci`);
- whether a path is mounted (`is_mounted`: /proc/self/mountinfo, which also lists a
  dead FUSE mount that `os.path.ismount` misses) and waiting for it (`wait_mounted`);
- tearing down: `unmount` (``fusermount3 -u``, then ``-u -z`` if busy) and
  `stop_process` (by PID: wait, SIGTERM, SIGKILL);
- `Mount`: one ``python -m orfs.fuse MOUNTPOINT -f`` child of the emulator, used by
  tests/mount and tests/reliability; `mounted` starts one and always stops it. Its
  `stop` fails the test if the mount exited with an unexpected status (not 0, or not
  the signal of a `kill` the test sent) or logged a traceback.

tests/ops drives mounts through the installed ``orfs`` command instead (its conftest's
`Mounts`), with the same helpers underneath. Nothing here checks FUSE at import, so
core-level tests can import it where FUSE is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orfs.mountinfo import MountEntry, entry_of
from orfs.mountinfo import is_listed as is_mounted
from orfs.testing.processes import (
    MOUNT_TIMEOUT,
    EmulatorProcess,
    MountProcess,
    stop_process,
    unmount,
    wait_for,
    wait_mounted,
    wait_until,
)
from tests.conftest import new_workspace

__all__ = ["MOUNT_TIMEOUT", "Mount", "fuse_missing_reason", "in_ci", "is_mounted",
           "mount_entry", "mounted", "read_status", "stop_process", "unmount", "wait_for",
           "wait_mounted", "wait_until"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def fuse_missing_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


def mount_entry(path: Path) -> MountEntry | None:
    """The /proc/self/mountinfo entry of `path` (also for a dead FUSE mount, which
    `os.path.ismount` may miss)."""
    return entry_of(path)


def read_status(mnt: Path) -> dict[str, Any]:
    """The mount root's user.orfs.status JSON."""
    status: dict[str, Any] = json.loads(os.getxattr(mnt, "user.orfs.status"))
    return status


class Mount(MountProcess):
    """One ``python -m orfs.fuse MOUNTPOINT -f`` of the emulator; ``path`` is the
    mountpoint, ``workspace`` its workspace id. `stop` fails the test if the process
    exited with an unexpected status or logged a traceback."""

    def __init__(self, emu: EmulatorProcess, base: Path, *, workspace: str,
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__([], base / "mnt", base / "mount.log")
        self.emu = emu
        self.workspace = workspace
        self.cache = base / "cache"
        self.path.mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return [sys.executable, "-m", "orfs.fuse", str(self.path), "-f",
                "--api-base", self.emu.url, "--workspace", self.workspace,
                "--cache-dir", str(self.cache), *self.extra_args]

    def env(self, api_key: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["OPENROUTER_API_KEY"] = api_key or self.emu.api_key
        return env

    @property
    def name(self) -> str:
        return "the mount"

    def start(self, timeout: float = MOUNT_TIMEOUT) -> Mount:
        super().start(timeout)
        return self

    def stop(self) -> int | None:
        """Unmount and stop; AssertionError (after both) if the process exited with an
        unexpected status or logged a traceback."""
        ran = self.proc is not None
        code = super().stop()
        if ran and (problems := self.problems()):
            raise AssertionError("; ".join(problems) + f"; its log:\n{self.tail()}")
        return code

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


@contextlib.contextmanager
def mounted(emu: EmulatorProcess, base: Path) -> Iterator[Mount]:
    """A mount of a fresh workspace, stopped at the end whatever happened."""
    m = Mount(emu, base, workspace=new_workspace())
    m.start()
    try:
        yield m
    finally:
        m.stop()
