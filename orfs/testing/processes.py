"""Real processes for tests and benchmarks: the emulator, a FUSE mount, and their teardown.

- `EmulatorProcess`: ``python -m orfs.emulator`` on 127.0.0.1 port 0 (a free port the
  kernel picks), ready once it printed its URL; stopped by PID.
- `MountProcess`: any FUSE server in the foreground (``python -m orfs.fuse``, ``orfs
  mount -f``, ``rclone mount``), ready once its mountpoint answers; `stop` unmounts,
  then stops it by PID; `problems` says what a test should fail on (an exit status
  other than the expected one, a Python traceback in its log).
- `unmount` (``fusermount3 -u``, then ``-u -z`` if busy) and `stop_process` (wait,
  SIGTERM, SIGKILL).

Whether something is mounted comes from /proc/self/mountinfo (`orfs.mountinfo`), which
also lists a dead FUSE mount; whether it is ready comes from `os.path.ismount`, which
answers only for a live one. Nothing here needs pytest.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from orfs.mountinfo import is_listed

TEST_API_KEY = "orfs-test-key-0123456789"
STARTUP_TIMEOUT = 20.0
MOUNT_TIMEOUT = 20.0
LISTENING_PREFIX = "orfs emulator listening on "
TRACEBACK = "Traceback (most recent call last)"


class ProcessError(RuntimeError):
    """A process of the harness did not start or did not behave."""


class EmulatorStartError(ProcessError):
    pass


def read_log(path: Path) -> str:
    """A child process's log, for a failure message ("" if there is none)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def wait_until(predicate: Callable[[], object], timeout: float,
               interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    if not wait_until(pred, timeout, step):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0,
                 sig: int | None = None) -> int | None:
    """Stop `proc` by its PID: send `sig` (or give it `timeout` seconds to exit on its
    own), then SIGTERM, then SIGKILL. Its exit status (None if even SIGKILL failed)."""
    if proc.poll() is None and sig is not None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    for step in (None, proc.terminate, proc.kill):
        if proc.poll() is not None:
            break
        if step is not None:
            with contextlib.suppress(ProcessLookupError):
                step()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    return proc.poll()


def unmount(path: Path, retries: int = 0) -> None:
    """``fusermount3 -u`` (tried `retries` more times, briefly apart, while busy), then
    ``fusermount3 -u -z`` if it is still mounted."""
    for attempt in range(retries + 1):
        if not is_listed(path):
            return
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=30,
                       check=False, stdin=subprocess.DEVNULL)
        if attempt < retries and is_listed(path):
            time.sleep(0.2 * (attempt + 1))
    if is_listed(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True,
                       timeout=30, check=False, stdin=subprocess.DEVNULL)


def wait_mounted(path: Path, proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Until `path` answers as a mount point (True); False if `proc` exited first or
    `timeout` passed."""
    wait_until(lambda: os.path.ismount(path) or proc.poll() is not None, timeout, 0.02)
    return proc.poll() is None and os.path.ismount(path)


def without_api_key(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment (ours by default) without OPENROUTER_API_KEY."""
    return {k: v for k, v in (env or os.environ).items() if k != "OPENROUTER_API_KEY"}


class EmulatorProcess:
    """One emulator subprocess; restartable on the same data directory.

    Attributes once started: ``url`` (``http://127.0.0.1:PORT/api/v1``),
    ``api_key``, ``data_dir``, ``port``, ``proc``. ``log_path`` holds its stderr. The
    child's environment has no ``OPENROUTER_API_KEY``: its key is ``--api-key``, so a
    real key can never reach it. ``new_session`` puts it in a session of its own (a
    Ctrl-C then reaches only the caller, which stops it in order).
    """

    def __init__(self, data_dir: Path, *, api_key: str = TEST_API_KEY,
                 extra_args: Sequence[str] = (), log_path: Path | None = None,
                 new_session: bool = False) -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.log_path = log_path or data_dir.with_name(data_dir.name + ".log")
        self.new_session = new_session
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
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, env=without_api_key(),
                                         start_new_session=self.new_session)
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
        code = stop_process(proc, timeout, sig)
        if proc.stdout is not None:
            proc.stdout.close()
        return code

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

    def transfer_stats(self) -> dict[str, int]:
        """``bytes_sent`` (file content bodies) and ``ranged_requests`` (206 answers)."""
        with self.client() as c:
            r = c.get("_emulator/stats")
            r.raise_for_status()
            doc = r.json()
            return {k: int(doc[k]) for k in ("bytes_sent", "ranged_requests")}

    def reset_stats(self) -> None:
        with self.client() as c:
            c.post("_emulator/reset-stats").raise_for_status()

    def refuse_uploads(self, filename: str, status: int, message: str, *, times: int = 1,
                       workspace_id: str | None = None) -> None:
        """The next `times` uploads of `filename` are answered `status` (docs/EMULATOR.md)."""
        params = {"workspace_id": workspace_id} if workspace_id else None
        with self.client(params=params) as c:
            c.post("_emulator/refuse-uploads", json={
                "filename": filename, "status": status, "message": message,
                "times": times}).raise_for_status()

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


class MountProcess:
    """A FUSE server run in the foreground as a child, its stdout and stderr in
    ``log_path``.

    `start` returns once ``path`` answers as a mount point; `stop` unmounts, then stops
    the process by PID and keeps its exit status in ``returncode``. A subclass can
    override `command` and `env`, which are read at each start.
    """

    def __init__(self, argv: Sequence[str], path: Path, log_path: Path, *,
                 env: dict[str, str] | None = None, new_session: bool = False,
                 unmount_retries: int = 0) -> None:
        self.argv = list(argv)
        self.path = path
        self.log_path = log_path
        self._env = env
        self.new_session = new_session
        self.unmount_retries = unmount_retries
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        # The exit status `problems` accepts: a test that kills the mount on purpose
        # says so through `kill`.
        self.expected_returncode = 0

    def command(self) -> list[str]:
        return list(self.argv)

    def env(self) -> dict[str, str] | None:
        return self._env

    @property
    def name(self) -> str:
        return Path(self.command()[0]).name

    def start(self, timeout: float = MOUNT_TIMEOUT) -> MountProcess:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=self.env(),
                                         start_new_session=self.new_session)
        try:
            ready = wait_mounted(self.path, self.proc, timeout)
        except BaseException:  # also Ctrl-C: nothing may stay mounted or running
            MountProcess.stop(self)
            raise
        if not ready:
            code = self.proc.poll()
            MountProcess.stop(self)  # the failure to report is this one, not a subclass's
            what = (f"exited with {code} before mounting" if code is not None
                    else f"was not mounted within {timeout}s")
            raise ProcessError(f"{self.name} {what}:\n{self.tail()}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return read_log(self.log_path)

    def tail(self, lines: int = 30) -> str:
        text = [line for line in self.log().splitlines() if line.strip()]
        return "\n".join(text[-lines:])

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send `sig` and wait for the exit it causes (which `problems` then accepts)."""
        assert self.proc is not None
        self.expected_returncode = -sig
        self.proc.send_signal(sig)
        self.proc.wait(timeout)

    def stop(self) -> int | None:
        """Unmount, then stop the process by PID; its exit status (None if there was
        no process)."""
        try:
            unmount(self.path, self.unmount_retries)
        finally:
            proc, self.proc = self.proc, None
            if proc is not None:
                self.returncode = stop_process(proc)
        return self.returncode

    def problems(self) -> list[str]:
        """What went wrong with the process that ran: an unexpected exit status, a
        traceback in its log. Empty when it behaved."""
        out = []
        if self.returncode is not None and self.returncode != self.expected_returncode:
            out.append(f"{self.name} exited with {self.returncode}"
                       f" (expected {self.expected_returncode})")
        if TRACEBACK in self.log():
            out.append(f"{self.name} logged a traceback")
        return out
