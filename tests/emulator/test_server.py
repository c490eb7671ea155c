"""The emulator as a real process: the printed URL, signals, restarts, sockets, memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from orfs.emulator.seed import demo_files
from orfs.emulator.server import DEMO_API_KEY
from tests.conftest import EmulatorProcess, new_workspace

Factory = Callable[..., EmulatorProcess]


def test_prints_its_url_and_serves(emulator: EmulatorProcess) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", emulator.url)
    assert emulator.port > 0
    with emulator.client() as c:
        r = c.get("files")
        assert r.status_code == 200 and r.json()["data"] == []
        r = c.get("files", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
    assert emulator.api_key not in emulator.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly(emulator: EmulatorProcess, sig: int) -> None:
    assert emulator.stop(sig) == 0
    assert "Traceback" not in emulator.log()


def test_stops_cleanly_during_a_slow_download(emulator_factory: Factory) -> None:
    emu = emulator_factory("--bandwidth", "100K")
    out = emu.create_output("slow.bin", b"x" * (1024 * 1024))
    with emu.client() as c, c.stream("GET", f"files/{out['id']}/content") as r:
        next(r.iter_raw())
        t = time.monotonic()
        assert emu.stop() == 0
        assert time.monotonic() - t < 8


def test_restart_keeps_the_workspace(emulator: EmulatorProcess) -> None:
    out = emulator.create_output("reports/q3.csv", b"a,b\n1,2\n")
    with emulator.client() as c:
        up = c.post("files", files={"file": ("notes.md", b"# notes\n")}).json()
    old_url = emulator.url
    emulator.restart()
    assert emulator.url != old_url or emulator.port  # a new process, maybe a new port
    with emulator.client() as c:
        ids = [f["id"] for f in c.get("files").json()["data"]]
        assert ids == [out["id"], up["id"]]
        assert c.get(f"files/{out['id']}/content").content == b"a,b\n1,2\n"
    assert emulator.stats()["list"] == 1  # counters start again with the process


def test_seed_demo_once_per_data_dir(emulator_factory: Factory, tmp_path: Path) -> None:
    emu = emulator_factory("--seed-demo", data_dir=tmp_path / "demo")
    with emu.client() as c:
        first = c.get("files").json()["data"]
    assert [f["filename"] for f in first] == [d.filename for d in demo_files()]
    emu.restart()
    with emu.client() as c:
        assert c.get("files").json()["data"] == first


def test_stats_and_reset(emulator_session: EmulatorProcess) -> None:
    ws = new_workspace()
    emulator_session.reset_stats()
    out = emulator_session.create_output("a.txt", b"hi\n", workspace_id=ws)
    with emulator_session.client() as c:
        c.get("files", params={"workspace_id": ws})
        c.get(f"files/{out['id']}", params={"workspace_id": ws})
        c.get(f"files/{out['id']}/content", params={"workspace_id": ws})
        c.post("files", params={"workspace_id": ws}, files={"file": ("b.txt", b"b\n")})
        c.delete(f"files/{out['id']}", params={"workspace_id": ws})
    assert emulator_session.stats() == dict.fromkeys(
        ("list", "retrieve", "upload", "delete", "download"), 1)
    emulator_session.reset_stats()
    assert set(emulator_session.stats().values()) == {0}


def test_bytes_sent_counts_only_what_was_sent(emulator_factory: Factory) -> None:
    emu = emulator_factory("--bandwidth", "256K")
    size = 4 * 1024 * 1024
    out = emu.create_output("slow.bin", b"x" * size)
    with emu.client() as c:
        r = c.get(f"files/{out['id']}/content", headers={"Range": "bytes=-65536"})
        assert r.status_code == 206 and len(r.content) == 65536
        assert emu.transfer_stats() == {"bytes_sent": 65536, "ranged_requests": 1}
        emu.reset_stats()
        with c.stream("GET", f"files/{out['id']}/content") as r:
            next(r.iter_raw())  # then the client goes away, ~16 s early
    sent = -1
    for _ in range(20):  # until the server has seen the disconnect: the count stops
        time.sleep(0.5)
        now = emu.transfer_stats()["bytes_sent"]
        if now == sent:
            break
        sent = now
    assert 0 < sent < size // 2


def test_no_ranges_flag(emulator_factory: Factory) -> None:
    emu = emulator_factory("--no-ranges")
    data = bytes(range(256)) * 4
    out = emu.create_output("r.bin", data)
    with emu.client() as c:
        r = c.get(f"files/{out['id']}/content", headers={"Range": "bytes=-16"})
    assert r.status_code == 200 and r.content == data
    assert "accept-ranges" not in r.headers
    assert emu.transfer_stats() == {"bytes_sent": len(data), "ranged_requests": 0}


def test_fault_flags_reach_the_server(emulator_factory: Factory) -> None:
    emu = emulator_factory("--fail-rate", "0.5", "--seed", "1")
    with emu.client() as c:
        statuses = [c.get("files").status_code for _ in range(30)]
        assert set(statuses) == {200, 500}
        assert c.get("_emulator/stats").status_code == 200
    throttled = emulator_factory("--throttle-rate", "1", "--latency-ms", "100")
    with throttled.client() as c:
        t = time.monotonic()
        r = c.get("files")
        assert time.monotonic() - t >= 0.1
        assert r.status_code == 429 and "retry-after-ms" in r.headers


def test_download_can_be_caught_midway_under_a_bandwidth_cap(emulator_factory: Factory) -> None:
    emu = emulator_factory("--bandwidth", "200K")
    data = os.urandom(400 * 1024)
    out = emu.create_output("slow.bin", data)
    with emu.client() as c, c.stream("GET", f"files/{out['id']}/content") as r:
        assert r.headers["content-length"] == str(len(data))
        t = time.monotonic()
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if time.monotonic() - t > 0.5:
                break
        assert 0 < len(got) < len(data)  # mid-way
    # Resume from where it stopped with a Range request.
    with emu.client() as c:
        rest = c.get(f"files/{out['id']}/content", headers={"Range": f"bytes={len(got)}-"})
        assert rest.status_code == 206
        assert got + rest.content == data


def _send_oversized_upload(emu: EmulatorProcess, declare_length: bool) -> bytes:
    """Send headers and ~110 MiB of a file part, then read: the 413 must already be there."""
    head = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n')
    headers = ["POST /api/v1/files HTTP/1.1", f"Host: 127.0.0.1:{emu.port}",
               f"Authorization: Bearer {emu.api_key}",
               "Content-Type: multipart/form-data; boundary=B"]
    if declare_length:
        headers.append(f"Content-Length: {200 * 1024 * 1024}")
    else:
        headers.append("Transfer-Encoding: chunked")
    with socket.create_connection(("127.0.0.1", emu.port), timeout=20) as s:
        s.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        if declare_length:
            s.settimeout(10)
            return s.recv(65536)
        block = b"a" * (1024 * 1024)

        def chunk(data: bytes) -> bytes:
            return b"%x\r\n" % len(data) + data + b"\r\n"

        s.sendall(chunk(head))
        s.settimeout(0.5)
        response = b""
        for _ in range(110):
            try:
                s.sendall(chunk(block))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
        # 110 MiB sent (of a would-be 200 MiB body) and no end: the answer is already due.
        s.settimeout(10)
        try:
            response = s.recv(65536)
        except ConnectionResetError:
            pass
        return response


def test_oversized_upload_is_answered_before_the_body_ends(emulator: EmulatorProcess) -> None:
    response = _send_oversized_upload(emulator, declare_length=False)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    response = _send_oversized_upload(emulator, declare_length=True)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert list((emulator.data_dir / "tmp").iterdir()) == []


def test_oversized_upload_through_httpx_gets_413(emulator: EmulatorProcess) -> None:
    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        block = b"a" * (1024 * 1024)
        for _ in range(120):
            yield block
        yield b"\r\n--B--\r\n"

    with emulator.client() as c:
        r = c.post("files", content=body(),
                   headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_memory_stays_flat_for_100_mib_files(emulator: EmulatorProcess) -> None:
    size = 100 * 1024 * 1024
    baseline = _vm_hwm_kib(emulator.pid)

    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        block = bytes(range(256)) * 4096  # 1 MiB, binary
        for _ in range(size // len(block)):
            yield block
        yield b"\r\n--B--\r\n"

    with emulator.client(timeout=120) as c:
        out = c.post("_emulator/outputs", content=body(),
                     headers={"Content-Type": "multipart/form-data; boundary=B"}).json()
        assert out["size_bytes"] == size
        n = 0
        with c.stream("GET", f"files/{out['id']}/content") as r:
            for chunk in r.iter_raw():
                n += len(chunk)
        assert n == size
        # A 100 MiB text upload goes through the streaming sniffer too.
        text = c.post("files", content=_text_body(size),
                      headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert text.status_code == 200, text.text
        assert text.json()["mime_type"] == "text/csv"
    grown_mib = (_vm_hwm_kib(emulator.pid) - baseline) / 1024
    assert grown_mib < 40, f"peak memory grew by {grown_mib:.0f} MiB"


def _text_body(size: int) -> Iterator[bytes]:
    yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
    line = b"alpha,beta,gamma,delta\n"
    block = line * (1024 * 1024 // len(line))
    sent = 0
    while sent + len(block) <= size:
        sent += len(block)
        yield block
    yield b"\r\n--B--\r\n"


def test_default_key_is_the_environment_or_the_demo_key(tmp_path: Path) -> None:
    for env_key, expected in (("from-env-key", "from-env-key"), (None, DEMO_API_KEY)):
        env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
        if env_key:
            env["OPENROUTER_API_KEY"] = env_key
        proc = subprocess.Popen(
            [sys.executable, "-m", "orfs.emulator", "--port", "0", "--data-dir",
             str(tmp_path / "d")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            url = line.removeprefix("orfs emulator listening on ").strip()
            ok = httpx.get(url + "/files", headers={"Authorization": f"Bearer {expected}"})
            assert ok.status_code == 200
            bad = httpx.get(url + "/files", headers={"Authorization": "Bearer x"})
            assert bad.status_code == 401
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert proc.stderr is not None
            assert expected.encode() not in proc.stderr.read()
            proc.stdout.close() if proc.stdout else None
            proc.stderr.close()


def test_default_data_dir_is_a_fresh_temp_dir_removed_at_exit(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "orfs.emulator", "--port", "0",
                             "--api-key", "k"], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"orfs emulator listening on ")
        made = list(tmp_path.glob("orfs-emulator-*"))
        assert len(made) == 1 and (made[0] / "emulator.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        if proc.stdout:
            proc.stdout.close()
    assert list(tmp_path.glob("orfs-emulator-*")) == []


def test_port_in_use_is_a_clear_error(emulator: EmulatorProcess, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "orfs.emulator", "--port", str(emulator.port),
                        "--data-dir", str(tmp_path / "x"), "--api-key", "k"],
                       capture_output=True, timeout=20)
    assert r.returncode == 1
    assert b"cannot listen" in r.stderr and r.stdout == b""
