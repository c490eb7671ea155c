"""Security: the key never leaks; the key file, the cache directory and the mount are
closed to other users. (Also: tests/api/test_secrets.py for the client's error texts and
log lines; tests/emulator/test_api.py for the emulator's 401s and `../` filenames.)"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orfs.emulator import server
from tests.conftest import EmulatorProcess
from tests.mount.conftest import FUSE_OK, Mount  # noqa: F401  (fails, never skips, in CI)
from tests.reliability.conftest import Rig, listed, status, wait_for

pytestmark = pytest.mark.fuse

KEY = "sk-or-v1-reliability-SECRET-4f9c2a7e1b"


def as_nobody(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *[str(c) for c in cmd]], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="orfs-public-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_key_appears_nowhere_after_a_debug_session(rig: Rig, tmp_path: Path) -> None:
    emu = EmulatorProcess(tmp_path / "emu", api_key=KEY)
    rig.emulators.append(emu)
    emu.start()
    m = rig.mount(emu, "--debug")
    emu.create_output("out.csv", b"a,b\n1,2\n", workspace_id=m.workspace)
    src = tmp_path / "in.txt"
    src.write_bytes(b"some text\n")
    assert m.proc is not None
    cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes()
    for cmd in (["ls", "-la", m.path], ["cp", src, m.path / "in.txt"],
                ["cat", m.path / "in.txt"], ["mv", m.path / "in.txt", m.path / "moved.txt"],
                ["cp", src, m.path / "tmp.txt"], ["rm", m.path / "tmp.txt"],
                ["ls", "-l", m.path], ["cat", m.path / "out.csv"]):
        subprocess.run([str(c) for c in cmd], capture_output=True, timeout=60, check=False)
    for name in ("user.orfs.status",):
        assert KEY.encode() not in os.getxattr(m.path, name)
    st = status(m.path)
    pid = st["pid"]
    m.stop()
    secret = KEY.encode()
    places: dict[str, bytes] = {"argv": cmdline, "log": m.log_path.read_bytes()}
    assert b"DEBUG" in places["log"]                 # it was a --debug session
    for path in m.cache.rglob("*"):                   # every file, SQLite included
        if path.is_file():
            places[str(path)] = path.read_bytes()
    leaks = [where for where, data in places.items() if secret in data]
    assert leaks == [], leaks
    assert len(places) > 3 and isinstance(pid, int)


def test_a_key_file_others_can_read_is_refused_with_a_clear_message(
        rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator()
    keyfile = tmp_path / "key"
    keyfile.write_text(emu.api_key + "\n")
    keyfile.chmod(0o644)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    cmd = [sys.executable, "-m", "orfs.fuse", str(mnt), "--api-base", emu.url,
           "--api-key-file", str(keyfile), "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 1
    assert "accessible by other users" in r.stderr and "chmod 600" in r.stderr
    assert emu.api_key not in r.stderr
    assert not listed(mnt)
    keyfile.chmod(0o600)                              # then it mounts (in the background)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        wait_for(lambda: not listed(mnt), 10, "the unmount")


def test_the_cache_directory_is_0700_and_its_files_0600(rig: Rig, tmp_path: Path) -> None:
    emu = rig.emulator()
    m = rig.mount(emu)
    m.output("o.csv", b"a,b\n1,2\n")
    (m.path / "w.txt").write_bytes(b"written\n")      # staging, then the content cache
    (m.path / "pending.txt").touch()                  # stays staged
    subprocess.run(["ls", "-l", m.path], capture_output=True, check=True)
    modes = {}
    for p in [m.cache, *m.cache.rglob("*")]:
        modes[str(p.relative_to(m.cache))] = stat.S_IMODE(p.stat().st_mode)
        want = 0o700 if p.is_dir() else 0o600
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))
    assert "state.db" in modes and any(k.startswith("staging/") for k in modes)


def test_other_users_are_kept_out_unless_allow_other(rig: Rig, public_dir: Path) -> None:
    emu = rig.emulator()
    m = rig.mount(emu, base=public_dir / "a")
    m.path.parent.chmod(0o755)
    (m.path / "f.txt").write_bytes(b"mine\n")
    r = as_nobody("ls", m.path)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = as_nobody("cat", m.path / "f.txt")
    assert r.returncode != 0
    m.stop()
    # With --allow-other (root needs no user_allow_other in /etc/fuse.conf): readable
    # as the modes say; writable only as the modes say (root's 0755 root: no).
    m.output("pub.csv", b"a,b\n1,2\n")              # downloadable: 0644
    m2 = rig.mount(emu, "--allow-other", base=public_dir / "b", workspace=m.workspace)
    m2.path.parent.chmod(0o755)
    r = as_nobody("ls", m2.path)
    assert r.returncode == 0 and "f.txt" in r.stdout, r
    assert as_nobody("cat", m2.path / "pub.csv").stdout == "a,b\n1,2\n"
    # f.txt was uploaded (the API will not serve it) and this mount never held its
    # bytes: 0200, unreadable for everyone.
    assert as_nobody("cat", m2.path / "f.txt").returncode != 0
    r = as_nobody("sh", "-c", f"echo x > {m2.path}/intruder.txt")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert m2.remote_named("intruder.txt") == []


def test_the_emulator_binds_loopback_and_refuses_missing_or_wrong_keys(
        rig: Rig, tmp_path: Path) -> None:
    import argparse
    p = argparse.ArgumentParser()
    server.add_arguments(p)
    assert p.parse_args([]).host == "127.0.0.1"
    emu = rig.emulator()
    assert emu.url.startswith("http://127.0.0.1:")
    import httpx
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": emu.api_key}):
        r = httpx.get(emu.url + "/files", headers=headers, timeout=10)
        assert r.status_code == 401 and emu.api_key not in r.text
    # `../` filenames never leave the data directory (also tests/emulator/test_api.py::
    # test_dotdot_filenames_never_escape_the_data_dir): bytes are stored by id.
    before = set(os.listdir(tmp_path))
    with emu.client() as c:
        for name in ("../../escape.txt", "../escape.txt", "/etc/escape.txt", "a/../../b.txt"):
            r = c.post("files", files={"file": (name, b"text\n", "text/plain")})
            assert r.status_code == 200
            assert r.json()["filename"] == name
    assert set(os.listdir(tmp_path)) == before
    assert not Path("/etc/escape.txt").exists()
    blobs = os.listdir(emu.data_dir / "blobs")
    assert all(b.startswith("or_file_") for b in blobs)
