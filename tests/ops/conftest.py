"""Fixtures for the operations tests: real mounts driven through the `orfs` command line.

Everything here goes through the installed console scripts (`orfs`, `mount.orfs`), as a
user or mount(8) would. Every mount made is unmounted at teardown (orfs unmount, then
fusermount3 -u, then -u -z) and every process started is stopped by its PID (the
helpers underneath are tests/mounting.py's).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorProcess
from tests.mounting import (
    fuse_missing_reason,
    in_ci,
    is_mounted,
    mount_entry,
    read_status,
    stop_process,
    unmount,
    wait_mounted,
    wait_until,
)

# What the operations tests import from here.
__all__ = ["MOUNT_ORFS", "ORFS", "Mounts", "clean_env", "in_ci", "is_mounted", "mount_entry",
           "require_root", "run", "wait_until"]

BIN = Path(sys.prefix) / "bin"
ORFS = BIN / "orfs"
MOUNT_ORFS = BIN / "mount.orfs"
MOUNT_TIMEOUT = 60.0


def require_fuse() -> None:
    """FUSE tests fail (never skip) in CI when FUSE is missing; elsewhere they skip."""
    reason = fuse_missing_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"FUSE is required in CI: {reason}")
    pytest.skip(reason)


def require_root(what: str) -> None:
    if os.geteuid() == 0:
        return
    if in_ci():
        pytest.fail(f"{what} needs root in CI")
    pytest.skip(f"{what} needs root")


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any real API key (tests use the emulator's key file)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "NOTIFY_SOCKET")}
    env.update(extra)
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Mounts:
    """Mounts orfs at test mountpoints and always cleans up after them."""

    def __init__(self, tmp_path: Path, emulator: EmulatorProcess) -> None:
        self.tmp = tmp_path
        self.emulator = emulator
        self.key_file = tmp_path / "key"
        self.key_file.write_text(emulator.api_key + "\n")
        self.key_file.chmod(0o600)
        self.cache_dir = tmp_path / "cache"
        self.mountpoints: list[Path] = []
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def mountpoint(self, name: str = "mnt") -> Path:
        mnt = self.tmp / name
        mnt.mkdir(exist_ok=True)
        self.mountpoints.append(mnt)
        return mnt

    def base_args(self) -> list[str]:
        return ["--api-base", self.emulator.url, "--api-key-file", str(self.key_file),
                "--cache-dir", str(self.cache_dir)]

    def option_string(self, **more: str) -> str:
        opts = {"api_base": self.emulator.url, "api_key_file": str(self.key_file),
                "cache_dir": str(self.cache_dir), **more}
        return ",".join(f"{k}={v}" if v else k for k, v in opts.items())

    def track(self, mnt: Path) -> None:
        """Remember the serving process of a live mount, to stop it at teardown."""
        if mnt not in self.mountpoints:
            self.mountpoints.append(mnt)
        with contextlib.suppress(OSError, ValueError):
            pid = read_status(mnt).get("pid")
            if isinstance(pid, int):
                self.pids.append(pid)

    def mount(self, mnt: Path, *args: str, env: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """`orfs mount MNT ARGS` in the background mode; returns once it returned."""
        log = self.tmp / f"mount-{len(self.mountpoints)}.out"
        with log.open("w+") as out:
            result = subprocess.run(
                [str(ORFS), "mount", str(mnt), *self.base_args(), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env or clean_env(), timeout=MOUNT_TIMEOUT, text=True)
            out.seek(0)
            result.stdout = out.read()
        if check:
            assert result.returncode == 0, f"orfs mount failed: {result.stdout}"
            assert is_mounted(mnt), f"orfs mount returned 0 but {mnt} is not mounted"
        self.track(mnt)
        return result

    def mount_foreground(self, mnt: Path, *args: str, log_path: Path,
                         env: dict[str, str] | None = None,
                         wait: bool = True) -> subprocess.Popen[bytes]:
        """`orfs mount -f MNT ARGS` as a child process, its stderr into `log_path`."""
        out = log_path.open("wb")
        self._logs.append(out)
        proc = subprocess.Popen(
            [str(ORFS), "mount", "-f", str(mnt), *self.base_args(), *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env or clean_env())
        self.procs.append(proc)
        if mnt not in self.mountpoints:
            self.mountpoints.append(mnt)
        if wait:
            assert wait_mounted(mnt, proc, MOUNT_TIMEOUT), (
                f"orfs mount -f did not mount (exit {proc.poll()}):\n"
                f"{log_path.read_text(errors='replace')}")
        return proc

    def unmount(self, mnt: Path, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(ORFS), "unmount", str(mnt), *args],
                                capture_output=True, text=True, timeout=MOUNT_TIMEOUT,
                                env=clean_env(), stdin=subprocess.DEVNULL)
        return result

    def cleanup(self) -> None:
        for mnt in reversed(self.mountpoints):
            if not is_mounted(mnt):
                continue
            self.track(mnt)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.unmount(mnt, "--timeout", "5")
            unmount(mnt)
        for proc in self.procs:
            stop_process(proc)
        for pid in self.pids:
            if not wait_until(lambda p=pid: not _alive(p), 10):  # type: ignore[misc]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for f in self._logs:
            f.close()
        leftover = [str(m) for m in self.mountpoints if is_mounted(m)]
        assert not leftover, f"still mounted after cleanup: {leftover}"


@pytest.fixture
def mounts(tmp_path: Path, emulator: EmulatorProcess) -> Iterator[Mounts]:
    require_fuse()
    m = Mounts(tmp_path, emulator)
    try:
        yield m
    finally:
        m.cleanup()


def run(cmd: Sequence[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command (stdin closed, output captured as text)."""
    kw.setdefault("env", clean_env())
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)
