"""Shared fixtures: a real emulator of the Files API in a subprocess.

``EmulatorProcess`` runs ``python -m orfs.emulator`` on 127.0.0.1 with port 0,
reads the URL it prints, and is always stopped by PID. Fixtures:

- ``emulator``: a fresh emulator for one test (its own data directory);
- ``emulator_session``: one emulator shared by the whole session (tests using it
  must not assume an empty workspace: use a fresh ``workspace_id``
  (``str(uuid.uuid4())``) for isolation, and ``reset_stats()`` before counting);
- ``emulator_factory``: ``emulator_factory("--latency-ms", "50", data_dir=...)``
  starts one with extra flags (fault injection and the like); all are stopped at
  teardown.

The emulator gets its key with ``--api-key`` (``TEST_API_KEY``); the child's
environment has no ``OPENROUTER_API_KEY``, so a real key can never reach it.
"""

from __future__ import annotations

import base64
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

TEST_API_KEY = "orfs-test-key-0123456789"
STARTUP_TIMEOUT = 20.0
LISTENING_PREFIX = "orfs emulator listening on "


class EmulatorStartError(RuntimeError):
    pass


class EmulatorProcess:
    """One emulator subprocess; restartable on the same data directory.

    Attributes once started: ``url`` (``http://127.0.0.1:PORT/api/v1``),
    ``api_key``, ``data_dir``, ``port``, ``proc``. ``log_path`` holds its stderr.
    """

    def __init__(self, data_dir: Path, *, api_key: str = TEST_API_KEY,
                 extra_args: Sequence[str] = (), log_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.log_path = log_path or data_dir.with_name(data_dir.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------

    def command(self) -> list[str]:
        return [sys.executable, "-m", "orfs.emulator", "--host", "127.0.0.1", "--port", "0",
                "--data-dir", str(self.data_dir), "--api-key", self.api_key,
                *self.extra_args]

    def start(self, timeout: float = STARTUP_TIMEOUT) -> EmulatorProcess:
        assert self.proc is None, "already running"
        env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env)
        try:
            line = self._read_line(timeout)
        except BaseException:
            self.stop()
            raise
        if not line.startswith(LISTENING_PREFIX):
            self.stop()
            raise EmulatorStartError(f"unexpected first line {line!r}; log:\n{self.log()}")
        self.url = line.removeprefix(LISTENING_PREFIX).strip()
        self.port = httpx.URL(self.url).port or 0
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EmulatorStartError(f"no URL within {timeout}s; log:\n{self.log()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    code = self.proc.wait(5)
                    raise EmulatorStartError(f"exited with {code}; log:\n{self.log()}")
                buf += data
        return buf.split(b"\n", 1)[0].decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop by PID (``sig``, then SIGKILL after ``timeout``); the exit status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def restart(self, extra_args: Sequence[str] | None = None) -> EmulatorProcess:
        """Stop and start again on the same data directory (new port)."""
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        return self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return read_log(self.log_path)

    def __enter__(self) -> EmulatorProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to it --------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self, **kw: Any) -> httpx.Client:
        """A synchronous httpx client with the base URL and key set."""
        kw.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url + "/", headers=self.headers, **kw)

    def stats(self) -> dict[str, int]:
        """Requests per operation: list, retrieve, upload, delete, download."""
        with self.client() as c:
            r = c.get("_emulator/stats")
            r.raise_for_status()
            counts: dict[str, int] = r.json()["requests"]
            return counts

    def reset_stats(self) -> None:
        with self.client() as c:
            c.post("_emulator/reset-stats").raise_for_status()

    def create_output(self, filename: str, data: bytes, *, workspace_id: str | None = None,
                      provider: str | None = None,
                      content_type: str = "application/octet-stream") -> dict[str, Any]:
        """A server-side (downloadable) file; the file JSON the emulator answered."""
        params = {k: v for k, v in (("workspace_id", workspace_id), ("provider", provider)) if v}
        with self.client() as c:
            r = c.post("_emulator/outputs", params=params,
                       files={"file": (filename, data, content_type)})
            r.raise_for_status()
            out: dict[str, Any] = r.json()
            return out

    def create_outputs(self, files: Sequence[tuple[str, bytes | int]], *,
                       workspace_id: str | None = None, provider: str | None = None,
                       batch: int = 5000) -> list[dict[str, Any]]:
        """Many server-side files through the bulk hook, ``batch`` per request (one
        transaction each); an int instead of bytes is that many ``x`` bytes. The file
        JSONs, in order."""
        params = {k: v for k, v in (("workspace_id", workspace_id), ("provider", provider)) if v}
        out: list[dict[str, Any]] = []
        with self.client(timeout=120.0) as c:
            for start in range(0, len(files), batch):
                entries = [{"filename": name, "size": data} if isinstance(data, int)
                           else {"filename": name, "content_b64": base64.b64encode(data).decode()}
                           for name, data in files[start:start + batch]]
                r = c.post("_emulator/outputs/bulk", params=params, json={"files": entries})
                r.raise_for_status()
                out.extend(r.json()["data"])
        return out


def read_log(path: Path) -> str:
    """A child process's log, for a failure message ("" if there is none)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def new_workspace() -> str:
    """A fresh workspace id, for isolation on a shared emulator."""
    return str(uuid.uuid4())


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path / "emulator")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator-session") / "data")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def make(*extra_args: str, data_dir: Path | None = None,
             api_key: str = TEST_API_KEY) -> EmulatorProcess:
        emu = EmulatorProcess(data_dir or tmp_path / f"emulator-{len(started)}",
                              api_key=api_key, extra_args=extra_args)
        started.append(emu)
        return emu.start()

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
