"""The mount, driven by real commands and Python's os/open; asserts on bytes, errnos and
the emulator's request counts."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orfs.emulator.store import Scope, Store
from tests.emulator.samples import ACCEPTED, REJECTED
from tests.mount.conftest import Mount

pytestmark = pytest.mark.fuse

MiB = 1024 * 1024


def run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check)


def test_outputs_are_listed_with_names_sizes_times_and_read_back_exactly(
        mount_factory: Callable[..., Mount], tmp_path: Path) -> None:
    from tests.conftest import new_workspace
    ws = new_workspace()
    rng = random.Random(7)
    big = rng.randbytes(5 * MiB + 123)
    m0 = mount_factory(workspace=ws)
    small = m0.output("hello.txt", b"hello world\n")
    bigf = m0.output("data/big.bin", big)
    time.sleep(0)  # outputs made after mounting: within the TTL they may not show yet
    m0.stop()
    m = mount_factory(workspace=ws)
    out = run("ls", "-l", "--time-style=+%s", m.path).stdout
    assert "hello.txt" in out and "data" in out
    st = os.stat(m.path / "hello.txt")
    assert st.st_size == 12
    assert oct(st.st_mode & 0o777) == oct(0o644)
    assert st.st_uid == os.getuid()
    created = small["created_at"]
    from datetime import datetime
    want = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    assert abs(st.st_mtime - want) < 1.0
    assert os.stat(m.path / "data" / "big.bin").st_size == len(big)
    assert bigf["size_bytes"] == len(big)
    # cat of several MiB, byte-exact
    data = subprocess.run(["cat", str(m.path / "data" / "big.bin")], capture_output=True,
                          check=True).stdout
    assert hashlib.sha256(data).digest() == hashlib.sha256(big).digest()
    # reads at random offsets
    with open(m.path / "data" / "big.bin", "rb", buffering=0) as f:
        for _ in range(50):
            off = rng.randrange(len(big))
            n = rng.randrange(1, 300_000)
            f.seek(off)
            assert f.read(n) == big[off:off + n]
    assert (m.path / "hello.txt").read_bytes() == b"hello world\n"
    assert os.getxattr(m.path / "hello.txt", "user.openrouter.id").decode() == small["id"]
    assert os.getxattr(m.path / "hello.txt", "user.openrouter.downloadable") == b"true"


ONE_PER_TYPE = ["pdf", "png", "jpeg", "gif", "webp", "docx", "xlsx", "pptx", "mp3-id3", "wav",
                "flac", "ogg", "json", "ndjson", "csv", "markdown-heading", "plain"]
EXT = {"mp3-id3": "mp3", "markdown-heading": "md", "plain": "txt"}


def test_cp_of_each_supported_type_uploads_and_reads_back(mnt: Mount, tmp_path: Path) -> None:
    samples = {name: (data, mime) for name, data, mime in ACCEPTED}
    for kind in ONE_PER_TYPE:
        data, mime = samples[kind]
        fname = f"sample-{kind}.{EXT.get(kind, kind)}"
        src = tmp_path / fname
        src.write_bytes(data)
        run("cp", src, mnt.path / fname)
        remote = mnt.remote_named(fname)
        assert len(remote) == 1, kind
        assert remote[0]["size_bytes"] == len(data)
        assert remote[0]["mime_type"] == mime
        assert (mnt.path / fname).read_bytes() == data  # from the adopted cache bytes
        assert f" {fname}" in run("ls", "-l", mnt.path).stdout
        assert os.stat(mnt.path / fname).st_size == len(data)
    stats = mnt.emu.stats()
    assert stats["upload"] == len(ONE_PER_TYPE)
    assert stats["download"] == 0


def test_cp_of_an_unsupported_binary_fails_and_keeps_the_bytes(mnt: Mount,
                                                                 tmp_path: Path) -> None:
    data = dict(REJECTED)["binary"]
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    r = run("cp", src, mnt.path / "blob.bin", check=False)
    assert r.returncode != 0
    assert "blob.bin" in r.stderr
    assert (mnt.path / "blob.bin").read_bytes() == data
    assert os.getxattr(mnt.path / "blob.bin", "user.orfs.state") == b"failed"
    assert b"unsupported" in os.getxattr(mnt.path / "blob.bin", "user.orfs.error")
    assert mnt.remote_named("blob.bin") == []
    getf = run("getfattr", "-n", "user.orfs.state", mnt.path / "blob.bin").stdout
    assert 'user.orfs.state="failed"' in getf
    os.unlink(mnt.path / "blob.bin")
    assert not (mnt.path / "blob.bin").exists()


def test_rm_deletes_remotely_and_a_missing_name_is_enoent(mnt: Mount, tmp_path: Path) -> None:
    (mnt.path / "gone.txt").write_text("bye\n")
    assert len(mnt.remote_named("gone.txt")) == 1
    run("rm", mnt.path / "gone.txt")
    assert mnt.remote_named("gone.txt") == []
    assert not (mnt.path / "gone.txt").exists()
    with pytest.raises(FileNotFoundError):
        os.unlink(mnt.path / "never-there.txt")
    assert "gone.txt" not in os.listdir(mnt.path)


def test_folders_from_names_mkdir_cp_rmdir(mnt: Mount, tmp_path: Path) -> None:
    mnt.output("reports/q3/summary.csv", b"a,b\n1,2\n")
    mnt.emu.reset_stats()
    os.kill(mnt.proc.pid, __import__("signal").SIGHUP)  # drop the listing cache now
    deadline = time.monotonic() + 5
    while not (mnt.path / "reports").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(mnt.path / "reports" / "q3") == ["summary.csv"]
    assert (mnt.path / "reports" / "q3" / "summary.csv").read_bytes() == b"a,b\n1,2\n"
    os.mkdir(mnt.path / "newdir")
    assert os.listdir(mnt.path / "newdir") == []
    pdf = dict((n, d) for n, d, _ in ACCEPTED)["pdf"]
    (tmp_path / "file.pdf").write_bytes(pdf)
    run("cp", tmp_path / "file.pdf", mnt.path / "newdir" / "file.pdf")
    assert len(mnt.remote_named("newdir/file.pdf")) == 1
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path / "newdir")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path / "reports")
    assert e.value.errno == errno.ENOTEMPTY
    os.mkdir(mnt.path / "empty")
    os.rmdir(mnt.path / "empty")
    assert not (mnt.path / "empty").exists()
    run("rm", "-r", mnt.path / "newdir")
    assert not (mnt.path / "newdir").exists()
    assert mnt.remote_named("newdir/file.pdf") == []


def test_duplicates_file_folder_clashes_and_odd_names_are_unique_and_openable(
        mount_factory: Callable[..., Mount]) -> None:
    from tests.conftest import new_workspace
    ws = new_workspace()
    m = mount_factory(workspace=ws)
    names = {
        "dup.txt": [b"first\n", b"second\n"],
        "both": [b"file named like a folder\n"],
        "both/inner.txt": [b"inner\n"],
        "a//b.txt": [b"double slash\n"],
        "../up.txt": [b"dotdot\n"],
        "emoji \U0001F600.txt": [b"smile\n"],
        ("x" * 300) + ".txt": [b"long\n"],
    }
    made = []
    for filename, contents in names.items():
        for data in contents:
            made.append(m.output(filename, data))
    m.stop()
    m = mount_factory(workspace=ws)
    found: dict[bytes, str] = {}
    for dirpath, _dirs, files in os.walk(m.path):
        for f in files:
            p = Path(dirpath) / f
            assert len(f.encode()) <= 255
            found[p.read_bytes()] = str(p.relative_to(m.path))
    assert len(found) == len(made)
    assert found[b"first\n"] == "dup.txt"
    assert "[" in found[b"second\n"] and found[b"second\n"].endswith(".txt")
    assert found[b"inner\n"] == "both/inner.txt"
    assert found[b"file named like a folder\n"].startswith("both [")
    assert found[b"smile\n"] == "emoji \U0001F600.txt"
    raw = {os.getxattr(m.path / p, "user.openrouter.filename").decode() for p in found.values()}
    assert raw == set(names)
    # .by-id reaches a file by its id
    fid = made[0]["id"]
    assert (m.path / ".by-id" / fid).read_bytes() == b"first\n"
    assert ".by-id" not in os.listdir(m.path)


def test_ls_of_2500_files_costs_3_lists_and_no_retrieve(
        mount_factory: Callable[..., Mount], emulator_factory: Callable[..., Any]) -> None:
    from tests.conftest import new_workspace
    ws = new_workspace()
    shm = Path("/dev/shm") if os.path.isdir("/dev/shm") else None  # tmpfs: no syncs
    with tempfile.TemporaryDirectory(dir=shm) as data:
        # Seeded straight into the emulator's store before it starts: 2,500 requests to
        # the emulator would take a minute here (~40 ms each, served one at a time).
        store = Store(Path(data) / "emu")
        try:
            for i in range(2500):
                store.add_bytes(Scope(ws), b"x\n", filename=f"f{i:05d}.txt",
                                mime_type="text/plain", downloadable=True)
        finally:
            store.close()
        emu = emulator_factory(data_dir=Path(data) / "emu")
        m = mount_factory("--dir-cache-ttl", "60", workspace=ws, emu=emu)
        _check_ls_costs(m)
        m.stop()
        emu.stop()


def _check_ls_costs(m: Mount) -> None:
    m.emu.reset_stats()
    out = run("ls", "-l", m.path).stdout
    assert len(out.splitlines()) == 2501
    stats = m.emu.stats()
    assert stats["list"] == 3 and stats["retrieve"] == 0, stats
    m.emu.reset_stats()
    run("ls", "-l", m.path)
    run("stat", m.path / "f00042.txt")
    stats = m.emu.stats()
    assert stats["list"] == 0 and stats["retrieve"] == 0, stats


def test_outside_changes_show_within_the_ttl(mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory("--dir-cache-ttl", "1")
    first = m.output("outside.txt", b"one\n")
    deadline = time.monotonic() + 3
    while "outside.txt" not in os.listdir(m.path):
        assert time.monotonic() < deadline, "an outside output did not appear within the TTL"
        time.sleep(0.1)
    with m.api() as c:
        c.delete(f"files/{first['id']}").raise_for_status()
    deadline = time.monotonic() + 3
    while "outside.txt" in os.listdir(m.path):
        assert time.monotonic() < deadline, "an outside deletion did not show within the TTL"
        time.sleep(0.1)


def test_a_write_past_100_mib_fails_with_efbig_and_uploads_nothing(mnt: Mount) -> None:
    path = mnt.path / "too-big.txt"
    chunk = b"a" * MiB
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for i in range(100):
            os.pwrite(fd, chunk, i * MiB)
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"b", 100 * MiB)
        assert e.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    # At most the streamed upload begun during the writes, cancelled before its end
    # (the streamed upload): it created nothing, and no upload followed at close.
    assert mnt.emu.stats()["upload"] <= 1
    assert mnt.remote_named("too-big.txt") == []
    assert os.getxattr(path, "user.orfs.state") == b"failed"
    os.unlink(path)


def test_overwrite_with_cp_replaces_the_remote_file(mnt: Mount, tmp_path: Path) -> None:
    (mnt.path / "over.txt").write_text("old\n")
    old = mnt.remote_named("over.txt")
    (tmp_path / "new.txt").write_text("new contents\n")
    run("cp", tmp_path / "new.txt", mnt.path / "over.txt")
    now = mnt.remote_named("over.txt")
    assert len(now) == 1 and now[0]["id"] != old[0]["id"]
    assert (mnt.path / "over.txt").read_text() == "new contents\n"


def test_chmod_and_utime_are_remembered_and_shutil_copy2_works(mnt: Mount,
                                                               tmp_path: Path) -> None:
    import shutil
    src = tmp_path / "keep.txt"
    src.write_text("keep\n")
    os.chmod(src, 0o600)
    os.utime(src, (1_000_000_000, 1_000_000_000))
    shutil.copy2(src, mnt.path / "keep.txt")
    st = os.stat(mnt.path / "keep.txt")
    assert st.st_mode & 0o777 == 0o600
    assert int(st.st_mtime) == 1_000_000_000
    r = run("cp", "-p", src, mnt.path / "keep2.txt", check=False)
    assert r.returncode == 0, r.stderr


def test_symlink_and_link_are_eperm(mnt: Mount) -> None:
    (mnt.path / "ln.txt").write_text("x\n")
    for call in (lambda: os.symlink("ln.txt", mnt.path / "sym"),
                 lambda: os.link(mnt.path / "ln.txt", mnt.path / "hard")):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM


def test_a_local_empty_file_renames_for_free(mnt: Mount) -> None:
    (mnt.path / "empty.txt").touch()
    os.rename(mnt.path / "empty.txt", mnt.path / "empty2.txt")
    assert os.path.exists(mnt.path / "empty2.txt")
    assert os.getxattr(mnt.path / "empty2.txt", "user.orfs.state") == b"pending"
    assert mnt.emu.stats()["upload"] == 0
    with pytest.raises(OSError) as e:
        open(mnt.path / ("n" * 256), "w").close()
    assert e.value.errno == errno.ENAMETOOLONG


def test_status_xattr_and_statfs(mnt: Mount) -> None:
    import json
    status = json.loads(os.getxattr(mnt.path, "user.orfs.status"))
    assert {"pending", "uploading", "failed", "cache", "requests", "mountpoint"} <= set(status)
    assert mnt.emu.api_key not in json.dumps(status)
    sv = os.statvfs(mnt.path)
    assert sv.f_namemax == 255
    assert sv.f_blocks * sv.f_frsize == 10 * 1024**3


def test_a_wrong_key_exits_non_zero_and_mounts_nothing(
        emulator_session: object, tmp_path: Path) -> None:
    from tests.conftest import EmulatorProcess
    assert isinstance(emulator_session, EmulatorProcess)
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = dict(os.environ, OPENROUTER_API_KEY="wrong-key")
    r = subprocess.run([sys.executable, "-m", "orfs.fuse", str(mp), "--api-base",
                        emulator_session.url, "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode != 0
    assert "refused" in r.stderr and "401" in r.stderr
    assert "wrong-key" not in r.stderr
    assert not os.path.ismount(mp)


def test_read_only_mount_refuses_writes_with_erofs(mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory("--read-only")
    with pytest.raises(OSError) as e:
        open(m.path / "x.txt", "w").close()
    assert e.value.errno == errno.EROFS
