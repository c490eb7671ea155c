"""Refused at close, before any request, through a real mount: `cp` of a type the
service refuses for certain, or into a full workspace, fails at close with the errno
that says why and no upload request (counted by the emulator), the bytes kept and
readable; a doubtful file is still sent and the service decides."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from orfs.core.status import QUOTA
from tests.conftest import EmulatorProcess, new_workspace
from tests.mount.conftest import Mount

pytestmark = pytest.mark.fuse

MiB = 1024 * 1024


def cp(src: Path, dst: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cp", str(src), str(dst)], capture_output=True, text=True)


def busy(stats: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if v}


def a_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for i in range(3):
            data = f"file {i}\n".encode()
            info = tarfile.TarInfo(f"f{i}.txt")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def assert_kept(m: Mount, name: str, data: bytes, error: str) -> None:
    """The refused file stays in the mount, failed, with its bytes."""
    path = m.path / name
    assert path.read_bytes() == data
    assert os.getxattr(path, "user.orfs.state") == b"failed"
    assert error in os.getxattr(path, "user.orfs.error").decode()


@pytest.mark.parametrize(("name", "data", "why"), [
    ("logs.tar.gz", gzip.compress(b"a log line\n" * 1000), "gzip"),
    ("bundle.tar", a_tar(), "tar"),
    # Over 1 MiB, written in order by cp: refused by its header, its upload never starts.
    ("big.gz", gzip.compress(random.Random(3).randbytes(3 * MiB), compresslevel=1), "gzip"),
], ids=["gzip", "tar", "gzip-3MiB"])
@pytest.mark.parametrize("uploads", ["sync", "async"])
def test_cp_of_a_refused_type_fails_at_close_with_no_request(
        mount_factory: Callable[..., Mount], tmp_path: Path, name: str, data: bytes,
        why: str, uploads: str) -> None:
    # In both modes: async queues nothing it knows the service would refuse.
    m = mount_factory("--uploads", uploads)
    src = tmp_path / name
    src.write_bytes(data)
    os.listdir(m.path)  # the listing, before counting
    m.emu.reset_stats()
    r = cp(src, m.path / name)
    assert r.returncode != 0 and "Operation not supported" in r.stderr, r.stderr
    assert busy(m.emu.stats()) == {}  # no upload request, nothing at all
    assert m.remote_files() == []
    assert_kept(m, name, data, why)
    assert any(name in line and "refused before sending" in line and "WARNING" in line
               for line in m.log().splitlines()), m.tail()


def test_cp_into_a_full_workspace_fails_at_close_with_no_request(
        mount_factory: Callable[..., Mount], emulator_session: EmulatorProcess,
        tmp_path: Path) -> None:
    ws = new_workspace()
    # Filled to 1000 bytes short of the quota (a sparse blob in the emulator).
    with emulator_session.client(params={"workspace_id": ws}) as c:
        c.post("_emulator/outputs/bulk", json={"files": [
            {"filename": "pad.bin", "size": QUOTA - 1000, "fill": "\u0000"}]}).raise_for_status()
    m = mount_factory(workspace=ws)
    os.listdir(m.path)
    st = os.statvfs(m.path)
    assert st.f_bavail * st.f_frsize < 4096  # df already says full
    fits, over = tmp_path / "fits.txt", tmp_path / "over.csv"
    fits.write_bytes(b"fits\n" * 100)            # 500 bytes
    over.write_bytes(b"a,b\n1,2\n" * 100)        # 800 bytes: 500 + 800 > 1000
    m.emu.reset_stats()
    assert cp(fits, m.path / "fits.txt").returncode == 0
    assert busy(m.emu.stats()) == {"upload": 1}
    m.emu.reset_stats()
    r = cp(over, m.path / "over.csv")
    assert r.returncode != 0 and "No space left on device" in r.stderr, r.stderr
    assert busy(m.emu.stats()) == {}
    assert sorted(f["filename"] for f in m.remote_files()) == ["fits.txt", "pad.bin"]
    assert_kept(m, "over.csv", over.read_bytes(), "quota exceeded")
    # Room made through the mount: the same file, written again, uploads.
    os.unlink(m.path / "pad.bin")
    m.emu.reset_stats()
    assert cp(over, m.path / "over.csv").returncode == 0
    assert m.emu.stats()["upload"] == 1
    assert os.getxattr(m.path / "over.csv", "user.openrouter.filename") == b"over.csv"


@pytest.mark.parametrize(("name", "data"), [
    ("noise.bin", random.Random(7).randbytes(64 * 1024)),   # no known format
    ("latin1.txt", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 10),
], ids=["binary", "latin-1"])
def test_a_doubtful_file_is_still_sent(mount_factory: Callable[..., Mount], tmp_path: Path,
                                       name: str, data: bytes) -> None:
    m = mount_factory()
    src = tmp_path / name
    src.write_bytes(data)
    os.listdir(m.path)
    m.emu.reset_stats()
    r = cp(src, m.path / name)
    # The emulator refuses it too, but only after it was sent: the mount did not guess.
    assert r.returncode != 0 and "Operation not supported" in r.stderr, r.stderr
    assert busy(m.emu.stats()) == {"upload": 1}
    assert_kept(m, name, data, "unsupported file type")


def test_rsync_of_a_refused_type_into_an_async_mount_sends_nothing(
        mount_factory: Callable[..., Mount], tmp_path: Path) -> None:
    # rsync writes under a temporary name, then renames: the close of the temporary
    # file is refused already (rsync stops there, and removes it), so nothing is
    # queued or sent.
    m = mount_factory("--uploads", "async")
    src = tmp_path / "src"
    src.mkdir()
    (src / "logs.gz").write_bytes(gzip.compress(b"a log line\n" * 1000))
    os.listdir(m.path)
    m.emu.reset_stats()
    r = subprocess.run(["rsync", "-a", f"{src}/", f"{m.path}/"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "Operation not supported" in r.stderr, r.stderr
    s = subprocess.run([str(Path(sys.executable).parent / "orfs"), "sync", str(m.path),
                        "--quiet"], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr  # nothing was queued
    assert busy(m.emu.stats()) == {}
    assert m.remote_files() == []
