"""`orfs status` (text and --json) and `orfs refresh` / SIGHUP on a real mount.

The status is the JSON of the mount root's `user.orfs.status` xattr; these tests read
it through the command line, as a user or a monitoring script would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EmulatorProcess

from .conftest import ORFS, Mounts, clean_env, run, wait_until

pytestmark = pytest.mark.fuse

# Bytes the service refuses (no known magic number, not UTF-8): the upload gets a 400.
UNSUPPORTED = bytes(range(256)) * 64


def status_json(mnt: Path) -> dict[str, Any]:
    r = run([str(ORFS), "status", "--json", str(mnt)])
    assert r.returncode in (0, 1), r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def server_message(emulator: EmulatorProcess, data: bytes) -> str:
    """What the service says about an upload of `data` (asked directly)."""
    with emulator.client() as c:
        r = c.post("files", files={"file": ("probe.bin", data, "application/octet-stream")})
    assert r.status_code == 400, r.text
    message: str = r.json()["error"]["message"]
    return message


def test_status_json_fields(mounts: Mounts, tmp_path: Path) -> None:
    mounts.emulator.create_output("out.csv", b"a,b\n1,2\n" * 1000, content_type="text/csv")
    mnt = mounts.mountpoint()
    mounts.mount(mnt, "--cache-max-size", "64M")
    assert (mnt / "out.csv").read_bytes() == b"a,b\n1,2\n" * 1000
    s = status_json(mnt)
    for key in ("pending", "uploading", "failed", "cache", "requests", "errors_last_hour",
                "mountpoint", "api_base", "pid"):
        assert key in s, f"status has no {key!r}: {sorted(s)}"
    assert s["pending"] == 0 and s["uploading"] == 0 and s["failed"] == []
    assert s["cache"]["limit"] == 64 * 1024**2
    assert s["cache"]["used"] >= len(b"a,b\n1,2\n" * 1000)  # the file just read is cached
    assert isinstance(s["requests"], dict)
    assert sum(v for v in s["requests"].values() if isinstance(v, int)) > 0
    assert s["errors_last_hour"] == []
    assert s["mountpoint"] == str(mnt)
    assert s["api_base"] == mounts.emulator.url
    assert s["pid"] > 1 and os.path.exists(f"/proc/{s['pid']}")
    assert "workspace" in s and "provider" in s


def test_status_text(mounts: Mounts) -> None:
    mnt = mounts.mountpoint()
    mounts.mount(mnt, "--cache-max-size", "64M")
    (mnt / "notes.md").write_text("# notes\n\nhello\n")
    r = run([str(ORFS), "status", str(mnt)])
    assert r.returncode == 0, r.stderr
    lines = {line.split(":", 1)[0]: line for line in r.stdout.splitlines() if ":" in line}
    assert lines["mountpoint"].endswith(str(mnt))
    assert mounts.emulator.url in lines["api base"]
    assert "0 pending, 0 uploading, 0 failed" in lines["uploads"]
    assert "of 64.0 MiB" in lines["cache"]
    assert "requests" in lines
    assert "0 in the last hour" in lines["errors"]


def test_status_of_a_failed_upload(mounts: Mounts, tmp_path: Path) -> None:
    mnt = mounts.mountpoint()
    mounts.mount(mnt)
    src = tmp_path / "blob.bin"
    src.write_bytes(UNSUPPORTED)
    message = server_message(mounts.emulator, UNSUPPORTED)
    r = run(["cp", str(src), str(mnt / "blob.bin")])
    assert r.returncode != 0  # the error reaches cp
    s = status_json(mnt)
    assert [f["path"].lstrip("/") for f in s["failed"]] == ["blob.bin"]
    assert message in s["failed"][0]["error"]
    assert len(s["errors_last_hour"]) >= 1
    text = run([str(ORFS), "status", str(mnt)])
    assert text.returncode == 1  # scripts can test for failed uploads
    assert "1 failed" in text.stdout and "blob.bin" in text.stdout
    errors = text.stdout.split("errors:", 1)[1].splitlines()[1:]
    assert errors and re.match(r"  \d\d:\d\d:\d\d \S", errors[-1]), errors  # time, message
    (mnt / "blob.bin").unlink()
    assert status_json(mnt)["failed"] == []


def test_status_shows_an_upload_in_flight(mounts: Mounts, emulator_factory: Any,
                                          tmp_path: Path) -> None:
    # A slow service (64 KiB/s) keeps a 512 KiB upload in flight for seconds.
    slow = emulator_factory("--bandwidth", "64K")
    mounts.emulator = slow
    mounts.key_file.write_text(slow.api_key + "\n")
    mnt = mounts.mountpoint()
    mounts.mount(mnt)
    src = tmp_path / "big.txt"
    src.write_text("a line of plain text\n" * 25000)
    cp = subprocess.Popen(["cp", str(src), str(mnt / "big.txt")], env=clean_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    try:
        seen = wait_until(lambda: (lambda s: s["uploading"] + s["pending"] > 0)(
            status_json(mnt)), timeout=20, interval=0.1)
        assert seen, "status never showed the upload in flight"
    finally:
        _, err = cp.communicate(timeout=120)
    assert cp.returncode == 0, err
    s = status_json(mnt)
    assert s["uploading"] == 0 and s["pending"] == 0 and s["failed"] == []


def test_status_of_something_else(tmp_path: Path) -> None:
    r = run([str(ORFS), "status", str(tmp_path)])
    assert r.returncode != 0
    assert "not an orfs mount" in r.stderr


# ------------------------------------------------------------------------- refresh


def _names(mnt: Path) -> set[str]:
    return set(os.listdir(mnt))


def _outside_upload(emulator: EmulatorProcess, name: str) -> str:
    """A file created by someone else (another client of the same workspace)."""
    with emulator.client() as c:
        r = c.post("files", files={"file": (name, b"made elsewhere\n", "text/plain")})
    r.raise_for_status()
    file_id: str = r.json()["id"]
    return file_id


def _outside_delete(emulator: EmulatorProcess, file_id: str) -> None:
    with httpx.Client(base_url=emulator.url + "/", headers=emulator.headers) as c:
        c.delete(f"files/{file_id}").raise_for_status()


def _check_drop(mounts: Mounts, mnt: Path, drop: Any) -> None:
    assert "outside.txt" not in _names(mnt)  # the listing is now cached for an hour
    file_id = _outside_upload(mounts.emulator, "outside.txt")
    time.sleep(1.5)  # longer than the kernel's entry timeout: only orfs' cache remains
    assert "outside.txt" not in _names(mnt), "the listing was not cached (test is moot)"
    drop()
    assert wait_until(lambda: "outside.txt" in _names(mnt), timeout=2), (
        "an outside change was not visible right after the refresh")
    _outside_delete(mounts.emulator, file_id)
    drop()
    assert wait_until(lambda: "outside.txt" not in _names(mnt), timeout=2), (
        "an outside deletion was not visible right after the refresh")


def test_refresh_shows_outside_changes_at_once(mounts: Mounts) -> None:
    mnt = mounts.mountpoint()
    mounts.mount(mnt, "--dir-cache-ttl", "3600")

    def refresh() -> None:
        r = run([str(ORFS), "refresh", str(mnt)])
        assert r.returncode == 0, r.stderr

    _check_drop(mounts, mnt, refresh)


def test_sighup_shows_outside_changes_at_once(mounts: Mounts) -> None:
    mnt = mounts.mountpoint()
    mounts.mount(mnt, "--dir-cache-ttl", "3600")
    pid = status_json(mnt)["pid"]
    _check_drop(mounts, mnt, lambda: os.kill(pid, signal.SIGHUP))


def test_refresh_of_something_else(tmp_path: Path) -> None:
    r = run([str(ORFS), "refresh", str(tmp_path)])
    assert r.returncode != 0
    assert "not an orfs mount" in r.stderr


def test_unmount_waits_for_the_mount_to_finish(mounts: Mounts) -> None:
    mnt = mounts.mountpoint()
    mounts.mount(mnt)
    (mnt / "a.md").write_text("# a\n")
    pid = status_json(mnt)["pid"]
    r = mounts.unmount(mnt)
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(mnt)
    # orfs unmount returns after the serving process has exited.
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
