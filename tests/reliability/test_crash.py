"""Crashes and unmounts: kill -9 in the middle of uploads, a stale mountpoint, unmounting
with uploads in flight. Nothing is lost, nothing is uploaded twice."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orfs.core.fs import INTERRUPTED
from tests.mount.conftest import FUSE_OK, Mount  # noqa: F401  (fails, never skips, under CI)
from tests.reliability.conftest import MiB, Rig, listed, pdf_bytes, status, wait_for

pytestmark = pytest.mark.fuse

ORFS = Path(sys.executable).parent / "orfs"


def kill9(m: Mount) -> None:
    m.kill(signal.SIGKILL)
    # What a crash leaves: a dead mount ("Transport endpoint is not connected").
    assert listed(m.path)
    with pytest.raises(OSError) as info:
        os.listdir(m.path)  # (a stat may be answered from the kernel's attribute cache)
    assert info.value.errno == errno.ENOTCONN


def fusermount_u(path: Path) -> None:
    r = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=30)
    if r.returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True,
                       timeout=30, check=True)


def settled(m: Mount) -> bool:
    st = status(m.path)
    return bool(st["pending"] == 0 and st["uploading"] == 0)


def blob(m: Mount, file_id: str) -> bytes:
    return (m.emu.data_dir / "blobs" / file_id).read_bytes()


def start_cp(rig: Rig, src: Path, dst: Path) -> subprocess.Popen[bytes]:
    return rig.popen(["cp", src, dst], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_mid_upload_of_50_mib_then_a_new_mount_finishes_it_exactly_once(
        rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator("--bandwidth", "10M")
    m = rig.mount(emu)
    data = pdf_bytes(50 * MiB, seed=1)
    src = tmp_path / "big.pdf"
    src.write_bytes(data)
    cp = start_cp(rig, src, m.path / "big.pdf")
    wait_for(lambda: status(m.path)["uploading"] == 1, 30, "the upload to start")
    time.sleep(1.5)                        # about 15 MiB sent
    kill9(m)
    cp.wait(30)
    assert cp.returncode != 0              # the writer saw the crash
    assert m.remote_named("big.pdf") == []  # nothing half-made
    fusermount_u(m.path)
    emu.restart([])                        # full speed for the resume
    m2 = rig.remount(m)
    t0 = time.monotonic()
    wait_for(lambda: len(m2.remote_named("big.pdf")) == 1 and settled(m2), 60,
             "the resumed upload")
    took = time.monotonic() - t0
    [f] = m2.remote_named("big.pdf")
    assert hashlib.sha256(blob(m2, f["id"])).digest() == hashlib.sha256(data).digest()
    assert hashlib.sha256((m2.path / "big.pdf").read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    time.sleep(1)
    assert len(m2.remote_named("big.pdf")) == 1
    assert "interrupted by the last stop had not landed" in m2.log()
    print(f"FIGURES kill-9 50 MiB: resumed and landed once in {took:.1f}s, byte-exact")


def test_an_upload_that_landed_just_before_the_crash_is_adopted_not_resent(
        rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator("--bandwidth", "2M")
    m = rig.mount(emu)
    data = pdf_bytes(8 * MiB, seed=2)
    src = tmp_path / "landed.pdf"
    src.write_bytes(data)
    cp = start_cp(rig, src, m.path / "landed.pdf")
    wait_for(lambda: status(m.path)["uploading"] == 1, 30, "the upload to start")
    time.sleep(0.5)
    kill9(m)
    cp.wait(30)
    fusermount_u(m.path)
    emu.restart([])
    # The server had stored it after all (what a crash between the server's answer and
    # the journal's update looks like): the same name and bytes, created after the start.
    with m.api() as c:
        r = c.post("files", files={"file": ("landed.pdf", data, "application/pdf")})
        r.raise_for_status()
        landed_id = r.json()["id"]
    emu.reset_stats()
    m2 = rig.remount(m)
    wait_for(lambda: settled(m2), 30, "the resume")
    assert [f["id"] for f in m2.remote_named("landed.pdf")] == [landed_id]
    assert emu.stats()["upload"] == 0
    assert (m2.path / "landed.pdf").read_bytes() == data
    assert "had landed as" in m2.log()


def test_files_closed_but_not_yet_uploaded_at_a_crash_are_uploaded_once_by_the_next_mount(
        rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator("--latency-ms", "3000")  # every upload sits 3 s in the server
    m = rig.mount(emu)
    files = {f"c{i}.txt": f"file {i}\n".encode() * (i + 1) * 100 for i in range(5)}
    cps = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        cps.append(start_cp(rig, tmp_path / name, m.path / name))
    wait_for(lambda: status(m.path)["uploading"] == 5, 30, "5 uploads in flight")
    kill9(m)
    for cp in cps:
        cp.wait(30)
    fusermount_u(m.path)
    emu.restart([])
    assert m.remote_files() == []
    m2 = rig.remount(m)
    wait_for(lambda: settled(m2) and len(m2.remote_files()) == 5, 60, "5 resumed uploads")
    for name, data in files.items():
        [f] = m2.remote_named(name)
        assert blob(m2, f["id"]) == data
        assert (m2.path / name).read_bytes() == data


def test_a_file_being_written_at_a_crash_is_kept_local_and_not_uploaded(
        rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    data = pdf_bytes(2 * MiB, seed=3)       # past the streaming threshold: a stream runs
    fd = os.open(m.path / "torn.pdf", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    time.sleep(0.5)
    kill9(m)
    try:
        os.close(fd)
    except OSError:
        pass
    fusermount_u(m.path)
    emu.reset_stats()
    m2 = rig.remount(m)
    time.sleep(1)
    assert m2.remote_named("torn.pdf") == []
    assert emu.stats()["upload"] == 0
    p = m2.path / "torn.pdf"
    assert p.read_bytes() == data           # kept, readable
    assert os.getxattr(p, "user.orfs.state") == b"failed"
    assert os.getxattr(p, "user.orfs.error") == INTERRUPTED.encode()
    # Writing and closing it again uploads it.
    with open(p, "r+b") as f:
        f.write(b"%PDF-1.5")
    assert len(m2.remote_named("torn.pdf")) == 1


def test_a_stale_mountpoint_left_by_a_crash_is_cleared_by_the_next_mount(
        rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    kill9(m)
    # A fusermount3 that records the environment it gets: the key must not be in it.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    envlog = tmp_path / "fusermount-env"
    wrapper = bindir / "fusermount3"
    wrapper.write_text(f"#!/bin/sh\nenv > {envlog}\nexec /usr/bin/fusermount3 \"$@\"\n")
    wrapper.chmod(0o755)
    m2 = Mount(m.emu, m.path.parent, workspace=m.workspace)  # the same mountpoint
    m2.log_path = tmp_path / "remount.log"
    rig.mounts.append(m2)
    env = m2.env()
    env["PATH"] = f"{bindir}:{env['PATH']}"
    with m2.log_path.open("ab") as log:
        m2.proc = subprocess.Popen(m2.command(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, env=env)
    wait_for(lambda: "mounted" in m2.log() and os.path.ismount(m2.path), 20,
             "the new mount")
    assert "cleared a dead mount" in m2.log()
    assert os.listdir(m2.path) == []
    assert envlog.exists()
    assert emu.api_key not in envlog.read_text()
    (m2.path / "after.txt").write_bytes(b"works\n")
    assert len(m2.remote_named("after.txt")) == 1


def test_orfs_unmount_waits_for_uploads_in_flight(rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator("--bandwidth", "5M")
    m = rig.mount(emu)
    data = pdf_bytes(15 * MiB, seed=4)
    src = tmp_path / "u.pdf"
    src.write_bytes(data)
    cp = start_cp(rig, src, m.path / "u.pdf")
    wait_for(lambda: status(m.path)["uploading"] == 1, 30, "the upload to start")
    t0 = time.monotonic()
    r = subprocess.run([str(ORFS), "unmount", str(m.path)], capture_output=True, text=True,
                       timeout=120)
    waited = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert cp.wait(30) == 0
    assert m.proc is not None and m.proc.wait(30) == 0
    assert not listed(m.path)
    [f] = m.remote_named("u.pdf")
    assert blob(m, f["id"]) == data
    print(f"FIGURES orfs-unmount: waited {waited:.1f}s for a 15 MiB upload in flight")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_uploads_in_flight_then_unmounts(rig: Rig, tmp_path: Path,
                                                           sig: int) -> None:
    emu = rig.emulator("--bandwidth", "5M")
    m = rig.mount(emu)
    data = pdf_bytes(10 * MiB, seed=5)
    src = tmp_path / "s.pdf"
    src.write_bytes(data)
    cp = start_cp(rig, src, m.path / "s.pdf")
    wait_for(lambda: status(m.path)["uploading"] == 1, 30, "the upload to start")
    assert m.proc is not None
    m.proc.send_signal(sig)
    assert cp.wait(60) == 0
    assert m.proc.wait(60) == 0
    wait_for(lambda: not listed(m.path), 10, "the unmount")
    [f] = m.remote_named("s.pdf")
    assert blob(m, f["id"]) == data


def test_fusermount_u_during_a_resumed_upload_lets_it_finish(rig: Rig,
                                                             tmp_path: Path) -> None:
    emu = rig.emulator("--bandwidth", "5M")
    m = rig.mount(emu)
    data = pdf_bytes(12 * MiB, seed=6)
    src = tmp_path / "r.pdf"
    src.write_bytes(data)
    cp = start_cp(rig, src, m.path / "r.pdf")
    wait_for(lambda: status(m.path)["uploading"] == 1, 30, "the upload to start")
    kill9(m)
    cp.wait(30)
    fusermount_u(m.path)
    m2 = rig.remount(m)
    wait_for(lambda: status(m2.path)["uploading"] == 1, 30, "the resume to start")
    fusermount_u(m2.path)                 # no open file: the unmount happens at once
    assert m2.proc is not None and m2.proc.wait(90) == 0
    [f] = m2.remote_named("r.pdf")        # the process finished the upload first
    assert blob(m2, f["id"]) == data
    assert "waiting up to" in m2.log()
