"""What orfs logs: --debug lines per FUSE call and per API request, never the key; the
log file in the background; a failed upload as a WARNING with the server's message;
and READY=1 to systemd once the mount is live."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from .conftest import Mounts, clean_env, is_mounted, run, wait_until
from .test_status import UNSUPPORTED, server_message

pytestmark = pytest.mark.fuse

# One API request: method, path, status, bytes, milliseconds, in that order, e.g.
# "GET /api/v1/files?limit=1000 -> 200, 312 bytes, 4 ms".
API_LINE = re.compile(
    r"\b(?P<method>GET|POST|DELETE)\s+(?P<path>/\S*files\S*)\D*?"
    r"(?P<status>\b[1-5]\d\d\b).*?(?P<bytes>\d+)\s*bytes\b.*?(?P<ms>\d+(?:\.\d+)?)\s*ms\b")


def _api_lines(log: str) -> list[re.Match[str]]:
    return [m for m in map(API_LINE.search, log.splitlines()) if m]


def _session(mnt: Path, tmp_path: Path) -> None:
    """ls, cp in, cat, cp out, rm: what a user does in a minute."""
    src = tmp_path / "report.md"
    src.write_text("# report\n\nall good\n")
    for cmd in (["ls", "-la", str(mnt)],
                ["cp", str(src), str(mnt / "report.md")],
                ["cat", str(mnt / "report.md")],
                ["cat", str(mnt / "seeded.txt")],
                ["cp", str(mnt / "seeded.txt"), str(tmp_path / "seeded.copy")],
                ["rm", str(mnt / "report.md")],
                ["ls", "-la", str(mnt)]):
        r = run(cmd)
        assert r.returncode == 0, f"{cmd}: {r.stderr}"


def test_debug_log_in_the_foreground(mounts: Mounts, tmp_path: Path) -> None:
    mounts.emulator.create_output("seeded.txt", b"seeded by the service\n",
                                  content_type="text/plain")
    mnt = mounts.mountpoint()
    log_path = tmp_path / "foreground.log"
    proc = mounts.mount_foreground(mnt, "--debug", log_path=log_path)
    _session(mnt, tmp_path)
    r = mounts.unmount(mnt)
    assert r.returncode == 0, r.stderr
    assert proc.wait(30) == 0
    log = log_path.read_text(errors="replace")

    assert mounts.emulator.api_key not in log, "the API key is in the debug log"
    assert mounts.emulator.api_key.encode() not in log_path.read_bytes()

    api = _api_lines(log)
    seen = {(m["method"], m["status"]) for m in api}
    assert ("GET", "200") in seen, "no list/download request logged"
    assert ("POST", "200") in seen, "no upload logged"
    assert ("DELETE", "200") in seen, "no delete logged"
    assert any(m["method"] == "GET" and "/content" in m["path"] and int(m["bytes"]) > 0
               for m in api), "the download's bytes are not logged"

    # One line per FUSE call: one cp made one create, one rm made one unlink...
    fuse_lines = [line for line in log.splitlines() if not API_LINE.search(line)]
    # ...and not libfuse's own multi-line trace besides (its `debug` mount option).
    libfuse_trace = [line for line in fuse_lines
                     if re.match(r"\s*unique: \d+, (opcode|success|error)", line)]
    assert not libfuse_trace, f"libfuse's trace doubles the FUSE lines: {libfuse_trace[:3]}"

    def calls(op: str, name: str) -> list[str]:
        return [line for line in fuse_lines if re.search(rf"\b{op}\b", line) and name in line]

    assert len(calls("create", "report.md")) == 1, calls("create", "report.md")
    assert len(calls("unlink", "report.md")) == 1, calls("unlink", "report.md")
    for op in ("lookup", "readdir", "open", "read", "write", "flush", "release"):
        assert any(re.search(rf"\b{op}\b", line) for line in fuse_lines), f"no {op} line"


def test_without_debug_no_request_lines(mounts: Mounts, tmp_path: Path) -> None:
    mounts.emulator.create_output("seeded.txt", b"seeded\n", content_type="text/plain")
    mnt = mounts.mountpoint()
    log_path = tmp_path / "quiet.log"
    proc = mounts.mount_foreground(mnt, log_path=log_path)
    _session(mnt, tmp_path)
    assert mounts.unmount(mnt).returncode == 0
    assert proc.wait(30) == 0
    log = log_path.read_text(errors="replace")
    assert not _api_lines(log)
    assert mounts.emulator.api_key not in log


def test_background_logs_to_the_log_file(mounts: Mounts, tmp_path: Path) -> None:
    mounts.emulator.create_output("seeded.txt", b"seeded\n", content_type="text/plain")
    mnt = mounts.mountpoint()
    log_file = tmp_path / "logs" / "orfs.log"
    log_file.parent.mkdir()
    result = mounts.mount(mnt, "--debug", "--log-file", str(log_file))
    assert not _api_lines(result.stdout), "the background mount logged to the terminal"
    _session(mnt, tmp_path)
    assert mounts.unmount(mnt).returncode == 0
    assert wait_until(lambda: log_file.exists() and _api_lines(log_file.read_text()), 10)
    log = log_file.read_text(errors="replace")
    assert _api_lines(log)
    assert mounts.emulator.api_key not in log


def test_a_failed_upload_is_a_warning_with_the_servers_message(
    mounts: Mounts, tmp_path: Path
) -> None:
    mnt = mounts.mountpoint()
    log_file = tmp_path / "orfs.log"
    mounts.mount(mnt, "--log-file", str(log_file))  # no --debug: warnings always show
    src = tmp_path / "firmware.bin"
    src.write_bytes(UNSUPPORTED)
    message = server_message(mounts.emulator, UNSUPPORTED)
    r = run(["cp", str(src), str(mnt / "firmware.bin")])
    assert r.returncode != 0
    assert "Operation not supported" in r.stderr
    assert wait_until(lambda: "firmware.bin" in log_file.read_text(errors="replace"), 10)
    lines = [line for line in log_file.read_text(errors="replace").splitlines()
             if "firmware.bin" in line and message in line]
    assert lines, f"no log line with the file name and {message!r}"
    assert any(re.search(r"\bWARNING\b", line, re.I) for line in lines), lines
    assert mounts.emulator.api_key not in log_file.read_text(errors="replace")


def test_ready_notification_once_mounted(mounts: Mounts, tmp_path: Path) -> None:
    # As under systemd's Type=notify: READY=1 comes when the mount is already usable.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(60)
    try:
        mnt = mounts.mountpoint()
        mounts.mount_foreground(mnt, log_path=tmp_path / "notify.log", wait=False,
                                env=clean_env(NOTIFY_SOCKET=str(path)))
        fields: list[str] = []
        while "READY=1" not in fields:
            fields = sock.recv(4096).decode().split("\n")
        assert is_mounted(mnt), "READY=1 came before the mount was live"
        assert run(["ls", str(mnt)]).returncode == 0
    finally:
        sock.close()
    assert mounts.unmount(mnt).returncode == 0
