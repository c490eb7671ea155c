"""Real mounts for the tests: start an orfs mount process, wait for it, always clean up.

One place for what every FUSE test folder needs:

- whether FUSE is usable here (`fuse_missing_reason`; FUSE tests fail, never skip,
  when `in_ci`);
- whether a path is mounted (`is_mounted`: /proc/self/mountinfo, which also lists a
  dead FUSE mount that `os.path.ismount` misses) and waiting for it (`wait_mounted`);
- tearing down: `unmount` (``fusermount3 -u``, then ``-u -z`` if busy) and
  `stop_process` (by PID: wait, SIGTERM, SIGKILL);
- `Mount`: one ``python -m orfs.fuse MOUNTPOINT -f`` child of the emulator, used by
  tests/mount and tests/reliability; `mounted` starts one and always stops it.

tests/ops drives mounts through the installed ``orfs`` command instead (its conftest's
`Mounts`), with the same helpers underneath. Nothing here checks FUSE at import, so
core-level tests can import it where FUSE is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import EmulatorProcess, new_workspace, read_log

MOUNT_TIMEOUT = 20.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def fuse_missing_reason() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


def _unescape_mountinfo(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_entry(path: Path) -> dict[str, str] | None:
    """The /proc/self/mountinfo entry of `path` (also for a dead FUSE mount, which
    `os.path.ismount` may miss): {"source", "fstype", "options"}."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if _unescape_mountinfo(fields[4]) == target:
                fstype, source, super_opts = (right.split() + ["", "", ""])[:3]
                found = {"fstype": fstype, "source": _unescape_mountinfo(source),
                         "options": fields[5] + "," + super_opts}
    return found  # the last one wins: it is the one on top


def is_mounted(path: Path) -> bool:
    """Listed in /proc/self/mountinfo (true of a dead FUSE mount too)."""
    return mount_entry(path) is not None


def wait_until(predicate: Callable[[], object], timeout: float,
               interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    if not wait_until(pred, timeout, step):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_mounted(path: Path, proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Until `path` answers as a mount point (True); False if `proc` exited first or
    `timeout` passed."""
    wait_until(lambda: os.path.ismount(path) or proc.poll() is not None, timeout)
    return proc.poll() is None and os.path.ismount(path)


def read_status(mnt: Path) -> dict[str, Any]:
    """The mount root's user.orfs.status JSON."""
    status: dict[str, Any] = json.loads(os.getxattr(mnt, "user.orfs.status"))
    return status


def unmount(path: Path) -> None:
    """``fusermount3 -u``, then ``-u -z`` if it is still mounted (busy)."""
    for cmd in (["fusermount3", "-u"], ["fusermount3", "-u", "-z"]):
        if not is_mounted(path):
            break
        subprocess.run([*cmd, str(path)], capture_output=True, timeout=30, check=False)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Let it exit for `timeout` seconds, then SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


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
        if not wait_mounted(self.path, self.proc, MOUNT_TIMEOUT):
            if self.proc.poll() is not None:
                raise AssertionError(f"the mount exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            self.stop()
            raise AssertionError(f"not mounted within {MOUNT_TIMEOUT}s:\n{self.log()}")
        return self

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        unmount(self.path)
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

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
