"""Reads of outputs through a real mount, counted: a `tail` costs a block, random reads
their blocks, a sequential read each byte once; a remount serves what is present with no
request; a kill -9 while ranges are in flight leaves nothing marked present that is not
on disk. Bytes are compared with the output's every time."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time

import pytest

from orfs.core.cache.readahead import BLOCK
from tests.mount.conftest import FUSE_OK  # noqa: F401  (fails, never skips, under CI)
from tests.mounting import Mount, read_status, wait_for
from tests.reliability.conftest import MiB, Rig
from tests.reliability.test_crash import fusermount_u, kill9

pytestmark = pytest.mark.fuse


def downloaded(m: Mount) -> int:
    return int(read_status(m.path)["cache"]["downloaded"])


def requests(m: Mount) -> int:
    return int(read_status(m.path)["cache"]["download_requests"])


def settled(m: Mount) -> None:
    """Wait until no fetch runs (a read-ahead may outlive the read that started it)."""
    wait_for(lambda: read_status(m.path)["cache"]["downloads_in_flight"] == 0, 30,
             "the mount's fetches to end")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_tail_of_a_big_output_is_one_request_of_one_block(rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    data = random.Random(1).randbytes(32 * MiB + 99)
    m.output("big.bin", data)
    os.stat(m.path / "big.bin")  # the listing
    out = subprocess.run(["tail", "-c", "65536", str(m.path / "big.bin")],
                         capture_output=True, check=True, timeout=60).stdout
    assert out == data[-65536:]
    assert requests(m) <= 2
    assert downloaded(m) <= 2 * BLOCK


def test_random_reads_on_a_mount_match_the_output_and_fetch_only_their_blocks(
        rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    data = random.Random(2).randbytes(16 * MiB + 5)
    m.output("r.bin", data)
    rng = random.Random(3)
    fd = os.open(m.path / "r.bin", os.O_RDONLY)
    try:
        for _ in range(60):
            off = rng.randrange(0, len(data))
            size = rng.choice([1, 100, 4096, 70_000, 300_000])
            assert os.pread(fd, size, off) == data[off:off + size], (off, size)
    finally:
        os.close(fd)
    # The kernel reads ahead a little on its own; still far less than the file, and no
    # byte twice.
    assert downloaded(m) <= len(data)


def test_a_sequential_read_fetches_each_byte_once_and_the_next_costs_nothing(
        rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    data = random.Random(4).randbytes(40 * MiB + 1234)
    m.output("seq.bin", data)
    path = m.path / "seq.bin"
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none"],
                   check=True, timeout=120)
    assert downloaded(m) == len(data)
    n = requests(m)
    assert n <= len(data) // (8 * MiB) + 12  # the window grew to parts of 8 MiB
    # The kernel's page cache is dropped, so the mount itself answers: from disk.
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    assert sha(path.read_bytes()) == sha(data)
    assert requests(m) == n


def test_a_remount_serves_present_ranges_with_no_request_and_fetches_the_rest(
        rig: Rig) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    data = random.Random(5).randbytes(40 * MiB)
    m.output("half.bin", data)
    path = m.path / "half.bin"
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead by the kernel
    try:
        assert os.pread(fd, 2 * MiB, 0) == data[:2 * MiB]
        assert os.pread(fd, MiB, 20 * MiB) == data[20 * MiB:21 * MiB]
    finally:
        os.close(fd)
    settled(m)
    first = downloaded(m)
    assert first < len(data)
    m.stop()
    m2 = rig.remount(m)
    os.stat(m2.path / "half.bin")
    fd = os.open(m2.path / "half.bin", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    try:
        assert os.pread(fd, 2 * MiB, 0) == data[:2 * MiB]
        assert os.pread(fd, MiB, 20 * MiB) == data[20 * MiB:21 * MiB]
        assert requests(m2) == 0
    finally:
        os.close(fd)
    assert sha((m2.path / "half.bin").read_bytes()) == sha(data)
    assert downloaded(m2) == len(data) - first  # only what the first mount lacked


def test_kill_9_while_ranges_are_in_flight_leaves_nothing_false_on_disk(
        rig: Rig) -> None:
    emu = rig.emulator("--bandwidth", "4M")
    m = rig.mount(emu)
    data = random.Random(6).randbytes(48 * MiB)
    m.output("slow.bin", data)
    path = m.path / "slow.bin"
    os.stat(path)
    reader = rig.popen(["cat", str(path)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    wait_for(lambda: downloaded(m) > 8 * MiB, 60, "several ranges to arrive")
    time.sleep(1.2)  # some ranges recorded in the index, others in flight
    kill9(m)
    reader.wait(30)
    fusermount_u(m.path)
    emu.restart([])
    m2 = rig.remount(m)
    os.stat(m2.path / "slow.bin")
    assert sha((m2.path / "slow.bin").read_bytes()) == sha(data)
    assert downloaded(m2) < len(data)  # what the index listed was kept, and right


def test_a_server_that_ignores_ranges_gives_the_same_bytes(rig: Rig) -> None:
    emu = rig.emulator("--no-ranges")
    m = rig.mount(emu)
    data = random.Random(7).randbytes(12 * MiB + 7)
    m.output("plain.bin", data)
    path = m.path / "plain.bin"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 9 * MiB) == data[9 * MiB:9 * MiB + 4096]
        assert os.pread(fd, 10, len(data) - 10) == data[-10:]
    finally:
        os.close(fd)
    assert sha(path.read_bytes()) == sha(data)
    st = read_status(m.path)["cache"]
    assert st["ranges_off"] == 1
    assert "ranges are off" in m.log()
