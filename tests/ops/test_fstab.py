"""fstab: `mount -t fuse.orfs`, `mount -T FSTAB MNT` and mount.fuse3, end to end.

util-linux's mount(8) runs `/sbin/mount.fuse.orfs SOURCE MNT -o rw,OPTS` when that file
exists, with HOME and PATH removed from the environment (measured on Debian 12). The
fixture links it to this virtualenv's `mount.orfs`, exactly as docs/OPERATIONS.md tells
a user to, and removes the link afterwards only if it made it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orfs import mountinfo

from .conftest import (
    MOUNT_ORFS,
    ORFS,
    Mounts,
    clean_env,
    is_mounted,
    mount_entry,
    require_root,
    run,
)

HELPER = Path("/sbin/mount.fuse.orfs")

# One xdist worker for the whole module: the /sbin link is one for the machine, and a
# test that made it removes it at its end.
pytestmark = [pytest.mark.fuse, pytest.mark.xdist_group("sbin-mount-helper")]


@pytest.fixture
def helper_link(mounts: Mounts) -> Iterator[Path]:
    """/sbin/mount.fuse.orfs -> this virtualenv's mount.orfs."""
    require_root("linking /sbin/mount.fuse.orfs and mount(8)")
    created = False
    if HELPER.is_symlink() or HELPER.exists():
        if HELPER.resolve() != MOUNT_ORFS.resolve():
            pytest.fail(f"{HELPER} exists and is not this checkout's mount.orfs "
                        f"({HELPER.resolve()}); remove it or point it at {MOUNT_ORFS}")
    else:
        HELPER.symlink_to(MOUNT_ORFS)
        created = True
    try:
        yield HELPER
    finally:
        if created and HELPER.is_symlink():
            HELPER.unlink()


def _seed(mounts: Mounts) -> str:
    mounts.emulator.create_output("from-fstab.txt", b"hello from the emulator\n",
                                  content_type="text/plain")
    return "from-fstab.txt"


def _mount_8(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # As an admin would type it. cwd matters: mount(8) canonicalises a SOURCE that
    # names an existing path (an `orfs` directory in cwd would become its full path).
    return run(["mount", *args], cwd=cwd, timeout=90, env=clean_env())


def _check_live(mnt: Path, name: str) -> None:
    assert is_mounted(mnt) and os.path.ismount(mnt)
    r = run(["ls", "-l", str(mnt)])
    assert r.returncode == 0, r.stderr
    assert name in r.stdout
    assert (mnt / name).read_bytes() == b"hello from the emulator\n"


def test_mount_t_fuse_orfs(mounts: Mounts, helper_link: Path, tmp_path: Path) -> None:
    name = _seed(mounts)
    mnt = mounts.mountpoint()
    r = _mount_8(["-t", "fuse.orfs", "orfs", str(mnt), "-o", mounts.option_string()], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # mount(8) returns once the helper has: the mount is live by then, not later.
    assert is_mounted(mnt), "mount returned before the mount was live"
    mounts.track(mnt)
    _check_live(mnt, name)
    entry = mount_entry(mnt)
    assert entry is not None
    assert entry.fstype.startswith("fuse"), entry
    u = mounts.unmount(mnt)
    assert u.returncode == 0, u.stderr
    assert not is_mounted(mnt)


def test_mount_t_fuse_orfs_reports_a_bad_key(mounts: Mounts, helper_link: Path,
                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad-key"
    bad.write_text("sk-or-v1-wrong\n")
    bad.chmod(0o600)
    mnt = mounts.mountpoint()
    opts = mounts.option_string(api_key_file=str(bad))
    r = _mount_8(["-t", "fuse.orfs", "orfs", str(mnt), "-o", opts], tmp_path)
    assert r.returncode != 0
    assert not is_mounted(mnt)
    assert "sk-or-v1-wrong" not in r.stdout + r.stderr


def _fstab(tmp_path: Path, mnt: Path, options: str) -> Path:
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a test fstab, used with mount -T instead of /etc/fstab\n"
        f"orfs  {mnt}  fuse.orfs  {options}  0  0\n")
    return fstab


def test_fstab_line(mounts: Mounts, helper_link: Path, tmp_path: Path) -> None:
    name = _seed(mounts)
    mnt = mounts.mountpoint()
    # What a real /etc/fstab line carries: _netdev (wait for the network), nofail (boot
    # goes on without it), noauto/x-systemd.* (for systemd's generator), and orfs options.
    options = ("_netdev,nofail,noauto,x-systemd.automount,x-systemd.mount-timeout=60,"
               + mounts.option_string(dir_cache_ttl="30", cache_max_size="256M"))
    fstab = _fstab(tmp_path, mnt, options)
    r = _mount_8(["-T", str(fstab), str(mnt)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert is_mounted(mnt)
    mounts.track(mnt)
    _check_live(mnt, name)
    status = run([str(ORFS), "status", "--json", str(mnt)])
    assert status.returncode == 0, status.stderr
    assert '"limit": 268435456' in status.stdout
    u = mounts.unmount(mnt)
    assert u.returncode == 0, u.stderr
    assert not is_mounted(mnt)


def test_mount_a_twice_mounts_once(mounts: Mounts, helper_link: Path, tmp_path: Path) -> None:
    # `mount -a` (boot, or an admin after editing fstab) skips what is already mounted:
    # mount(8) recognises the entry by source `orfs` and type `fuse.orfs` in mountinfo.
    name = _seed(mounts)
    mnt = mounts.mountpoint()
    fstab = _fstab(tmp_path, mnt, "_netdev,nofail," + mounts.option_string())
    for _ in range(2):
        r = _mount_8(["-a", "-T", str(fstab)], tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        mounts.track(mnt)
    entry = mount_entry(mnt)
    assert entry is not None and (entry.source, entry.fstype) == ("orfs", "fuse.orfs")
    stacked = sum(1 for e in mountinfo.read() if e.mountpoint == str(mnt))
    assert stacked == 1, "mount -a mounted orfs a second time over the first"
    _check_live(mnt, name)
    assert mounts.unmount(mnt).returncode == 0


def test_fstab_umount_8(mounts: Mounts, helper_link: Path, tmp_path: Path) -> None:
    # umount(8) works too (like sshfs: no helper needed to unmount; it does not wait
    # for uploads, which is why docs/OPERATIONS.md recommends orfs unmount).
    _seed(mounts)
    mnt = mounts.mountpoint()
    fstab = _fstab(tmp_path, mnt, "_netdev," + mounts.option_string())
    assert _mount_8(["-T", str(fstab), str(mnt)], tmp_path).returncode == 0
    mounts.track(mnt)
    r = run(["umount", str(mnt)], timeout=60)
    assert r.returncode == 0, r.stderr
    assert not is_mounted(mnt)


def test_mount_fuse3_runs_orfs_by_name(mounts: Mounts, tmp_path: Path) -> None:
    # Without /sbin/mount.fuse.orfs, `fuse.TYPE` goes to mount.fuse3, which runs
    # `TYPE SOURCE MNT -o OPTS` through /bin/sh. The `fuse` type with a `PROGRAM#SOURCE`
    # source makes it run a program by path, in the same shape, so this checks what
    # mount.fuse3 would do with an `orfs` on root's PATH (/usr/local/bin), without
    # touching system directories.
    require_root("mount(8)")
    name = _seed(mounts)
    mnt = mounts.mountpoint()
    r = _mount_8(["-t", "fuse", f"{ORFS}#orfs", str(mnt), "-o", mounts.option_string()],
                 tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert is_mounted(mnt)
    mounts.track(mnt)
    _check_live(mnt, name)
    assert mounts.unmount(mnt).returncode == 0
    assert not is_mounted(mnt)
