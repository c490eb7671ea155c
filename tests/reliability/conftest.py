"""Fixtures for the reliability tests.

- ``FixedPortEmulator``: an emulator that comes back on the same port after
  ``restart()``, so a live mount sees "the API went away and came back".
- ``rig``: makes emulators and mounts (``tests.mounting.Mount``) with any flags and
  cache directory, and stops all of them at teardown, whatever the test did: unmount
  (``fusermount3 -u``, then ``-u -z``), then the mount process and emulators by PID.

Nothing here imports the FUSE fixtures, so the core-level tests in this folder run
where FUSE is missing; the FUSE tests import ``tests.mount.conftest`` (which fails,
never skips, when CI=true and FUSE is missing).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EmulatorProcess, new_workspace
from tests.mounting import Mount, is_mounted, read_status, wait_for

__all__ = ["MiB", "Rig", "listed", "pdf_bytes", "status", "wait_for"]  # for the tests

MiB = 1024 * 1024
# The names the reliability tests know the shared helpers by.
status = read_status
listed = is_mounted


class FixedPortEmulator(EmulatorProcess):
    """Picks a free port on its first start and keeps it across restarts."""

    def __init__(self, data_dir: Path, **kw: Any) -> None:
        super().__init__(data_dir, **kw)
        self.fixed_port = 0

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("--port")
        cmd[i + 1] = str(self.fixed_port)
        return cmd

    def start(self, timeout: float = 20.0) -> EmulatorProcess:
        deadline = time.monotonic() + timeout
        while True:
            try:
                super().start(timeout)
                break
            except Exception:
                # The port of a just-stopped server can take a moment to be free again.
                if not self.fixed_port or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.fixed_port = self.port
        return self


def pdf_bytes(n: int, seed: int) -> bytes:
    """n bytes the emulator accepts (PDF magic, then random bytes)."""
    import random
    head = b"%PDF-1.4\n"
    return head + random.Random(seed).randbytes(max(0, n - len(head)))


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.emulators: list[EmulatorProcess] = []
        self.mounts: list[Mount] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def emulator(self, *flags: str, fixed_port: bool = False,
                 data_dir: Path | None = None) -> EmulatorProcess:
        d = data_dir or self.tmp / f"emu{len(self.emulators)}"
        emu: EmulatorProcess = (FixedPortEmulator(d, extra_args=flags) if fixed_port
                                else EmulatorProcess(d, extra_args=flags))
        self.emulators.append(emu)
        return emu.start()

    def mount(self, emu: EmulatorProcess, *args: str, workspace: str | None = None,
              base: Path | None = None, start: bool = True) -> Mount:
        m = Mount(emu, base or self.tmp / f"m{len(self.mounts)}",
                  workspace=workspace or new_workspace(), extra_args=args)
        self.mounts.append(m)
        return m.start() if start else m

    def remount(self, old: Mount, *args: str) -> Mount:
        """A new mount process of the same mountpoint, cache dir and workspace."""
        m = Mount(old.emu, old.path.parent, workspace=old.workspace,
                  extra_args=args or old.extra_args)
        m.log_path = old.path.parent / f"mount-{len(self.mounts)}.log"
        self.mounts.append(m)
        return m.start()

    def popen(self, cmd: Sequence[str | Path], **kw: Any) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([str(c) for c in cmd], **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        failures: list[str] = []
        for m in reversed(self.mounts):
            proc = m.proc
            if proc is not None and proc.poll() is None and not is_mounted(m.path):
                # Unmounted by the test, yet still serving (say, uploads to an API that
                # is gone): the test is over, so this exit is not a failure.
                m.kill(signal.SIGKILL)
            try:
                m.stop()
            except AssertionError as e:  # stop the rest first, then fail
                failures.append(f"{m.path}: {e}")
        for e in self.emulators:
            e.stop()
        if failures:
            raise AssertionError("\n".join(failures))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()
