"""The process harness on real mounts: a mountpoint whose name needs escaping in
mountinfo (space, tab, newline, backslash) is found, unmounted and stopped; `Mount.stop`
fails on a mount that died with a bad status or logged a traceback, after cleaning up
all the same."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from orfs import mountinfo
from tests.conftest import EmulatorProcess, new_workspace
from tests.mount.conftest import FUSE_OK, Mount  # noqa: F401  (fails, never skips, under CI)

pytestmark = pytest.mark.fuse


def test_a_mountpoint_with_a_space_tab_newline_and_backslash(
        emulator_session: EmulatorProcess, tmp_path: Path) -> None:
    m = Mount(emulator_session, tmp_path / "odd dir\twith\nline\\escapes",
              workspace=new_workspace())
    m.start()
    try:
        entry = mountinfo.entry_of(m.path)
        assert entry is not None and entry.fstype.startswith("fuse"), entry
        assert entry.mountpoint == str(m.path)
        (m.path / "f.txt").write_bytes(b"x\n")
    finally:
        assert m.stop() == 0
    assert not mountinfo.is_listed(m.path) and not os.path.ismount(m.path)


def test_stop_fails_on_a_mount_that_was_killed(emulator_session: EmulatorProcess,
                                               tmp_path: Path) -> None:
    m = Mount(emulator_session, tmp_path, workspace=new_workspace()).start()
    assert m.proc is not None
    os.kill(m.proc.pid, signal.SIGKILL)  # not through m.kill: not expected
    m.proc.wait(10)
    with pytest.raises(AssertionError, match="exited with -9"):
        m.stop()
    assert m.proc is None and not mountinfo.is_listed(m.path)  # cleaned up anyway


def test_a_kill_the_test_asked_for_is_no_failure(emulator_session: EmulatorProcess,
                                                 tmp_path: Path) -> None:
    m = Mount(emulator_session, tmp_path, workspace=new_workspace()).start()
    m.kill(signal.SIGKILL)
    assert m.stop() == -signal.SIGKILL
    assert not mountinfo.is_listed(m.path)


def test_stop_fails_on_a_traceback_in_the_log(emulator_session: EmulatorProcess,
                                              tmp_path: Path) -> None:
    m = Mount(emulator_session, tmp_path, workspace=new_workspace()).start()
    with m.log_path.open("a") as log:  # what logging writes for an uncaught exception
        log.write("Traceback (most recent call last):\n  File \"x.py\"\nValueError: boom\n")
    with pytest.raises(AssertionError, match="logged a traceback"):
        m.stop()
    assert m.returncode == 0 and not mountinfo.is_listed(m.path)
