"""Load: 16 writers and 16 readers on one mount for 60 s (loopback emulator): no error,
no deadlock, every byte right, memory flat (the mount's RSS sampled; VmHWM reported)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.mount.conftest import FUSE_OK  # noqa: F401  (fails, never skips, in CI)
from tests.reliability.conftest import MiB, Rig, status

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DURATION = 60.0
WRITERS = 16
READERS = 16


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def text(rng: random.Random, n: int, tag: str) -> bytes:
    line = f"{tag} " + "".join(rng.choice("abcdefghij ") for _ in range(70)) + "\n"
    return (line.encode() * (n // len(line) + 1))[:n]


@pytest.mark.timeout(240)
def test_16_writers_and_16_readers_for_60_s(rig: Rig) -> None:
    emu = rig.emulator()
    from tests.conftest import new_workspace
    ws = new_workspace()
    rng = random.Random(16)
    outputs = {f"o{i:02}.bin": os.urandom(rng.randrange(256 * 1024, 4 * MiB)) for i in range(48)}
    for name, data in outputs.items():
        emu.create_output(name, data, workspace_id=ws)
    # A cache smaller than outputs + written files, so entries keep being evicted and
    # re-downloaded, yet larger than what 16 readers pin at once (16 x 4 MiB): a file
    # written here is readable back only while its bytes are cached (the API does not
    # serve uploads), and an entry evicted the moment it is adopted could not be.
    m = rig.mount(emu, "--cache-max-size", "160M", workspace=ws)
    assert m.proc is not None
    pid = m.proc.pid
    digests = {n: hashlib.sha256(d).digest() for n, d in outputs.items()}
    stop = time.monotonic() + DURATION
    ops: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        r = random.Random(w)
        n = 0
        try:
            while time.monotonic() < stop:
                data = text(r, r.randrange(4096, 2 * MiB), f"w{w}-{n}")
                p = m.path / f"w{w:02}-{n:04}.txt"
                p.write_bytes(data)
                if p.read_bytes() != data:
                    raise AssertionError(f"{p.name}: read back differs")
                if n % 4 == 3:
                    p.unlink()
                    with lock:
                        ops["rm"] += 1
                with lock:
                    ops["write"] += 1
                    ops["bytes_written"] += len(data)
                n += 1
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(f"writer {w}: {exc!r}")

    def reader(i: int) -> None:
        r = random.Random(1000 + i)
        names = list(outputs)
        try:
            while time.monotonic() < stop:
                name = r.choice(names)
                data = (m.path / name).read_bytes()
                if hashlib.sha256(data).digest() != digests[name]:
                    raise AssertionError(f"{name}: bytes differ")
                with lock:
                    ops["read"] += 1
                    ops["bytes_read"] += len(data)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"reader {i}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    rss: list[int] = []
    for t in threads:
        t.start()
    while time.monotonic() < stop:
        rss.append(proc_kib(pid, "VmRSS"))
        time.sleep(2)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "deadlock: a worker is stuck"
    assert errors == []
    hwm = proc_kib(pid, "VmHWM")
    st = status(m.path)
    assert st["pending"] == 0 and st["uploading"] == 0 and st["failed"] == []
    # Every kept file is remote exactly once with its size.
    remote = Counter(f["filename"] for f in m.remote_files())
    assert all(c == 1 for c in remote.values())
    kept = ops["write"] - ops["rm"]
    assert sum(1 for n in remote if n.startswith("w")) == kept
    third = max(1, len(rss) // 3)
    early = sum(rss[:third]) / third
    late = sum(rss[-third:]) / third
    assert hwm < 400 * 1024, hwm                       # KiB
    assert late <= early * 1.5 + 32 * 1024, (early, late)
    print(f"FIGURES load: {ops['write']} files written ({ops['bytes_written'] / MiB:.0f} MiB), "
          f"{ops['read']} files read ({ops['bytes_read'] / MiB:.0f} MiB), {ops['rm']} removed "
          f"in {DURATION:.0f}s; RSS early {early / 1024:.0f} MiB, late {late / 1024:.0f} MiB, "
          f"VmHWM {hwm / 1024:.0f} MiB; errors 0")
