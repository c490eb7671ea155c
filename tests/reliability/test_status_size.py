"""A status of any size: 10,000 failed uploads through `orfs status`, `--json`,
`refresh` and `unmount` on a real mount, and the xattr's cut at the core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from orfs.core.state import JournalEntry, State
from orfs.core.status import STATUS_XATTR_MAX, xattr_status
from tests.mount.conftest import FUSE_OK  # noqa: F401  (fails, never skips, under CI)
from tests.mounting import is_mounted
from tests.reliability.conftest import MiB, Rig, wait_for

N = 10_000
XATTR_SIZE_MAX = 65536  # the kernel's limit on one xattr value


def orfs(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orfs", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_the_xattr_keeps_every_count_and_the_newest_entries_under_the_limit() -> None:
    failed = [{"path": f"d/{i:05}-{'x' * 200}.csv", "error": "400: rejected"}
              for i in range(N)]
    errors = [{"time": float(i), "message": f"upload {i} failed"} for i in range(N)]
    full = {"pending": 3, "uploading": 1, "failed": failed, "failed_count": N,
            "errors_last_hour": errors, "errors_count": N, "truncated": False, "pid": 42}
    cut = json.loads(xattr_status(full))
    assert len(xattr_status(full)) <= STATUS_XATTR_MAX < XATTR_SIZE_MAX
    assert cut["truncated"] is True
    assert (cut["pending"], cut["uploading"], cut["failed_count"], cut["errors_count"],
            cut["pid"]) == (3, 1, N, N, 42)
    assert 0 < len(cut["failed"]) < N and cut["failed"] == failed[-len(cut["failed"]):]
    assert 0 < len(cut["errors_last_hour"]) < N
    assert cut["errors_last_hour"] == errors[-len(cut["errors_last_hour"]):]
    small = dict(full, failed=failed[:3], failed_count=3, errors_last_hour=[],
                 errors_count=0)
    assert json.loads(xattr_status(small)) == small  # whole while it fits


def test_status_refresh_and_unmount_with_10000_failed_uploads(rig: Rig, tmp_path: Path
                                                                ) -> None:
    # A previous mount's journal with 10,000 failed uploads: the new mount restores
    # them as failed local files, as after any mount whose uploads were refused.
    emu = rig.emulator("--bandwidth", "1M")
    m = rig.mount(emu, start=False)
    staged = tmp_path / "staged"
    staged.mkdir()
    m.cache.mkdir(parents=True)
    state = State(m.cache)
    for i in range(N):
        path = staged / f"s{i}"
        path.write_bytes(b"x")
        state.journal_add(JournalEntry(
            key=f"k{i:05}", filename=f"failed/f{i:05}.txt", staged=str(path),
            state="failed", error=f"400: upload {i} rejected", created=1000.0 + i))
    state.close()
    m.start()

    raw = os.getxattr(m.path, "user.orfs.status")
    assert len(raw) <= XATTR_SIZE_MAX
    cut = json.loads(raw)
    assert cut["truncated"] is True and cut["failed_count"] == N

    r = orfs("status", m.path)
    assert r.returncode == 1, r.stderr          # failed uploads: exit 1
    assert "0 pending, 0 uploading, 10000 failed" in r.stdout, r.stdout[:2000]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("  failed: ")]
    assert len(lines) == N
    assert "  failed: failed/f09999.txt: 400: upload 9999 rejected" in lines

    r = orfs("status", "--json", m.path)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["failed_count"] == N and st["truncated"] is False
    assert sorted(f["path"] for f in st["failed"]) == [
        f"failed/f{i:05}.txt" for i in range(N)]
    assert m.proc is not None and st["pid"] == m.proc.pid

    before = m.log().count("SIGHUP: dropping the listing cache")
    r = orfs("refresh", m.path)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: m.log().count("SIGHUP: dropping the listing cache") > before, 10,
             "the mount to take the SIGHUP")

    # `orfs unmount` waits for an upload in flight (3 MiB at 1 MiB/s) however long the
    # failed list is, then unmounts.
    data = b"0123456789abcdef" * (3 * MiB // 16)
    done = threading.Event()

    def write() -> None:
        (m.path / "late.bin").write_bytes(data)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    wait_for(lambda: json.loads(os.getxattr(m.path, "user.orfs.status"))["uploading"] > 0,
             20, "the upload to start")
    r = orfs("unmount", m.path)
    writer.join(30)
    assert r.returncode == 0, r.stderr
    assert done.is_set()
    assert not is_mounted(m.path)
    [f] = m.remote_named("late.bin")
    assert f["size_bytes"] == len(data)
