"""`--no-xattr` and the root's `.orfs-status` file, on real mounts.

With --no-xattr getxattr/listxattr answer ENOSYS once and the kernel stops asking, so
`ls -l` costs no xattr round trip per file; the status stays readable from the hidden
`.orfs-status` file (present in every mount), which `orfs status` falls back to.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mount.conftest import Mount

pytestmark = pytest.mark.fuse


def _orfs_status(mountpoint: Path) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", "orfs", "status", "--json", str(mountpoint)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    data: dict[str, object] = json.loads(r.stdout)
    return data


def _check_status_file(m: Mount) -> None:
    status = json.loads((m.path / ".orfs-status").read_bytes())
    assert {"pending", "uploading", "failed", "cache", "requests", "mountpoint"} <= set(status)
    assert m.emu.api_key not in json.dumps(status)
    assert ".orfs-status" not in os.listdir(m.path)  # hidden, like .by-id
    st = os.stat(m.path / ".orfs-status")
    assert st.st_mode & 0o777 == 0o444
    with pytest.raises(OSError) as e:
        os.unlink(m.path / ".orfs-status")
    assert e.value.errno == errno.EPERM
    (m.path / "x.txt").write_bytes(b"x\n")
    with pytest.raises(OSError) as e:
        os.rename(m.path / "x.txt", m.path / ".orfs-status")
    assert e.value.errno == errno.EPERM
    assert m.remote_named(".orfs-status") == []


def test_the_status_file_exists_beside_the_xattr(mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory()
    _check_status_file(m)
    assert json.loads(os.getxattr(m.path, "user.orfs.status"))["mountpoint"] == str(m.path)
    # the names ls -l asks for are answered without the core: ENOTSUP (no such namespace)
    for name in ("security.selinux", "system.posix_acl_access"):
        with pytest.raises(OSError) as e:
            os.getxattr(m.path / "x.txt", name)
        assert e.value.errno == errno.ENOTSUP
    with pytest.raises(OSError) as e:
        os.getxattr(m.path / "x.txt", "user.nothing")
    assert e.value.errno == errno.ENODATA
    assert "user.openrouter.id" in os.listxattr(m.path / "x.txt")


def test_no_xattr_mount_lists_and_reports_status(mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory("--no-xattr")
    for i in range(20):
        m.output(f"f{i:02d}.txt", b"x\n")
    m.emu.reset_stats()
    out = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, text=True,
                         check=True).stdout
    assert len(out.splitlines()) == 21
    assert m.emu.stats().get("retrieve", 0) == 0
    with pytest.raises(OSError) as e:
        os.getxattr(m.path / "f00.txt", "user.openrouter.id")
    assert e.value.errno == errno.ENOTSUP
    with pytest.raises(OSError) as e:
        os.listxattr(m.path / "f00.txt")
    assert e.value.errno == errno.ENOTSUP
    _check_status_file(m)
    status = _orfs_status(m.path)
    assert status["mountpoint"] == str(m.path)
    # reads and writes are unaffected
    assert (m.path / "f03.txt").read_bytes() == b"x\n"


def test_ls_asks_one_file_for_labels_and_acls(mount_factory: Callable[..., Mount],
                                              tmp_path: Path) -> None:
    # ls -l asks every file for security.selinux and system.posix_acl_access, and gives
    # up on a device once it answers ENOTSUP: 2 round trips for the folder, not 2 a file.
    m = mount_factory()
    for i in range(50):
        m.output(f"f{i:02d}.txt", b"x\n")
    trace = tmp_path / "trace"
    out = subprocess.run(["strace", "-f", "-qq", "-o", str(trace), "-e",
                          "trace=getxattr,lgetxattr", "ls", "-l", str(m.path)],
                         capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) == 51
    calls = [line for line in trace.read_text().splitlines() if "getxattr(" in line]
    assert 1 <= len(calls) <= 2, calls
    assert all("ENOTSUP" in line or "EOPNOTSUPP" in line for line in calls), calls
    assert "+" not in "".join(line.split()[0] for line in out.splitlines()[1:])  # no ACL mark
