"""A pjdfstest-style table: each call the mount supports, run in an empty folder on
tmpfs (/dev/shm: the Linux column) and on a real mount (the mount column). Where the two
differ, docs/SEMANTICS.md's "Differences from Linux" table says why, and the test holds
the mount to that documented answer."""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mount.conftest import Mount

pytestmark = pytest.mark.fuse

LONG = "n" * 256
SEMANTICS = Path(__file__).resolve().parents[2] / "docs" / "SEMANTICS.md"


def build(root: Path, spec: str) -> None:
    """'a d/ full/x': a file a, an empty folder d, a folder full holding x."""
    for item in spec.split():
        if item.endswith("/"):
            (root / item).mkdir()
            continue
        (root / item).parent.mkdir(exist_ok=True)
        (root / item).write_bytes(b"bytes\n")


@dataclass(frozen=True)
class Case:
    id: str
    setup: str
    call: Callable[[Path], object]
    linux: int  # 0: succeeds
    mount: int  # the mount's documented answer
    syscall: str = ""  # the row name in SEMANTICS.md's differences table


def excl(p: Path) -> None:
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


def chmod_kept(p: Path) -> None:
    os.chmod(p, 0o700)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o700


def utime_kept(p: Path) -> None:
    os.utime(p, ns=(1_000_000_000, 2_000_000_000))
    assert os.stat(p).st_mtime_ns == 2_000_000_000


def mkdir_mode(p: Path) -> None:
    os.mkdir(p, 0o750)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o750 & ~current_umask()


def current_umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


CASES = [
    Case("create-new", "", lambda d: excl(d / "n"), 0, 0),
    Case("create-excl-file", "a", lambda d: excl(d / "a"), errno.EEXIST, errno.EEXIST),
    Case("create-excl-dir", "d/", lambda d: excl(d / "d"), errno.EEXIST, errno.EEXIST),
    Case("create-255", "", lambda d: excl(d / ("n" * 255)), 0, 0),
    Case("create-256", "", lambda d: excl(d / LONG), errno.ENAMETOOLONG, errno.ENAMETOOLONG),
    Case("create-under-file", "a", lambda d: excl(d / "a" / "x"), errno.ENOTDIR,
         errno.ENOTDIR),
    Case("open-missing", "", lambda d: os.open(d / "m", os.O_RDONLY), errno.ENOENT,
         errno.ENOENT),
    Case("open-dir-write", "d/", lambda d: os.open(d / "d", os.O_WRONLY), errno.EISDIR,
         errno.EISDIR),
    Case("stat-256", "", lambda d: os.stat(d / LONG), errno.ENAMETOOLONG,
         errno.ENAMETOOLONG),
    Case("unlink", "a", lambda d: os.unlink(d / "a"), 0, 0),
    Case("unlink-missing", "", lambda d: os.unlink(d / "m"), errno.ENOENT, errno.ENOENT),
    Case("unlink-dir", "d/", lambda d: os.unlink(d / "d"), errno.EISDIR, errno.EISDIR),
    Case("rename", "a", lambda d: os.rename(d / "a", d / "b"), 0, 0),
    Case("rename-missing", "", lambda d: os.rename(d / "m", d / "b"), errno.ENOENT,
         errno.ENOENT),
    Case("rename-onto-file", "a b", lambda d: os.rename(d / "a", d / "b"), 0, 0),
    Case("rename-file-onto-dir", "a d/", lambda d: os.rename(d / "a", d / "d"),
         errno.EISDIR, errno.EISDIR),
    Case("rename-dir-onto-file", "d/ a", lambda d: os.rename(d / "d", d / "a"),
         errno.ENOTDIR, errno.ENOTDIR),
    Case("rename-dir-onto-empty-dir", "d/ e/", lambda d: os.rename(d / "d", d / "e"), 0, 0),
    Case("rename-dir-onto-full-dir", "d/ full/x", lambda d: os.rename(d / "d", d / "full"),
         errno.ENOTEMPTY, errno.ENOTEMPTY),
    Case("rename-dir-into-itself", "d/", lambda d: os.rename(d / "d", d / "d" / "x"),
         errno.EINVAL, errno.EINVAL),
    Case("rename-full-dir", "full/x", lambda d: os.rename(d / "full", d / "other"), 0,
         errno.EPERM, "rename of a folder with files"),
    Case("rename-256", "a", lambda d: os.rename(d / "a", d / LONG), errno.ENAMETOOLONG,
         errno.ENAMETOOLONG),
    Case("truncate", "a", lambda d: os.truncate(d / "a", 2), 0, 0),
    Case("truncate-missing", "", lambda d: os.truncate(d / "m", 0), errno.ENOENT,
         errno.ENOENT),
    Case("truncate-dir", "d/", lambda d: os.truncate(d / "d", 0), errno.EISDIR,
         errno.EISDIR),
    Case("truncate-negative", "a", lambda d: os.truncate(d / "a", -1), errno.EINVAL,
         errno.EINVAL),
    Case("mkdir", "", lambda d: mkdir_mode(d / "n"), 0, 0),
    Case("mkdir-exists", "d/", lambda d: os.mkdir(d / "d"), errno.EEXIST, errno.EEXIST),
    Case("mkdir-256", "", lambda d: os.mkdir(d / LONG), errno.ENAMETOOLONG,
         errno.ENAMETOOLONG),
    Case("rmdir", "d/", lambda d: os.rmdir(d / "d"), 0, 0),
    Case("rmdir-full", "full/x", lambda d: os.rmdir(d / "full"), errno.ENOTEMPTY,
         errno.ENOTEMPTY),
    Case("rmdir-file", "a", lambda d: os.rmdir(d / "a"), errno.ENOTDIR, errno.ENOTDIR),
    Case("rmdir-missing", "", lambda d: os.rmdir(d / "m"), errno.ENOENT, errno.ENOENT),
    Case("chmod-file", "a", lambda d: chmod_kept(d / "a"), 0, 0),
    Case("chmod-dir", "d/", lambda d: chmod_kept(d / "d"), 0, 0),
    Case("utimensat-file", "a", lambda d: utime_kept(d / "a"), 0, 0),
    Case("utimensat-dir", "d/", lambda d: utime_kept(d / "d"), 0, 0),
    Case("link", "a", lambda d: os.link(d / "a", d / "b"), 0, errno.EPERM, "link"),
    Case("link-exists", "a b", lambda d: os.link(d / "a", d / "b"), errno.EEXIST,
         errno.EEXIST),
    Case("link-missing", "", lambda d: os.link(d / "m", d / "b"), errno.ENOENT,
         errno.ENOENT),
    Case("symlink", "", lambda d: os.symlink("t", d / "s"), 0, errno.EPERM, "symlink"),
    Case("symlink-exists", "a", lambda d: os.symlink("t", d / "a"), errno.EEXIST,
         errno.EEXIST),
    Case("symlink-256", "", lambda d: os.symlink("t", d / LONG), errno.ENAMETOOLONG,
         errno.ENAMETOOLONG),
    Case("mkfifo", "", lambda d: os.mkfifo(d / "f"), 0, errno.EPERM, "mknod, mkfifo"),
    Case("mkfifo-exists", "a", lambda d: os.mkfifo(d / "a"), errno.EEXIST, errno.EEXIST),
    Case("mknod-regular", "", lambda d: os.mknod(d / "r", 0o600 | stat.S_IFREG), 0, 0),
    Case("mknod-256", "", lambda d: os.mkfifo(d / LONG), errno.ENAMETOOLONG,
         errno.ENAMETOOLONG),
    Case("readlink-file", "a", lambda d: os.readlink(d / "a"), errno.EINVAL, errno.EINVAL),
]


def outcome(case: Case, folder: Path) -> int:
    build(folder, case.setup)
    try:
        case.call(folder)
    except OSError as exc:
        return exc.errno or -1
    return 0


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    base = Path("/dev/shm")
    if not base.is_dir():
        pytest.skip("no /dev/shm")
    d = base / f"orfs-posix-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    yield d  # type: ignore[misc]
    import shutil
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_linux_column_is_what_tmpfs_answers(case: Case, shm: Path) -> None:
    assert errno.errorcode.get(outcome(case, shm), 0) == errno.errorcode.get(case.linux, 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mount_answers_its_documented_errno(case: Case, mnt: Mount) -> None:
    folder = mnt.path / f"posix-{case.id}"
    folder.mkdir()
    got = outcome(case, folder)
    assert errno.errorcode.get(got, 0) == errno.errorcode.get(case.mount, 0), mnt.log()[-3000:]


def _differences() -> dict[str, tuple[str, str]]:
    text = SEMANTICS.read_text()
    section = text.split("### Differences from Linux", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("call", "---"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def _name(code: int) -> str:
    return "succeeds" if code == 0 else errno.errorcode[code]


def test_every_difference_is_documented() -> None:
    rows = _differences()
    differing = [c for c in CASES if c.linux != c.mount]
    for c in differing:
        assert c.syscall in rows, f"{c.id}: no row {c.syscall!r} in SEMANTICS.md"
        linux, orfs = rows[c.syscall]
        assert re.sub(r"\*", "", linux) == _name(c.linux), c.id
        assert re.sub(r"\*", "", orfs) == _name(c.mount), c.id
    assert all(c.syscall == "" for c in CASES if c.linux == c.mount)


def _tick() -> None:
    time.sleep(0.02)  # past the coarse clock's tick, so a change shows (not a speed test)


def _times_change(d: Path) -> None:
    """ctime on write, truncate, chmod, utimens, rename; a folder's mtime and ctime on
    entries added and removed; true on tmpfs and on the mount alike."""
    f = d / "f"
    f.write_bytes(b"one")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("write", lambda: f.open("ab").write(b"two")),
        ("truncate", lambda: os.truncate(f, 1)),
        ("chmod", lambda: os.chmod(f, 0o600)),
        ("utimens", lambda: os.utime(f, ns=(5, 5))),
    ]
    for what, step in steps:
        before = os.stat(f).st_ctime_ns
        _tick()
        step()
        assert os.stat(f).st_ctime_ns > before, what
    before = os.stat(d)
    _tick()
    (d / "g").write_bytes(b"x")
    after = os.stat(d)
    assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    _tick()
    os.unlink(d / "g")
    assert os.stat(d).st_mtime_ns > after.st_mtime_ns
    before_f = os.stat(f).st_ctime_ns
    _tick()
    os.rename(f, d / "h")
    assert os.stat(d / "h").st_ctime_ns > before_f


def test_times_change_on_tmpfs(shm: Path) -> None:
    _times_change(shm)


def test_times_change_on_the_mount(mnt: Mount) -> None:
    d = mnt.path / "posix-times"
    d.mkdir()
    _times_change(d)
