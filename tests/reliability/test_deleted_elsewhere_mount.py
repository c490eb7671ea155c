"""A file deleted by another client while a process on the mount has it open: that
process keeps reading (the bytes present; EIO for bytes no longer to be had), new opens
are ENOENT, and the cache frees the bytes at the last close. Real mounts; the delete goes
through the emulator's API as a second client's would."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from orfs.core.cache import disk_name
from tests.mount.conftest import FUSE_OK  # noqa: F401  (fails, never skips, under CI)
from tests.mounting import Mount
from tests.reliability.conftest import MiB, Rig, wait_for

pytestmark = pytest.mark.fuse

KERNEL_TTL = 1.0  # the mount's default --kernel-ttl: attributes the kernel may reuse


def delete_elsewhere(m: Mount, file_id: str) -> None:
    with m.api() as c:
        c.delete(f"files/{file_id}").raise_for_status()


def noticed(fd: int) -> bool:
    """The mount has learnt of the delete: the open file's link count is 0 (before the
    fix, this fstat was ENOENT, as was every read after it)."""
    return os.fstat(fd).st_nlink == 0


def read_from(fd: int, offset: int = 0) -> tuple[bytes, int | None]:
    """Every byte from ``offset`` until EOF or an error: (bytes, errno or None)."""
    got = bytearray()
    try:
        while chunk := os.pread(fd, MiB, offset + len(got)):
            got += chunk
    except OSError as exc:
        return bytes(got), exc.errno
    return bytes(got), None


def test_an_open_file_fully_cached_stays_readable_after_a_delete_elsewhere(
        rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu, "--dir-cache-ttl", "1")
    data = os.urandom(3 * MiB)
    f = m.output("whole.bin", data)
    path = m.path / "whole.bin"
    cached = m.cache / "content" / disk_name(f["id"])
    assert path.read_bytes() == data
    wait_for(cached.exists, 10, "the download to be installed in the cache")
    fd = os.open(path, os.O_RDONLY)
    try:
        delete_elsewhere(m, f["id"])
        wait_for(lambda: noticed(fd), 15, "the mount to notice the delete")
        with pytest.raises(FileNotFoundError):
            path.open("rb")  # only new opens see it gone
        # Past the kernel's attribute TTL, a read asks the mount for the attributes
        # again; and with the kernel's copy of the pages dropped, it reaches the mount.
        time.sleep(KERNEL_TTL + 0.2)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert read_from(fd) == (data, None)
        assert read_from(fd, 5 * 1024 + 3)[0] == data[5 * 1024 + 3:]
        assert cached.exists()  # kept while a handle reads it
    finally:
        os.close(fd)
    wait_for(lambda: not cached.exists(), 10, "the cache to free the bytes at the close")
    assert not path.exists()


def test_an_open_file_half_fetched_serves_what_arrived_then_eio(rig: Rig) -> None:
    emu = rig.emulator("--bandwidth", "1M", fixed_port=True)
    m = rig.mount(emu, "--dir-cache-ttl", "1")
    data = os.urandom(24 * MiB)  # 24 s at 1 MiB/s: half-fetched when the delete lands
    other = os.urandom(MiB)
    f = m.output("half.bin", data)
    m.output("other.bin", other)
    path = m.path / "half.bin"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 256 * 1024, 0) == data[:256 * 1024]
        delete_elsewhere(m, f["id"])
        # A new server process: the stream in flight is cut, and the resume finds the
        # id gone (404), so the bytes not yet here can no longer be had.
        emu.stop(signal.SIGKILL)
        emu.start()
        wait_for(lambda: noticed(fd), 30, "the mount to notice the delete")
        time.sleep(KERNEL_TTL + 0.2)
        got, err = read_from(fd)
        assert got == data[:len(got)]  # what is served is right
        assert 256 * 1024 <= len(got) < len(data)
        assert err == errno.EIO  # for this reader: not ENOENT, not a hang
        with pytest.raises(FileNotFoundError):
            path.open("rb")
        assert (m.path / "other.bin").read_bytes() == other  # nothing else is harmed
    finally:
        os.close(fd)
    wait_for(lambda: not (m.cache / "content" / disk_name(f["id"])).exists(), 10,
             "the partly fetched file to be freed at the close")
