"""Request counts of the mount's hot paths, never timings: listings serve
`ls -l` and `stat`, one download per id however many opens, a warm cache costs no
request in a new mount, the cache limit holds, and `cp` is exactly one upload."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orfs.emulator.store import Scope, Store
from tests.conftest import new_workspace
from tests.mount.conftest import Mount
from tests.mounting import read_status

pytestmark = pytest.mark.fuse

MiB = 1024 * 1024


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True)


def busy(stats: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if v}


def test_ls_l_then_stat_of_every_name(mount_factory: Callable[..., Mount],
                                      emulator_factory: Callable[..., Any]) -> None:
    ws = new_workspace()
    n = 1500
    shm = Path("/dev/shm") if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as data:
        store = Store(Path(data) / "emu")  # seeded before start: no request per file
        try:
            for i in range(n):
                store.add_bytes(Scope(ws), b"x\n", filename=f"s{i:05d}.txt",
                                mime_type="text/plain", downloadable=True)
        finally:
            store.close()
        emu = emulator_factory(data_dir=Path(data) / "emu")
        m = mount_factory("--dir-cache-ttl", "60", workspace=ws, emu=emu)
        emu.reset_stats()
        lines = run("ls", "-l", m.path).stdout.splitlines()
        assert len(lines) == n + 1
        assert busy(emu.stats()) == {"list": 2}  # pages of 1000; no retrieve
        emu.reset_stats()
        for i in range(n):
            assert os.stat(m.path / f"s{i:05d}.txt").st_size == 2
        assert busy(emu.stats()) == {}
        m.stop()
        emu.stop()


def test_concurrent_opens_share_one_download(mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory()
    data = random.Random(5).randbytes(8 * MiB + 5)
    m.output("shared.bin", data)
    os.stat(m.path / "shared.bin")  # the listing, before counting
    m.emu.reset_stats()
    procs = [subprocess.Popen(["sha256sum", str(m.path / "shared.bin")],
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    sums = {p.communicate(timeout=60)[0].split()[0] for p in procs}
    assert sums == {hashlib.sha256(data).hexdigest()}
    # Eight readers, each byte fetched once: what arrived is the file's size.
    assert set(busy(m.emu.stats())) == {"download"}
    assert read_status(m.path)["cache"]["downloaded"] == len(data)


def test_warm_reread_in_a_new_mount_costs_no_request(
        mount_factory: Callable[..., Mount], tmp_path: Path) -> None:
    ws = new_workspace()
    cache = tmp_path / "shared-cache"
    m1 = mount_factory("--cache-dir", str(cache), workspace=ws)
    data = random.Random(6).randbytes(3 * MiB + 1)
    m1.output("warm.bin", data)
    assert (m1.path / "warm.bin").read_bytes() == data
    m1.stop()
    m2 = mount_factory("--cache-dir", str(cache), workspace=ws)
    os.stat(m2.path / "warm.bin")  # the listing, before counting
    m2.emu.reset_stats()
    assert (m2.path / "warm.bin").read_bytes() == data
    assert busy(m2.emu.stats()) == {}


def _content_bytes(cache: Path) -> int:
    """What the cache's files hold on disk (a partly fetched file is sparse)."""
    total = 0
    for entry in os.scandir(cache / "content"):
        try:
            total += entry.stat().st_blocks * 512
        except FileNotFoundError:
            pass  # evicted while we looked
    return total


def test_cache_limit_is_respected_and_evicted_files_download_again(
        mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory("--cache-max-size", "3M")
    rng = random.Random(8)
    files = {f"c{i}.bin": rng.randbytes(MiB + 1000 * i) for i in range(5)}
    for name, data in files.items():
        m.output(name, data)
    os.stat(m.path / "c0.bin")
    m.emu.reset_stats()
    for name, data in files.items():
        assert (m.path / name).read_bytes() == data
        assert _content_bytes(m.cache) <= 3 * MiB
    # Ranged requests only; each file's bytes fetched once.
    assert set(busy(m.emu.stats())) == {"download"}
    total = sum(len(d) for d in files.values())
    assert read_status(m.path)["cache"]["downloaded"] == total
    # c0 was the least recently used: evicted, so reading it again downloads it again
    assert not (m.cache / "content" / _id_of(m, "c0.bin")).exists()
    # (The kernel's page cache may still hold it: drop that first, so the read
    # reaches the mount.)
    fd = os.open(m.path / "c0.bin", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert (m.path / "c0.bin").read_bytes() == files["c0.bin"]
    assert read_status(m.path)["cache"]["downloaded"] == total + len(files["c0.bin"])
    assert _content_bytes(m.cache) <= 3 * MiB


def test_a_file_written_through_the_mount_outlives_downloads_in_a_small_cache(
        mount_factory: Callable[..., Mount]) -> None:
    # The API never serves an upload's bytes: the cache holds the only copy the mount can
    # read back, so downloadable outputs are evicted first; adopted bytes go only when
    # they alone pass the limit (and the file is then shown 0200).
    m = mount_factory("--cache-max-size", "3M", "--kernel-ttl", "0")
    rng = random.Random(10)
    mine = b"".join(b"%08d,%s\n" % (i, rng.randbytes(20).hex().encode())
                    for i in range(20_000))  # ~1 MiB of text: an accepted upload
    outputs = {f"o{i}.bin": rng.randbytes(MiB + 1000 * i) for i in range(6)}
    for name, data in outputs.items():
        m.output(name, data)
    os.stat(m.path / "o0.bin")  # the listing, before the write
    (m.path / "mine.csv").write_bytes(mine)
    procs = [subprocess.Popen(["sha256sum", str(m.path / name)], stdout=subprocess.PIPE,
                              text=True) for name in list(outputs)[:3]]  # concurrent
    for p, name in zip(procs, list(outputs)[:3], strict=True):
        assert p.communicate(timeout=60)[0].split()[0] == \
            hashlib.sha256(outputs[name]).hexdigest()
    for name in list(outputs)[3:]:
        assert (m.path / name).read_bytes() == outputs[name]
    assert (m.path / "mine.csv").read_bytes() == mine
    assert os.stat(m.path / "mine.csv").st_mode & 0o777 == 0o644
    assert _content_bytes(m.cache) <= 3 * MiB
    mine_id = _id_of(m, "mine.csv")
    # Uploads alone over the limit (~3.6 MB of 3 MiB): the least recently used goes.
    for name in ("more1.csv", "more2.csv"):
        (m.path / name).write_bytes(mine + mine[:300_000] + name.encode())
    deadline = time.monotonic() + 10
    while os.stat(m.path / "mine.csv").st_mode & 0o777 != 0o200:
        assert time.monotonic() < deadline, oct(os.stat(m.path / "mine.csv").st_mode)
        time.sleep(0.05)
    with pytest.raises(PermissionError):
        (m.path / "mine.csv").read_bytes()
    assert any("can no longer be read back" in line and mine_id in line
               for line in m.log().splitlines())
    assert (m.path / "more1.csv").read_bytes()[-9:] == b"more1.csv"
    assert _content_bytes(m.cache) <= 3 * MiB


def _id_of(m: Mount, name: str) -> str:
    return os.getxattr(m.path / name, "user.openrouter.id").decode()


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "no-chunked-upload"])
def test_cp_of_a_20_mib_text_file_is_one_upload(mount_factory: Callable[..., Mount],
                                                tmp_path: Path, streamed: bool) -> None:
    m = mount_factory("--debug", *(() if streamed else ("--no-chunked-upload",)))
    src = tmp_path / "src.csv"
    rng = random.Random(9)
    with src.open("w", encoding="utf-8") as f:
        while f.tell() < 20 * MiB:
            f.write(",".join(str(rng.randrange(10**6)) for _ in range(12)) + "\n")
    data = src.read_bytes()
    m.emu.reset_stats()
    run("cp", src, m.path / "copy.csv")
    stats = m.emu.stats()
    assert stats["upload"] == 1 and stats["retrieve"] == 0, stats
    # streamed: the upload began while cp was still writing (the mount's debug log)
    assert ("streamed upload of copy.csv started" in m.log()) == streamed
    [rec] = m.remote_named("copy.csv")
    assert rec["size_bytes"] == len(data)
    # uploads are not downloadable: compare with the emulator's stored blob
    assert (m.emu.data_dir / "blobs" / rec["id"]).read_bytes() == data
    assert (m.path / "copy.csv").read_bytes() == data  # from the cache: no download
    assert m.emu.stats()["download"] == 0


def test_files_advertise_1_mib_io_so_cp_writes_in_1_mib_requests(mnt: Mount,
                                                                   tmp_path: Path) -> None:
    # cp sizes its buffer from st_blksize (at least 128 KiB): 1 MiB means 8x fewer
    # round trips into the mount than the 4 KiB default would give.
    src = tmp_path / "big.txt"
    src.write_bytes(b"0123456789abcdef\n" * (4 * 1024 * 1024 // 17))
    subprocess.run(["cp", str(src), str(mnt.path / "big.txt")], check=True)
    st = os.stat(mnt.path / "big.txt")
    assert st.st_blksize == 1024 * 1024
    assert st.st_size == src.stat().st_size
