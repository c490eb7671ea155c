"""Bad local input through a real mount: each a clear errno, nothing uploaded that should
not be, nothing lost. (Also covered elsewhere: a write past 100 MiB by `cp`, and an
unsupported type, in tests/mount/test_mount.py; remote names in tests/core/test_names.py.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Iterator

import pytest

from orfs.config import MAX_FILE_SIZE
from tests.conftest import EmulatorProcess
from tests.mount.conftest import FUSE_OK, Mount  # noqa: F401  (fails, never skips, in CI)
from tests.mounting import mounted

pytestmark = pytest.mark.fuse


@pytest.fixture(scope="module")
def bad_mount(emulator_session: EmulatorProcess,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with mounted(emulator_session, tmp_path_factory.mktemp("bad-input")) as m:
        yield m


@pytest.fixture
def mnt(bad_mount: Mount) -> Mount:
    bad_mount.emu.reset_stats()
    return bad_mount


def uploads(m: Mount) -> int:
    return m.emu.stats()["upload"]


def test_the_write_that_crosses_100_mib_is_efbig_and_nothing_uploads(mnt: Mount) -> None:
    p = mnt.path / "big-sparse.bin"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.pwrite(fd, b"%PDF-1.4\n", 0) == 9
        assert os.pwrite(fd, b"x" * 100, MAX_FILE_SIZE - 100) == 100   # up to the limit: ok
        try:
            n = os.pwrite(fd, b"y" * 200, MAX_FILE_SIZE - 100)         # crosses it
        except OSError as exc:
            assert exc.errno == errno.EFBIG
        else:
            # The kernel may split it at the limit: POSIX's short write of what fits,
            # then EFBIG for the rest (what `cp` and `dd` then report).
            assert n == 100
            with pytest.raises(OSError) as info:
                os.pwrite(fd, b"y" * 100, MAX_FILE_SIZE)
            assert info.value.errno == errno.EFBIG
    finally:
        os.close(fd)                                                    # close is clean
    assert uploads(mnt) == 0
    assert mnt.remote_named("big-sparse.bin") == []
    assert os.getxattr(p, "user.orfs.state") == b"failed"
    assert os.stat(p).st_size == MAX_FILE_SIZE                          # bytes kept
    os.unlink(p)


def test_an_empty_file_stays_local_and_uploads_nothing(mnt: Mount) -> None:
    p = mnt.path / "empty.txt"
    p.touch()
    assert os.stat(p).st_size == 0
    assert os.getxattr(p, "user.orfs.state") == b"pending"
    assert uploads(mnt) == 0
    p.write_bytes(b"now some text\n")                                   # then it uploads
    assert len(mnt.remote_named("empty.txt")) == 1


def test_names_over_255_bytes_are_enametoolong(mnt: Mount) -> None:
    ok = "a" * 251 + ".txt"
    (mnt.path / ok).write_bytes(b"fits\n")
    for name in ("b" * 256, "é" * 128):                                # 256 bytes each
        with pytest.raises(OSError) as info:
            (mnt.path / name).write_bytes(b"x\n")
        assert info.value.errno == errno.ENAMETOOLONG
        with pytest.raises(OSError) as info:
            os.mkdir(mnt.path / name)
        assert info.value.errno == errno.ENAMETOOLONG
    assert uploads(mnt) == 1
    assert len(mnt.remote_named(ok)) == 1


def test_invalid_flags_and_types_get_clear_errnos(mnt: Mount) -> None:
    f = mnt.path / "flags.txt"
    f.write_bytes(b"hello\n")
    (mnt.path / "adir").mkdir()
    n = uploads(mnt)
    cases = [
        (lambda: os.open(f, os.O_RDONLY | os.O_DIRECTORY), errno.ENOTDIR),
        (lambda: os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL), errno.EEXIST),
        (lambda: os.open(mnt.path / "adir", os.O_WRONLY), errno.EISDIR),
        (lambda: os.mknod(mnt.path / "fifo", stat.S_IFIFO | 0o600), errno.EPERM),
        (lambda: os.symlink("flags.txt", mnt.path / "ln"), errno.EPERM),
        (lambda: os.link(f, mnt.path / "hard"), errno.EPERM),
        (lambda: os.rmdir(f), errno.ENOTDIR),
        (lambda: os.unlink(mnt.path / "adir"), errno.EISDIR),
        (lambda: os.unlink(mnt.path / "missing"), errno.ENOENT),
        (lambda: os.setxattr(f, "user.x", b"1"), errno.ENOTSUP),
    ]
    for call, want in cases:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == want, (call, info.value)
    # renameat2(RENAME_EXCHANGE): EINVAL
    libc = ctypes.CDLL(None, use_errno=True)
    g = mnt.path / "other.txt"
    g.write_bytes(b"other\n")
    rc = libc.renameat2(-100, bytes(f), -100, bytes(g), 2)
    assert rc == -1 and ctypes.get_errno() == errno.EINVAL
    assert f.read_bytes() == b"hello\n" and g.read_bytes() == b"other\n"
    assert uploads(mnt) == n + 1                                         # other.txt only


def test_concurrent_writers_to_one_new_file_lose_nothing_and_leave_one_file(
        mnt: Mount) -> None:
    p = mnt.path / "two-writers.txt"
    half = 512 * 1024
    a = b"A" * half
    b = b"B" * half
    fd1 = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    fd2 = os.open(p, os.O_WRONLY)

    def writer(fd: int, data: bytes, base: int) -> None:
        for off in range(0, len(data), 4096):
            os.pwrite(fd, data[off:off + 4096], base + off)

    t1 = threading.Thread(target=writer, args=(fd1, a, 0))
    t2 = threading.Thread(target=writer, args=(fd2, b, half))
    t1.start()
    t2.start()
    t1.join(30)
    t2.join(30)
    os.close(fd1)   # uploads what is there now
    os.close(fd2)   # the last close uploads the final bytes and removes the first copy
    assert p.read_bytes() == a + b
    [f] = mnt.remote_named("two-writers.txt")
    assert f["size_bytes"] == 2 * half
    assert (mnt.emu.data_dir / "blobs" / f["id"]).read_bytes() == a + b


def test_reads_past_eof_return_nothing(mnt: Mount) -> None:
    rf = mnt.output("remote-eof.txt", b"twelve bytes")
    remote = mnt.path / ".by-id" / rf["id"]          # reachable at once, by id
    with open(remote, "rb", buffering=0) as f:
        assert f.read() == b"twelve bytes"
        assert os.pread(f.fileno(), 100, 12) == b""
        assert os.pread(f.fileno(), 100, 1 << 30) == b""
    local = mnt.path / "local-eof.txt"
    fd = os.open(local, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"local bytes\n")
        assert os.pread(fd, 100, 12) == b""
        assert os.pread(fd, 100, 1 << 30) == b""
    finally:
        os.close(fd)
    assert local.read_bytes() == b"local bytes\n"
