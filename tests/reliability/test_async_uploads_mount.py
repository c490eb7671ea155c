"""--uploads async through real mounts: close returns before the upload, the queue
uploads each file once (a renamed or removed queued file costs 1 or 0 uploads), a
refusal after close shows in the xattrs, the status, the log and `orfs sync`'s exit
status with the bytes kept, fsync returns the error, kill -9 with 50 queued uploads is
finished by the next mount exactly once, and `orfs unmount` waits for the queue."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mount.conftest import FUSE_OK, Mount  # noqa: F401  (fails, never skips, under CI)
from tests.reliability.conftest import Rig, listed, status, wait_for
from tests.reliability.test_crash import fusermount_u, kill9

pytestmark = pytest.mark.fuse

ORFS = Path(sys.executable).parent / "orfs"
ASYNC = ("--uploads", "async")


def orfs(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ORFS), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def xattr(path: Path, name: str) -> str | None:
    try:
        return os.getxattr(path, name).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def texts(n: int, folders: int = 5) -> dict[str, bytes]:
    return {f"d{i % folders}/f{i:03}.csv": f"id,value\n{i},{i * i}\n".encode() * (i + 1)
            for i in range(n)}


def landed_once(m: Mount, files: dict[str, bytes], prefix: str = "") -> None:
    remote = m.remote_files()
    names = [f["filename"] for f in remote]
    for name, data in files.items():
        assert names.count(prefix + name) == 1, (name, names.count(prefix + name))
        [f] = [r for r in remote if r["filename"] == prefix + name]
        assert (m.emu.data_dir / "blobs" / f["id"]).read_bytes() == data


def test_cp_r_then_orfs_sync_lands_each_file_once_byte_exact(rig: Rig,
                                                             tmp_path: Path) -> None:
    emu = rig.emulator("--latency-ms", "30")
    m = rig.mount(emu, *ASYNC)
    src = tmp_path / "src"
    files = texts(40)
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    emu.reset_stats()
    subprocess.run(["cp", "-r", str(src), str(m.path / "copy")], check=True, timeout=120)
    # Readable back at once, whatever the queue has done so far.
    assert (m.path / "copy" / "d3" / "f008.csv").read_bytes() == files["d3/f008.csv"]
    r = orfs("sync", m.path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                     # not a terminal: no progress line
    st = status(m.path)
    assert st["queued"] == 0 and st["uploading"] == 0 and st["failed_count"] == 0
    assert emu.stats()["upload"] == 40
    landed_once(m, files, "copy/")
    assert xattr(m.path / "copy" / "d0" / "f000.csv", "user.orfs.state") is None


def test_a_removed_or_renamed_queued_file_costs_0_or_1_upload(rig: Rig) -> None:
    emu = rig.emulator("--latency-ms", "400")    # every request sits 0.4 s in the server
    m = rig.mount(emu, *ASYNC, "--upload-streams", "1")
    (m.path / "x").mkdir()
    emu.reset_stats()
    for i in range(4):
        (m.path / "x" / f"q{i}.txt").write_bytes(f"queued {i}\n".encode())
    # One upload at a time: q0 is being sent, the others wait their turn.
    assert xattr(m.path / "x" / "q2.txt", "user.orfs.state") == "queued"
    assert xattr(m.path / "x" / "q3.txt", "user.orfs.state") == "queued"
    os.unlink(m.path / "x" / "q2.txt")
    os.rename(m.path / "x" / "q3.txt", m.path / "x" / "moved.txt")
    assert (m.path / "x" / "moved.txt").read_bytes() == b"queued 3\n"
    r = orfs("sync", m.path, m.path / "x")
    assert r.returncode == 0, r.stderr
    assert emu.stats()["upload"] == 3 and emu.stats()["delete"] == 0
    names = sorted(f["filename"] for f in m.remote_files())
    assert names == ["x/moved.txt", "x/q0.txt", "x/q1.txt"]


def test_a_refusal_after_close_is_never_silent(rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator()
    m = rig.mount(emu, *ASYNC)
    emu.refuse_uploads("refused.csv", 400, "the service said no", workspace_id=m.workspace)
    data = b"a,b\n1,2\n"
    (tmp_path / "refused.csv").write_bytes(data)
    cp = subprocess.run(["cp", str(tmp_path / "refused.csv"), str(m.path)],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr            # close returned before the refusal
    r = orfs("sync", m.path)
    assert r.returncode == 1
    assert f"upload of {m.path / 'refused.csv'} failed: the service said no" in r.stderr
    f = m.path / "refused.csv"
    assert xattr(f, "user.orfs.state") == "failed"
    assert xattr(f, "user.orfs.error") == "the service said no"
    assert f.read_bytes() == data                   # the bytes stay
    st = orfs("status", m.path)
    assert st.returncode == 1 and "failed: refused.csv: the service said no" in st.stdout
    assert "WARNING" in m.log() and "upload of refused.csv failed: the service said no" \
        in m.log()
    assert m.remote_named("refused.csv") == []
    # orfs sync --retry tries again (the emulator refuses only once).
    r = orfs("sync", "--retry", m.path)
    assert r.returncode == 0, r.stderr
    [rf] = m.remote_named("refused.csv")
    assert rf["size_bytes"] == len(data)
    assert xattr(f, "user.orfs.state") is None


def test_fsync_waits_for_the_upload_and_returns_its_error(rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu, *ASYNC)
    emu.refuse_uploads("synced.txt", 413, "too large for the service",
                       workspace_id=m.workspace)
    fd = os.open(m.path / "synced.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"some bytes\n")
        with pytest.raises(OSError) as info:
            os.fsync(fd)
        assert info.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert xattr(m.path / "synced.txt", "user.orfs.state") == "failed"
    fd = os.open(m.path / "ok.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"fine\n")
        os.fsync(fd)                       # returns once the upload landed
        assert len(m.remote_named("ok.txt")) == 1
    finally:
        os.close(fd)


def test_kill_9_with_50_queued_uploads_is_finished_once_by_the_next_mount(
        rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator("--latency-ms", "2000")   # each upload sits 2 s in the server
    m = rig.mount(emu, *ASYNC, "--upload-streams", "4")
    files = {f"k{i:02}.txt": f"crash {i}\n".encode() * (i + 1) for i in range(50)}
    for name, data in files.items():
        (m.path / name).write_bytes(data)
    st = status(m.path)
    assert st["queued"] + st["uploading"] == 50
    kill9(m)
    fusermount_u(m.path)
    emu.restart([])                         # uploads the dead mount had begun are dropped
    before = {f["filename"] for f in m.remote_files()}
    assert len(before) < 50                 # most never reached the server
    m2 = rig.remount(m, *ASYNC)
    r = orfs("sync", m2.path, timeout=300)
    assert r.returncode == 0, r.stderr
    landed_once(m2, files)
    for name in ("k00.txt", "k49.txt"):
        assert (m2.path / name).read_bytes() == files[name]


def test_orfs_unmount_waits_for_the_queue(rig: Rig) -> None:
    emu = rig.emulator("--latency-ms", "300")
    m = rig.mount(emu, *ASYNC, "--upload-streams", "2")
    files = {f"u{i}.txt": f"unmount {i}\n".encode() for i in range(10)}
    for name, data in files.items():
        (m.path / name).write_bytes(data)
    assert status(m.path)["queued"] > 0
    r = orfs("unmount", m.path)
    assert r.returncode == 0, r.stderr
    assert m.proc is not None and m.proc.wait(30) == 0
    assert not listed(m.path)
    landed_once(m, files)


def test_sync_mode_close_still_returns_the_refusal(rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    emu.refuse_uploads("now.csv", 400, "not this one", workspace_id=m.workspace)
    (tmp_path / "now.csv").write_bytes(b"a\n")
    cp = subprocess.run(["cp", str(tmp_path / "now.csv"), str(m.path)],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1 and "Operation not supported" in cp.stderr
    r = orfs("sync", m.path)
    assert r.returncode == 1 and "not this one" in r.stderr
    wait_for(lambda: status(m.path)["failed_count"] == 1, 5, "the failure in the status")


@pytest.mark.parametrize("tool", ["tar", "rsync"])
def test_tar_x_and_rsync_a_upload_each_file_once(rig: Rig, tmp_path: Path,
                                                  tool: str) -> None:
    emu = rig.emulator("--latency-ms", "30")
    m = rig.mount(emu, *ASYNC)
    src = tmp_path / "src"
    files = texts(25)
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (m.path / "t").mkdir()
    emu.reset_stats()
    if tool == "tar":
        subprocess.run(["tar", "-cf", str(tmp_path / "a.tar"), "-C", str(src), "."],
                       check=True)
        subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(m.path / "t")],
                       check=True, timeout=120)
    else:
        subprocess.run(["rsync", "-a", f"{src}/", f"{m.path / 't'}/"], check=True,
                       timeout=120)
    r = orfs("sync", m.path)
    assert r.returncode == 0, r.stderr
    assert emu.stats()["upload"] == 25 and emu.stats()["delete"] == 0
    landed_once(m, files, "t/")
    assert len(m.remote_files()) == 25     # no temporary name left behind


def _on_a_terminal(*args: str | Path) -> tuple[int, str]:
    """Run orfs with stderr on a pseudo-terminal; (exit status, what it wrote there)."""
    import pty
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(ORFS), *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(60), out.decode(errors="replace")
    finally:
        os.close(master)


def test_orfs_sync_shows_progress_on_a_terminal_only(rig: Rig) -> None:
    emu = rig.emulator("--latency-ms", "300")
    m = rig.mount(emu, *ASYNC, "--upload-streams", "1")
    for i in range(6):
        (m.path / f"p{i}.txt").write_bytes(b"progress\n" * 100)
    code, shown = _on_a_terminal("sync", m.path)
    assert code == 0
    assert "file(s)" in shown and "left" in shown and "B/s" in shown, shown
    for i in range(6, 9):
        (m.path / f"p{i}.txt").write_bytes(b"quiet\n")
    code, shown = _on_a_terminal("sync", "--quiet", m.path)
    assert code == 0 and shown == ""
    assert len(m.remote_files()) == 9


def test_sigterm_uploads_the_queue_before_unmounting(rig: Rig) -> None:
    emu = rig.emulator("--latency-ms", "300")
    m = rig.mount(emu, *ASYNC, "--upload-streams", "2")
    files = {f"t{i}.txt": f"term {i}\n".encode() for i in range(8)}
    for name, data in files.items():
        (m.path / name).write_bytes(data)
    assert status(m.path)["queued"] > 0
    assert m.proc is not None
    m.proc.terminate()
    assert m.proc.wait(60) == 0
    wait_for(lambda: not listed(m.path), 10, "the unmount")
    landed_once(m, files)
