#!/usr/bin/env python3
"""The orfs benchmark: what the mount adds to the cost of the API behind it.

Starts its own emulator (loopback, port 0, temporary data directory) and its own
mounts (`orfs mount -f`, each with a fresh cache directory unless a row needs a
warm one), builds its data through the emulator's hooks, then measures every row
of docs/PERFORMANCE.md side by side with its baseline in one run: orfs and the baseline
alternate, each repeated, and the ratio is the ratio of the medians. Prints a
table with PASS/FAIL against each target and writes the same as JSON (--json).

`--profile wan` runs other rows against an emulator at a distance (added latency, a
bandwidth cap per transfer): every orfs sample in a fresh mount with an empty cache,
the folder listed before the timed command, against direct (ranged) HTTP requests.

Everything it starts is stopped by PID and every mount is unmounted in a
`finally`, also on Ctrl-C. See docs/PERFORMANCE.md for what each row measures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from orfs.mountinfo import is_listed
from orfs.testing.processes import EmulatorProcess, MountProcess, ProcessError, unmount

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MiB = 1 << 20
KiB = 1 << 10
FIRST_READ = 128 * KiB  # what the time-to-first-byte rows time: the first 128 KiB read
READ_BLOCK = MiB  # the rest is read like `dd bs=1M`
MOUNT_TIMEOUT = 30.0
TOOL_TIMEOUT = 600.0

# Run as a subprocess on the file under test (so a stuck mount can be killed): open,
# one 128 KiB read (time to first byte), then 1 MiB reads to EOF, as `dd bs=1M`
# does. Timed inside, from open, so Python's start-up is not counted.
READER = """
import json, os, sys, time
first, block = int(sys.argv[2]), int(sys.argv[3])
view = memoryview(bytearray(block))
t0 = time.perf_counter()
fd = os.open(sys.argv[1], os.O_RDONLY)
got = os.readv(fd, [view[:first]])
t1 = time.perf_counter()
total = got
while got:
    got = os.readv(fd, [view])
    total += got
t2 = time.perf_counter()
os.close(fd)
print(json.dumps({"ttfb": t1 - t0, "seconds": t2 - t0, "bytes": total}))
"""

# Reads at given places of one file, as a subprocess: argv[2:] are OFFSET:LENGTH pairs,
# read in order with pread through one descriptor. Timed from open to the last read.
PREADER = """
import json, os, sys, time
spans = [tuple(map(int, a.split(":"))) for a in sys.argv[2:]]
t0 = time.perf_counter()
fd = os.open(sys.argv[1], os.O_RDONLY)
total = sum(len(os.pread(fd, length, offset)) for offset, length in spans)
seconds = time.perf_counter() - t0
os.close(fd)
print(json.dumps({"seconds": seconds, "bytes": total}))
"""

# os.stat of every name listed in a file, as a subprocess; prints the seconds taken.
STATTER = """
import os, sys, time
names = open(sys.argv[2], encoding="utf-8").read().splitlines()
t0 = time.perf_counter()
for name in names:
    os.stat(os.path.join(sys.argv[1], name))
print(time.perf_counter() - t0)
"""


# ------------------------------------------------------------------------ the plan


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run."""

    name: str
    big: int  # the file of the cold, warm, repeat and write rows with a target
    growth: tuple[int, ...]  # smaller sizes, to show how cost grows with size
    reps: int  # repetitions of each big measurement (orfs and baseline each)
    small_reps: int  # repetitions of the growth rows
    many: int  # files of the listing rows
    parallel: int  # readers of the parallel row
    parallel_size: int  # bytes each parallel reader reads


FULL = Plan("full", big=100 * MiB, growth=(1 * MiB, 10 * MiB), reps=5, small_reps=7,
            many=10_000, parallel=8, parallel_size=20 * MiB)
QUICK = Plan("quick", big=20 * MiB, growth=(1 * MiB, 10 * MiB), reps=3, small_reps=3,
             many=2_000, parallel=8, parallel_size=5 * MiB)
GROUPS = ("cold", "warm", "write", "list", "parallel")

# The WAN profile: the emulator as a service at a distance (docs/PERFORMANCE.md).
WAN_LATENCY_MS = 40.0
WAN_BANDWIDTH = "16M"
WAN_BIG = 64 * MiB  # the file of the sequential, tail, random and first-bytes rows
WAN_PARALLEL, WAN_PARALLEL_SIZE = 8, 8 * MiB
WAN_STREAMS = 4  # direct ranged streams of the strongest sequential baseline
WAN_RANDOM_READS, WAN_RANDOM_SIZE, WAN_RANDOM_SEED = 20, 4 * KiB, 20261206
WAN_TAIL = 64 * KiB
WAN_GROUPS = ("sequential", "tail", "random", "first", "parallel", "writes", "fsspec")
# The WAN write rows (WanWrites): a tree of small text files, and one big text file.
WAN_TREE_FOLDERS, WAN_TREE_FILES, WAN_TREE_SEED = 5, 100, 20261207
WAN_TREE_SIZES = (1 * KiB, 8 * KiB)  # each small file's size, drawn in this range
WAN_UPLOAD_STREAMS = 8  # the direct baseline of the async rows: uploads at a time
PROFILES = {"loopback": GROUPS, "wan": WAN_GROUPS}


# --------------------------------------------------------------------- the results


@dataclasses.dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<="
    value: float

    def met(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.value:g}"


@dataclasses.dataclass
class Row:
    """One line of the table: orfs' samples, the baseline's, and the target.

    With a baseline the target applies to the ratio of medians (orfs / baseline, in
    the row's unit); without one, to the median of orfs' samples itself. `checks`
    are extra conditions (request counts) that must also hold for a PASS.
    """

    key: str
    measure: str
    unit: str
    target: Target | None = None
    baseline_label: str = ""
    orfs: list[float] = dataclasses.field(default_factory=list)
    baseline: list[float] = dataclasses.field(default_factory=list)
    checks: dict[str, bool] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def orfs_median(self) -> float | None:
        return statistics.median(self.orfs) if self.orfs else None

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        o, b = self.orfs_median, self.baseline_median
        if o is None or b is None or b == 0:
            return None
        return o / b

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.target is None:
            return "info"
        judged = self.ratio if self.baseline_label else self.orfs_median
        if judged is None:
            return "ERROR"
        ok = self.target.met(judged) and all(self.checks.values())
        return "PASS" if ok else "FAIL"

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "measure": self.measure, "unit": self.unit,
            "orfs_samples": self.orfs, "orfs_median": self.orfs_median,
            "baseline": self.baseline_label or None, "baseline_samples": self.baseline,
            "baseline_median": self.baseline_median, "ratio": self.ratio,
            "target": None if self.target is None else
            {"on": "ratio" if self.baseline_label else "value",
             "op": self.target.op, "value": self.target.value},
            "checks": self.checks, "verdict": self.verdict,
            "notes": self.notes, "error": self.error,
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "MiB/s":
        return f"{value:,.0f} MiB/s" if value >= 100 else f"{value:.1f} MiB/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g} {unit}".strip()


def size_label(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n:,} B"


def print_table(machine: dict[str, Any], rows: list[Row]) -> None:
    """A Markdown table (readable in a terminal, pasteable into docs/PERFORMANCE.md)."""
    print(f"\norfs benchmark ({machine['plan']}), {machine['date']}: {machine['nproc']} cores"
          f" ({machine['cpu']}), kernel {machine['kernel']}, Python {machine['python']},"
          f" orfs {machine['commit']}; load average {machine['load_before']} before,"
          f" {machine['load_after']} after\n")
    head = ["measure", "orfs", "baseline", "ratio", "target", "result"]
    table = [head]
    for r in rows:
        base = f"{fmt(r.baseline_median, r.unit)} ({r.baseline_label})" if r.baseline_label \
            else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        target = "—" if r.target is None else (
            f"ratio {r.target}" if r.baseline_label else f"{r.target} {r.unit}")
        table.append([r.measure, fmt(r.orfs_median, r.unit), base, ratio, target, r.verdict])
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for n, line in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [(r, note) for r in rows for note in r.notes]
    notes += [(r, f"ERROR: {r.error}") for r in rows if r.error]
    notes += [(r, f"check failed: {name}") for r in rows for name, ok in r.checks.items()
              if not ok]
    if notes:
        print()
        for r, note in notes:
            print(f"- {r.measure}: {note}")


# --------------------------------------------------------------------- processes


class BenchError(Exception):
    """A step of the benchmark could not run (the row shows ERROR)."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join([line for line in text if line.strip()][-lines:])


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (the process's peak resident set) in MiB, while it still runs."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class Mount(MountProcess):
    """A FUSE mount served by a child process (orfs or rclone), torn down on exit: the
    harness's mount runner (orfs.testing.processes), keeping the server's peak RSS."""

    def __init__(self, argv: list[str], mountpoint: Path, log: Path,
                 env: dict[str, str] | None = None) -> None:
        # A session of its own: Ctrl-C reaches the benchmark, which unmounts first. A
        # mount that a tool just left may be busy for a moment: retry before -z.
        super().__init__(argv, mountpoint, log, env=env, new_session=True, unmount_retries=4)
        self.peak_rss: float | None = None

    @property
    def name(self) -> str:
        return "orfs mount" if "orfs" in self.argv else Path(self.argv[0]).name

    def __enter__(self) -> Mount:
        try:
            self.start(MOUNT_TIMEOUT)
        except ProcessError as e:
            raise BenchError(f"{str(e).splitlines()[0]} {tail(self.log_path, 1)}\n"
                             f"{tail(self.log_path)}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.peak_rss = peak_rss_mib(self.proc.pid)
        self.stop()
        if problems := self.problems():
            print(f"  warning: {'; '.join(problems)}:\n{tail(self.log_path)}", flush=True)


class Emulator:
    """`python -m orfs.emulator` on loopback (the harness's emulator runner), and an
    httpx client for the baselines."""

    def __init__(self, work: Path, name: str, key: str, extra: list[str]) -> None:
        self.dir = work / f"emulator-{name}"
        self.dir.mkdir()
        self.process = EmulatorProcess(self.dir / "data", api_key=key, extra_args=extra,
                                       log_path=self.dir / "log", new_session=True)
        try:
            self.process.start(30.0)
        except ProcessError as e:
            raise BenchError(f"the emulator did not start: {e}") from None
        self.url = self.process.url
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(120.0), limits=httpx.Limits(max_connections=32))

    def close(self) -> None:
        self.client.close()
        self.process.stop()

    # hooks

    def create_output(self, name: str, path: Path) -> str:
        with path.open("rb") as f:  # streamed from disk by httpx's multipart encoder
            r = self.client.post("_emulator/outputs", files={"file": (name, f)})
        r.raise_for_status()
        file_id: str = r.json()["id"]
        return file_id

    def create_tiny_outputs(self, names: list[str], batch: int = 5000) -> None:
        """Small text files through the bulk hook: one request and one transaction per
        `batch`, instead of one request each."""
        for start in range(0, len(names), batch):
            entries = [{"filename": name, "content_b64": base64.b64encode(f"{name}\n".encode())
                        .decode()} for name in names[start:start + batch]]
            r = self.client.post("_emulator/outputs/bulk", json={"files": entries})
            r.raise_for_status()

    def stats(self) -> dict[str, int]:
        r = self.client.get("_emulator/stats")
        r.raise_for_status()
        return {k: int(v) for k, v in r.json()["requests"].items()}

    def reset_stats(self) -> None:
        self.client.post("_emulator/reset-stats").raise_for_status()

    # the direct baselines

    def download(self, file_id: str) -> tuple[float, float, int]:
        """A streamed download to nowhere: (time until the first 128 KiB had arrived,
        what the reader's first read waits for through the mount; seconds; bytes)."""
        ttfb = 0.0
        total = 0
        t0 = time.perf_counter()
        with self.client.stream("GET", f"files/{file_id}/content",
                                headers={"Accept": "application/octet-stream"}) as r:
            r.raise_for_status()
            for chunk in r.iter_raw():
                total += len(chunk)
                if not ttfb and total >= FIRST_READ:
                    ttfb = time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        return ttfb or seconds, seconds, total

    def download_range(self, file_id: str, first: int, last: int) -> tuple[float, int]:
        """A streamed ``Range: bytes=first-last`` download to nowhere: (seconds, bytes)."""
        total = 0
        t0 = time.perf_counter()
        with self.client.stream("GET", f"files/{file_id}/content",
                                headers={"Range": f"bytes={first}-{last}"}) as r:
            r.raise_for_status()
            for chunk in r.iter_raw():
                total += len(chunk)
        seconds = time.perf_counter() - t0
        if total != last - first + 1:
            raise BenchError(f"bytes {first}-{last} of {file_id}: got {total} bytes")
        return seconds, total

    def bytes_sent(self) -> int:
        """File content body bytes the emulator sent since the last reset."""
        r = self.client.get("_emulator/stats")
        r.raise_for_status()
        return int(r.json()["bytes_sent"])

    def upload(self, path: Path, name: str) -> tuple[float, str]:
        """A multipart upload streamed from disk: (seconds, file id)."""
        t0 = time.perf_counter()
        with path.open("rb") as f:
            r = self.client.post("files", files={"file": (name, f, "text/csv")})
        seconds = time.perf_counter() - t0
        r.raise_for_status()
        return seconds, str(r.json()["id"])

    def delete(self, file_id: str) -> None:
        self.client.delete(f"files/{file_id}").raise_for_status()

    def list_all(self) -> tuple[float, int, int]:
        """The whole workspace in pages of 1000: (seconds, pages, files)."""
        t0 = time.perf_counter()
        pages = files = 0
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            r = self.client.get("files", params=params)
            r.raise_for_status()
            page = r.json()
            pages += 1
            files += len(page["data"])
            cursor = page.get("cursor")
            if not cursor or not page["data"]:
                break
        return time.perf_counter() - t0, pages, files


# ------------------------------------------------------------------ data and tools


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(os.urandom(n))
            left -= n


def write_csv(path: Path, size: int) -> None:
    """Exactly `size` bytes of CSV (UTF-8, five columns, no quoting), written in batches."""
    words = ["alpha", "βeta", "gamma", "delta", "épsilon", "zeta", "eta", "θeta"]
    with path.open("wb") as f:
        written = f.write(b"id,name,city,amount,comment\n")
        i = 0
        while size - written > 256:
            batch = "".join(
                f"{j},{words[j % 8]}-{j * 7919 % 100003},{words[(j // 8) % 8]},"
                f"{j * 31 % 99991}.{j % 100:02d},row {j} of the benchmark\n"
                for j in range(i, i + 5000)).encode()
            i += 5000
            room = size - written - 256  # what is left for whole rows, before the last
            if len(batch) > room:
                batch = batch[:batch.rfind(b"\n", 0, room) + 1]
                if not batch:
                    break
            written += f.write(batch)
        last = f"{i},last,row,0.00,".encode()  # the last row's comment pads the file
        f.write(last + b"x" * (size - written - len(last) - 1) + b"\n")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def drop_page_cache(paths: list[Path]) -> None:
    """Evict file pages from the kernel's page cache: all of them as root, else `paths`."""
    os.sync()
    if os.geteuid() == 0:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
            return
        except OSError:
            pass
    for top in paths:
        for p in [top] if top.is_file() else [q for q in top.rglob("*") if q.is_file()]:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def read_file(path: Path, size: int) -> tuple[float, float]:
    """Read `path` with the READER subprocess: (time to first byte, seconds)."""
    argv = [PYTHON, "-I", "-c", READER, str(path), str(FIRST_READ), str(READ_BLOCK)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if done.returncode != 0:
        raise BenchError(f"reading {path} failed: {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout)
    if out["bytes"] != size:
        raise BenchError(f"read {out['bytes']} bytes of {path}, expected {size}")
    return float(out["ttfb"]), float(out["seconds"])


def read_spans(path: Path, spans: list[tuple[int, int]]) -> float:
    """Seconds the PREADER subprocess takes to read `spans` (offset, length) of `path`."""
    argv = [PYTHON, "-I", "-c", PREADER, str(path), *(f"{o}:{n}" for o, n in spans)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if done.returncode != 0:
        raise BenchError(f"reading {path} failed: {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout)
    if out["bytes"] != sum(n for _, n in spans):
        raise BenchError(f"read {out['bytes']} bytes of {path} in {len(spans)} reads")
    return float(out["seconds"])


def run_tool(argv: list[str]) -> float:
    """Seconds a command takes, start to exit; it must succeed."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=TOOL_TIMEOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}:"
                         f" {done.stderr.decode(errors='replace').strip()[-500:]}")
    return seconds


def mibps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else "") or type(e).__name__


def alternate(rep: int, orfs: Callable[[], None], baseline: Callable[[], None],
              rows: list[Row]) -> None:
    """Run both sides of one repetition, swapping which goes first every time.

    A failure on the orfs side marks the rows and lets the baseline go on, so a run
    against a broken mount still reports what the API itself does.
    """
    for step in (baseline, orfs) if rep % 2 == 0 else (orfs, baseline):
        if step is baseline:
            step()
            continue
        try:
            step()
        except Exception as e:  # any failure of the mount side
            for row in rows:
                row.error = row.error or one_line(e)


# --------------------------------------------------------------------- the bench


class Bench:
    """The running emulator, the data built so far, and one method per group of rows."""

    def __init__(self, args: argparse.Namespace, plan: Plan, work: Path,
                 stack: contextlib.ExitStack) -> None:
        self.plan, self.work, self.stack = plan, work, stack
        self.key = "bench-" + secrets.token_hex(16)
        self.env = {**os.environ, "OPENROUTER_API_KEY": self.key}
        self.mount_args: list[str] = list(args.mount_arg)
        self.emulator_args = ["--latency-ms", str(args.latency_ms)] if args.latency_ms else []
        if args.bandwidth:
            self.emulator_args += ["--bandwidth", args.bandwidth]
        self.rss: list[tuple[str, float]] = []  # (which mount, peak RSS in MiB)
        self.mount_broken: str | None = None
        self.serial = 0
        self.emu = self.start_emulator("main")
        self.outputs: dict[str, tuple[str, Path]] = {}  # name -> (file id, local copy)

    # helpers

    def start_emulator(self, name: str) -> Emulator:
        emu = Emulator(self.work, name, self.key, self.emulator_args)
        self.stack.callback(emu.close)
        return emu

    def fresh_dir(self, kind: str) -> Path:
        self.serial += 1
        path = self.work / f"{kind}-{self.serial}"
        path.mkdir()
        return path

    @contextlib.contextmanager
    def orfs_mount(self, label: str, emu: Emulator | None = None,
                   cache: Path | None = None, extra: tuple[str, ...] = ()) -> Iterator[Path]:
        """A fresh `orfs mount -f`; its cache is `cache` or a new empty directory."""
        if self.mount_broken:
            raise BenchError(f"the mount did not work earlier: {self.mount_broken}")
        emu = emu or self.emu
        mnt = self.fresh_dir("mnt")
        fresh_cache = cache is None
        cache = cache or self.fresh_dir("cache")
        argv = [PYTHON, "-m", "orfs", "mount", str(mnt), "--api-base", emu.url,
                "--cache-dir", str(cache), "-f", *self.mount_args, *extra]
        mount = Mount(argv, mnt, mnt.with_name(mnt.name + ".log"), self.env)
        try:
            mount.__enter__()
        except BenchError as e:
            print(f"  orfs mount failed: {e}", flush=True)
            self.mount_broken = one_line(e)
            raise
        try:
            yield mnt
        finally:
            mount.__exit__()
            if mount.peak_rss is not None:
                self.rss.append((label, mount.peak_rss))
            if fresh_cache:
                shutil.rmtree(cache, ignore_errors=True)

    @contextlib.contextmanager
    def rclone_mount(self, local: Path) -> Iterator[Path]:
        mnt = self.fresh_dir("rclone")
        argv = ["rclone", "mount", str(local), str(mnt), "--vfs-cache-mode", "off"]
        with Mount(argv, mnt, mnt.with_name(mnt.name + ".log")):
            yield mnt

    def output(self, name: str, size: int) -> tuple[str, Path]:
        """A downloadable output of `size` random bytes, and the local file it came from."""
        if name not in self.outputs:
            local = self.work / "local" / name
            local.parent.mkdir(exist_ok=True)
            write_random(local, size)
            self.outputs[name] = (self.emu.create_output(name, local), local)
        return self.outputs[name]

    # the rows

    def cold_read(self, size: int, reps: int, rate: Row, ttfb: Row | None) -> None:
        """A fresh mount with an empty cache reads the file once, vs a direct download."""
        name = f"read-{size_label(size).replace(' ', '')}.bin"
        file_id, _ = self.output(name, size)
        downloads: list[int] = []
        self.emu.download(file_id)  # warms the emulator's own page cache for both sides

        def direct() -> None:
            first, seconds, got = self.emu.download(file_id)
            if got != size:
                raise BenchError(f"direct download gave {got} bytes of {size}")
            rate.baseline.append(mibps(size, seconds))
            if ttfb:
                ttfb.baseline.append(first * 1000)

        def through_orfs() -> None:
            with self.orfs_mount(f"cold read {size_label(size)}") as mnt:
                os.stat(mnt / name)  # the lookup (first listing) is not part of the read
                self.emu.reset_stats()
                first, seconds = read_file(mnt / name, size)
                downloads.append(self.emu.stats().get("download", 0))
            rate.orfs.append(mibps(size, seconds))
            if ttfb:
                ttfb.orfs.append(first * 1000)

        for rep in range(reps):
            alternate(rep, through_orfs, direct, [r for r in (rate, ttfb) if r])
        if downloads:
            rate.notes.append(f"download requests per cold read: {downloads}")

    def warm_and_repeat(self, warm: Row, repeat: Row) -> None:
        """Reads with the bytes in orfs' disk cache (fresh mount, kernel page cache
        dropped) vs rclone over a local copy; then again in the same mount (kernel page
        cache kept) vs a page-cached local file."""
        size = self.plan.big
        name = f"read-{size_label(size).replace(' ', '')}.bin"
        _, local = self.output(name, size)
        cache = self.fresh_dir("cache")
        downloads: list[int] = []

        def fill_cache() -> None:
            with self.orfs_mount("warm-up", cache=cache) as mnt:
                read_file(mnt / name, size)
                if sha256_of(mnt / name) != sha256_of(local):
                    raise BenchError(f"{name} read through the mount differs from its source")

        def through_orfs() -> None:
            if not any(cache.iterdir()):
                fill_cache()
            drop_page_cache([cache, local])
            with self.orfs_mount(f"warm read {size_label(size)}", cache=cache) as mnt:
                os.stat(mnt / name)
                self.emu.reset_stats()
                warm.orfs.append(mibps(size, read_file(mnt / name, size)[1]))
                repeat.orfs.append(mibps(size, read_file(mnt / name, size)[1]))
                downloads.append(self.emu.stats().get("download", 0))

        def through_rclone() -> None:
            drop_page_cache([cache, local])
            with self.rclone_mount(local.parent) as mnt:
                os.stat(mnt / name)
                warm.baseline.append(mibps(size, read_file(mnt / name, size)[1]))
            read_file(local, size)  # now page cached
            repeat.baseline.append(mibps(size, read_file(local, size)[1]))

        for rep in range(self.plan.reps):
            alternate(rep, through_orfs, through_rclone, [warm, repeat])
        if downloads:
            warm.checks["no download in a warm mount"] = not any(downloads)
            warm.notes.append(f"download requests per warm mount: {downloads}")

    def write(self, size: int, reps: int, row: Row) -> None:
        """`cp` of a UTF-8 CSV file into the mount vs a direct streamed multipart upload."""
        label = size_label(size)
        src = self.work / "local" / f"write-{label.replace(' ', '')}.csv"
        src.parent.mkdir(exist_ok=True)
        write_csv(src, size)
        uploads: list[int] = []

        def direct() -> None:
            self.serial += 1
            seconds, file_id = self.emu.upload(src, f"direct-{self.serial}-{src.name}")
            row.baseline.append(mibps(size, seconds))
            self.emu.delete(file_id)

        def through_orfs() -> None:
            with self.orfs_mount(f"write {label}") as mnt:
                self.serial += 1
                dest = mnt / f"cp-{self.serial}-{src.name}"
                os.listdir(mnt)  # the first listing is not part of the copy
                self.emu.reset_stats()
                row.orfs.append(mibps(size, run_tool(["cp", str(src), str(dest)])))
                uploads.append(self.emu.stats().get("upload", 0))
                dest.unlink()

        for rep in range(reps):
            alternate(rep, through_orfs, direct, [row])
        if uploads:
            row.notes.append(f"upload requests per cp: {uploads}")
            row.checks["one upload per cp"] = all(n == 1 for n in uploads)

    def listing(self, ls: Row, stat: Row, ls_nox: Row) -> None:
        """`ls -l` of N files in a fresh mount vs a direct paginated listing, then `stat`
        of every name in the same mount, counting requests (a workspace of its own);
        then `ls -l` again in mounts made with --no-xattr."""
        n = self.plan.many
        emu = self.start_emulator("many")
        names = [f"f{i:05d}.txt" for i in range(n)]
        t0 = time.perf_counter()
        emu.create_tiny_outputs(names)
        print(f"  created {n:,} files in {time.perf_counter() - t0:.1f} s", flush=True)
        name_file = self.work / "names.txt"
        name_file.write_text("\n".join(names) + "\n")
        pages = -(-n // 1000)
        counts: list[dict[str, int]] = []
        counts_nox: list[dict[str, int]] = []
        stat_seconds: list[float] = []

        def direct(row: Row) -> Callable[[], None]:
            def run() -> None:
                seconds, got_pages, files = emu.list_all()
                if files != n or got_pages != pages:
                    raise BenchError(f"the direct listing gave {files} files in"
                                     f" {got_pages} pages")
                row.baseline.append(seconds)
            return run

        def timed_ls(mnt: Path, row: Row) -> None:
            emu.reset_stats()
            t0 = time.perf_counter()
            done = subprocess.run(["ls", "-l", str(mnt)], capture_output=True,
                                  timeout=TOOL_TIMEOUT)
            row.orfs.append(time.perf_counter() - t0)
            entries = done.stdout.count(b"\n") - 1  # less the "total" line
            if done.returncode != 0 or entries != n:
                raise BenchError(f"ls -l exited {done.returncode} with {entries} entries"
                                 f" of {n}: {done.stderr.decode(errors='replace')[-300:]}")

        def through_orfs() -> None:
            with self.orfs_mount(f"ls -l of {n:,} files", emu=emu) as mnt:
                timed_ls(mnt, ls)
                counts.append(emu.stats())
                emu.reset_stats()
                out = subprocess.run([PYTHON, "-I", "-c", STATTER, str(mnt), str(name_file)],
                                     capture_output=True, text=True, timeout=TOOL_TIMEOUT)
                if out.returncode != 0:
                    raise BenchError(f"stat failed: {out.stderr.strip()[-300:]}")
                stat_seconds.append(float(out.stdout))
                stat.orfs.append(float(sum(emu.stats().values())))

        def through_orfs_nox() -> None:
            with self.orfs_mount(f"ls -l of {n:,} files, --no-xattr", emu=emu,
                                 extra=("--no-xattr",)) as mnt:
                timed_ls(mnt, ls_nox)
                counts_nox.append(emu.stats())

        for rep in range(self.plan.reps):
            alternate(rep, through_orfs, direct(ls), [ls, stat])
            alternate(rep, through_orfs_nox, direct(ls_nox), [ls_nox])
        for row, seen in ((ls, counts), (ls_nox, counts_nox)):
            if not seen:
                continue
            row.checks[f"exactly {pages} list requests"] = all(c.get("list") == pages
                                                               for c in seen)
            row.checks["no retrieve"] = all(c.get("retrieve", 0) == 0 for c in seen)
            row.notes.append("requests per ls -l: " + "; ".join(
                ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if v) or "none"
                for c in seen))
        if stat_seconds:
            stat.notes.append(f"the stat loop took {fmt(statistics.median(stat_seconds), 's')}"
                              " (median)")

    def parallel(self, row: Row, k: int = 0, size: int = 0) -> None:
        """N `cat` of different files at once through a fresh mount, vs N concurrent
        direct downloads (N and the size: the plan's unless given)."""
        k, size = k or self.plan.parallel, size or self.plan.parallel_size
        label = size_label(size).replace(" ", "")
        names = [f"par-{i}-{label}.bin" for i in range(k)]
        ids = [self.output(name, size)[0] for name in names]
        total = k * size

        def direct() -> None:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(k) as pool:
                got = sum(r[2] for r in pool.map(self.emu.download, ids))
            if got != total:
                raise BenchError(f"parallel downloads gave {got} bytes of {total}")
            row.baseline.append(mibps(total, time.perf_counter() - t0))

        def through_orfs() -> None:
            with self.orfs_mount(f"{k} parallel cat") as mnt:
                for name in names:
                    os.stat(mnt / name)
                t0 = time.perf_counter()
                procs = [subprocess.Popen(["cat", str(mnt / name)], stdout=subprocess.DEVNULL)
                         for name in names]
                codes = [p.wait(timeout=TOOL_TIMEOUT) for p in procs]
                seconds = time.perf_counter() - t0
                if any(codes):
                    raise BenchError(f"cat exit codes {codes}")
            row.orfs.append(mibps(total, seconds))

        for file_id in ids:
            self.emu.download(file_id)
        for rep in range(self.plan.reps):
            alternate(rep, through_orfs, direct, [row])

    # the WAN rows: each orfs sample in a fresh mount with an empty cache, the folder
    # listed once before the timed command

    @contextlib.contextmanager
    def listed_mount(self, label: str, extra: tuple[str, ...] = ()) -> Iterator[Path]:
        with self.orfs_mount(label, extra=extra) as mnt:
            os.listdir(mnt)
            self.emu.reset_stats()
            yield mnt

    def wan_sequential(self, streams: Row, single: Row, ratio: Row) -> None:
        """`dd bs=1M` of the file vs several ranged direct streams at once and vs one
        direct stream; the bytes the emulator sent for the dd vs the file's size."""
        name = "wan-seq.bin"
        file_id, _ = self.output(name, WAN_BIG)
        quarter = -(-WAN_BIG // WAN_STREAMS)
        spans = [(i, min(i + quarter, WAN_BIG) - 1) for i in range(0, WAN_BIG, quarter)]

        def direct() -> None:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(len(spans)) as pool:
                got = sum(r[1] for r in pool.map(lambda s: self.emu.download_range(
                    file_id, *s), spans))
            streams.baseline.append(mibps(got, time.perf_counter() - t0))
            _, seconds, got = self.emu.download(file_id)
            if got != WAN_BIG:
                raise BenchError(f"direct download gave {got} bytes of {WAN_BIG}")
            single.baseline.append(mibps(WAN_BIG, seconds))
            ratio.baseline.append(WAN_BIG / MiB)

        def through_orfs() -> None:
            with self.listed_mount("dd bs=1M") as mnt:
                rate = mibps(WAN_BIG, run_tool(["dd", f"if={mnt / name}", "of=/dev/null",
                                                "bs=1M"]))
                sent = self.emu.bytes_sent()
            streams.orfs.append(rate)
            single.orfs.append(rate)
            ratio.orfs.append(sent / MiB)

        for rep in range(self.plan.reps):
            alternate(rep, through_orfs, direct, [streams, single, ratio])

    def wan_spans(self, row: Row, label: str, spans: list[tuple[int, int]],
                  tool: Callable[[Path], float] | None = None) -> None:
        """Reads of `spans` (offset, length) of the file in one process through a fresh
        mount (or `tool(path)`), vs one direct Range request per span, in a row."""
        name = "wan-seq.bin"
        file_id, _ = self.output(name, WAN_BIG)

        def direct() -> None:
            t0 = time.perf_counter()
            for offset, length in spans:
                self.emu.download_range(file_id, offset, offset + length - 1)
            row.baseline.append(time.perf_counter() - t0)

        def through_orfs() -> None:
            with self.listed_mount(label) as mnt:
                path = mnt / name
                row.orfs.append(tool(path) if tool else read_spans(path, spans))

        for rep in range(self.plan.reps):
            alternate(rep, through_orfs, direct, [row])

    def wan_tail(self, row: Row) -> None:
        self.wan_spans(row, "tail -c", [(WAN_BIG - WAN_TAIL, WAN_TAIL)],
                       lambda path: run_tool(["tail", "-c", str(WAN_TAIL), str(path)]))

    def wan_random(self, row: Row) -> None:
        rng = random.Random(WAN_RANDOM_SEED)
        spans = [(rng.randrange(0, WAN_BIG - WAN_RANDOM_SIZE), WAN_RANDOM_SIZE)
                 for _ in range(WAN_RANDOM_READS)]
        self.wan_spans(row, "random reads", spans)

    def wan_first(self, row: Row) -> None:
        self.wan_spans(row, "first 128 KiB", [(0, FIRST_READ)])

    def peak_rss(self, row: Row) -> None:
        if not self.rss:
            raise BenchError("no orfs mount ran")
        label, peak = max(self.rss, key=lambda x: x[1])
        row.orfs.append(peak)
        row.notes.append(f"highest in a {label} mount; {len(self.rss)} mounts measured")


# ------------------------------------------------------------- the WAN write rows


def orfs_has_option(option: str) -> bool:
    """Does `orfs mount --help` offer this option (rows of features not built yet)?"""
    done = subprocess.run([PYTHON, "-m", "orfs", "mount", "--help"], capture_output=True,
                          text=True, timeout=60)
    return option in done.stdout


class WanWrites:
    """Writes through a fresh mount at a distance vs direct uploads: a tree of small text
    files copied by a tool (`cp -r`, `tar -x`, `rsync -a`), and `cp` of one big text
    file. ``mode`` is the mount's --uploads mode: ``sync`` (close waits for the upload,
    the baseline uploads one after another) or ``async`` (the tool, then `orfs sync`,
    against WAN_UPLOAD_STREAMS direct uploads at a time). Every orfs sample also
    checks that each file made one upload request, that no name landed twice, and that
    the bytes the emulator stored are the source's (read from its blob files: uploads
    are not downloadable through the API)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.tree: Path | None = None
        self.files: list[Path] = []  # the tree's files, relative to it

    # the data

    def source_tree(self) -> Path:
        """WAN_TREE_FILES CSV files of assorted small sizes in WAN_TREE_FOLDERS folders."""
        if self.tree is None:
            tree = self.bench.work / "local" / "tree"
            rng = random.Random(WAN_TREE_SEED)
            for i in range(WAN_TREE_FILES):
                rel = Path(f"d{i % WAN_TREE_FOLDERS}") / f"f{i:03d}.csv"
                (tree / rel.parent).mkdir(parents=True, exist_ok=True)
                write_csv(tree / rel, rng.randrange(*WAN_TREE_SIZES))
                self.files.append(rel)
            self.tree = tree
        return self.tree

    def stored(self, prefix: str) -> dict[str, list[str]]:
        """filename -> ids of the workspace's files whose name starts with `prefix`."""
        r = self.bench.emu.client.get("files", params={"limit": 1000})
        out: dict[str, list[str]] = {}
        while True:
            r.raise_for_status()
            page = r.json()
            for f in page["data"]:
                if f["filename"].startswith(prefix):
                    out.setdefault(f["filename"], []).append(f["id"])
            if not page.get("cursor"):
                return out
            r = self.bench.emu.client.get("files", params={"limit": 1000,
                                                           "cursor": page["cursor"]})

    def remove(self, prefix: str) -> None:
        """Delete what a sample made (WAN_UPLOAD_STREAMS at a time), so every sample
        starts from the same workspace: each upload through the mount works out the
        names of the whole workspace again, so a workspace that grew from sample to
        sample would slow the later ones (docs/PERFORMANCE.md)."""
        ids = [i for ids in self.stored(prefix).values() for i in ids]
        with ThreadPoolExecutor(WAN_UPLOAD_STREAMS) as pool:
            list(pool.map(self.bench.emu.delete, ids))

    def landed_exactly(self, prefix: str, sources: dict[str, Path]) -> tuple[bool, bool]:
        """(no name under `prefix` stored twice, every source stored byte-exact under
        prefix + its name) once the copy is done."""
        stored = self.stored(prefix)
        once = all(len(ids) == 1 for ids in stored.values())
        blobs = self.bench.emu.dir / "data" / "blobs"
        exact = stored.keys() == {prefix + name for name in sources} and all(
            sha256_of(blobs / stored[prefix + name][0]) == sha256_of(src)
            for name, src in sources.items())
        return once, exact

    # the rows

    def tree_copy(self, row: Row, tool: str, mode: str) -> None:
        """`tool` copies the tree into a new folder of a fresh mount (then `orfs sync`
        when async), vs direct uploads of the same files (one after another when sync,
        WAN_UPLOAD_STREAMS at a time when async)."""
        bench = self.bench
        tree = self.source_tree()
        sources = {rel.as_posix(): tree / rel for rel in self.files}
        archive = bench.work / "local" / "tree.tar"
        if tool == "tar" and not archive.exists():
            subprocess.run(["tar", "-cf", str(archive), "-C", str(tree), "."], check=True)
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (./scripts/setup installs it)")
        uploads: list[int] = []
        dupes: list[bool] = []
        exact: list[bool] = []

        def direct() -> None:
            bench.serial += 1
            names = [(src, f"direct-{bench.serial}/{name}") for name, src in sources.items()]
            t0 = time.perf_counter()
            if mode == "sync":
                for src, name in names:
                    bench.emu.upload(src, name)
            else:
                with ThreadPoolExecutor(WAN_UPLOAD_STREAMS) as pool:
                    list(pool.map(lambda a: bench.emu.upload(*a), names))
            row.baseline.append(time.perf_counter() - t0)
            self.remove(f"direct-{bench.serial}/")

        def through_orfs() -> None:
            with bench.listed_mount(f"{tool} of {len(sources)} files, {mode}",
                                    extra=("--uploads", mode) if mode != "sync" else ()
                                    ) as mnt:
                bench.serial += 1
                top = f"{tool}-{bench.serial}"
                dest = mnt / top
                argv = {"cp": ["cp", "-r", str(tree), str(dest)],
                        "tar": ["tar", "-xf", str(archive), "-C", str(dest)],
                        "rsync": ["rsync", "-a", f"{tree}/", f"{dest}/"]}[tool]
                t0 = time.perf_counter()
                if tool == "tar":
                    dest.mkdir()
                run_tool(argv)
                if mode != "sync":
                    run_tool([PYTHON, "-m", "orfs", "sync", str(mnt)])
                row.orfs.append(time.perf_counter() - t0)
                uploads.append(bench.emu.stats().get("upload", 0))
            once, same = self.landed_exactly(top + "/", sources)
            dupes.append(not once)
            exact.append(same)
            self.remove(top + "/")

        for rep in range(bench.plan.reps):
            alternate(rep, through_orfs, direct, [row])
        if uploads:
            row.notes.append(f"upload requests per copy: {uploads}")
            row.checks[f"uploads = files ({len(sources)})"] = all(
                n == len(sources) for n in uploads)
            row.checks["remote duplicates 0"] = not any(dupes)
            row.checks["bytes byte-exact"] = all(exact)

    def big_copy(self, row: Row, mode: str) -> None:
        """`cp` of one WAN_BIG text file into a fresh mount (then `orfs sync` when async)
        vs one direct streamed upload."""
        bench = self.bench
        src = bench.work / "local" / f"wan-write-{size_label(WAN_BIG).replace(' ', '')}.csv"
        if not src.exists():
            src.parent.mkdir(exist_ok=True)
            write_csv(src, WAN_BIG)
        uploads: list[int] = []
        dupes: list[bool] = []
        exact: list[bool] = []

        def direct() -> None:
            bench.serial += 1
            seconds, file_id = bench.emu.upload(src, f"direct-{bench.serial}-{src.name}")
            row.baseline.append(mibps(WAN_BIG, seconds))
            bench.emu.delete(file_id)

        def through_orfs() -> None:
            with bench.listed_mount(f"cp of {size_label(WAN_BIG)}, {mode}",
                                    extra=("--uploads", mode) if mode != "sync" else ()
                                    ) as mnt:
                bench.serial += 1
                name = f"cp-{bench.serial}-{src.name}"
                t0 = time.perf_counter()
                run_tool(["cp", str(src), str(mnt / name)])
                if mode != "sync":
                    run_tool([PYTHON, "-m", "orfs", "sync", str(mnt)])
                row.orfs.append(mibps(WAN_BIG, time.perf_counter() - t0))
                uploads.append(bench.emu.stats().get("upload", 0))
            once, same = self.landed_exactly(name, {"": src})
            dupes.append(not once)
            exact.append(same)
            self.remove(name)

        for rep in range(bench.plan.reps):
            alternate(rep, through_orfs, direct, [row])
        if uploads:
            row.notes.append(f"upload requests per cp: {uploads}")
            row.checks["uploads = files (1)"] = all(n == 1 for n in uploads)
            row.checks["remote duplicates 0"] = not any(dupes)
            row.checks["bytes byte-exact"] = all(exact)


def wan_write_groups(bench: Bench) -> list[Group]:
    """The WAN write rows: sync always; async when the mount offers --uploads."""
    writes = WanWrites(bench)
    n, folders, big = WAN_TREE_FILES, WAN_TREE_FOLDERS, size_label(WAN_BIG)
    out: list[Group] = []

    def tree(tool: str, what: str, mode: str, target: float) -> Group:
        then = ", then orfs sync" if mode != "sync" else ""
        base = (f"{n} direct uploads one after another" if mode == "sync"
                else f"{n} direct uploads, {WAN_UPLOAD_STREAMS} at a time")
        row = Row(f"wan_{tool}_{mode}", f"{what} of {n} small text files in {folders}"
                  f" folders{then}, --uploads {mode}", "s", Target("<=", target), base)
        return Group(f"{what}, {mode}", [row], lambda: writes.tree_copy(row, tool, mode))

    def one(mode: str) -> Group:
        then = ", then orfs sync" if mode != "sync" else ""
        row = Row(f"wan_cp_{big.replace(' ', '')}_{mode}", f"cp of one {big} text file{then},"
                  f" --uploads {mode}", "MiB/s", Target(">=", 0.9), "one direct upload")
        return Group(f"cp of {big}, {mode}", [row], lambda: writes.big_copy(row, mode))

    if orfs_has_option("--uploads"):
        out += [tree("cp", "cp -r", "async", 1.5), tree("tar", "tar -x", "async", 1.5),
                tree("rsync", "rsync -a", "async", 1.5)]
    out += [tree("cp", "cp -r", "sync", 1.1), one("sync")]
    return out


# -------------------------------------------------------------------- the groups


@dataclasses.dataclass
class Group:
    """Rows measured together by one method of Bench."""

    name: str
    rows: list[Row]
    run: Callable[[], None]


def groups(bench: Bench, plan: Plan, only: list[str]) -> list[Group]:
    """Every row of the run, in the order of the table."""
    out: list[Group] = []
    big = size_label(plan.big)

    def cold(size: int, reps: int, target: bool) -> Group:
        label = size_label(size)
        rate = Row(f"cold_read_{label}", f"cold sequential read, {label}", "MiB/s",
                   Target(">=", 0.9) if target else None, "direct download")
        ttfb = Row("ttfb", f"time to first 128 KiB, {label}", "ms", Target("<=", 1.5),
                   "direct download") if target else None
        rows = [rate] + ([ttfb] if ttfb else [])
        return Group(f"cold read {label}", rows,
                     lambda: bench.cold_read(size, reps, rate, ttfb))

    def write(size: int, reps: int, target: bool) -> Group:
        label = size_label(size)
        row = Row(f"write_{label}", f"cp into the mount, {label}", "MiB/s",
                  Target(">=", 0.9) if target else None, "direct upload")
        return Group(f"write {label}", [row], lambda: bench.write(size, reps, row))

    if "cold" in only:
        out += [cold(size, plan.small_reps, False) for size in plan.growth]
        out.append(cold(plan.big, plan.reps, True))
    if "warm" in only:
        warm = Row("warm_read", f"warm read (disk cache, new mount), {big}", "MiB/s",
                   Target(">=", 1.0), "rclone mount of a local dir")
        repeat = Row("repeat_read", f"repeat read (page cache, same mount), {big}", "MiB/s",
                     Target(">=", 0.5), "page-cached local file")
        out.append(Group("warm and repeat reads", [warm, repeat],
                         lambda: bench.warm_and_repeat(warm, repeat)))
    if "write" in only:
        out += [write(size, plan.small_reps, False) for size in plan.growth]
        out.append(write(plan.big, plan.reps, True))
    if "list" in only:
        n = f"{plan.many:,}"
        ls = Row("ls", f"ls -l of {n} files", "s", Target("<=", 1.5),
                 f"direct listing, {-(-plan.many // 1000)} pages")
        stat = Row("stat", f"stat of {n} names after ls -l", "requests", Target("<=", 0))
        ls_nox = Row("ls_noxattr", f"ls -l of {n} files, mounted --no-xattr", "s",
                     Target("<=", 1.5), f"direct listing, {-(-plan.many // 1000)} pages")
        out.append(Group(f"ls -l and stat of {n} files", [ls, stat, ls_nox],
                         lambda: bench.listing(ls, stat, ls_nox)))
    if "parallel" in only:
        k, each = plan.parallel, size_label(plan.parallel_size)
        par = Row("parallel", f"{k} parallel cat of {each} each", "MiB/s", Target(">=", 0.9),
                  f"{k} direct downloads")
        out.append(Group(f"{k} parallel reads", [par], lambda: bench.parallel(par)))
    rss = Row("rss", "peak RSS of a mount process (VmHWM)", "MiB", Target("<=", 100))
    out.append(Group("peak RSS", [rss], lambda: bench.peak_rss(rss)))
    return out


def wan_groups(bench: Bench, only: list[str]) -> list[Group]:
    """Every row of the WAN profile, in the order of the table."""
    out: list[Group] = []
    big = size_label(WAN_BIG)
    if "sequential" in only:
        streams = Row("wan_dd_streams", f"dd bs=1M of a {big} output", "MiB/s",
                      Target(">=", 0.9), f"{WAN_STREAMS} ranged direct streams at once")
        single = Row("wan_dd_single", f"dd bs=1M of a {big} output", "MiB/s",
                     Target(">=", 3), "one direct stream")
        ratio = Row("wan_dd_bytes", "bytes downloaded by the dd", "MiB", Target("<=", 1.05),
                    "the file's size")
        out.append(Group(f"dd of {big}", [streams, single, ratio],
                         lambda: bench.wan_sequential(streams, single, ratio)))
    if "tail" in only:
        tail_row = Row("wan_tail", f"tail -c {WAN_TAIL} of the {big} output", "s", Target("<=", 2),
                       "one direct Range request")
        out.append(Group("tail", [tail_row], lambda: bench.wan_tail(tail_row)))
    if "random" in only:
        rnd = Row("wan_random", f"{WAN_RANDOM_READS} random {WAN_RANDOM_SIZE // KiB} KiB"
                  f" reads of the {big} output", "s", Target("<=", 2),
                  f"{WAN_RANDOM_READS} direct Range requests in a row")
        out.append(Group("random reads", [rnd], lambda: bench.wan_random(rnd)))
    if "first" in only:
        first = Row("wan_first", f"first {FIRST_READ // KiB} KiB of the {big} output", "s",
                    Target("<=", 1.2), "one direct Range request")
        out.append(Group("first 128 KiB", [first], lambda: bench.wan_first(first)))
    if "parallel" in only:
        each = size_label(WAN_PARALLEL_SIZE)
        par = Row("wan_parallel", f"{WAN_PARALLEL} parallel cat of {each} outputs (total)",
                  "MiB/s", Target(">=", 1.0), f"{WAN_PARALLEL} direct single streams")
        out.append(Group(f"{WAN_PARALLEL} parallel reads", [par],
                         lambda: bench.parallel(par, WAN_PARALLEL, WAN_PARALLEL_SIZE)))
    if "writes" in only:
        out += wan_write_groups(bench)
    if "fsspec" in only:
        cat = Row("wan_fsspec_cat", f"openrouter:// cat_file of a {big} output", "MiB/s",
                  Target(">=", 0.9), f"{WAN_STREAMS} ranged direct streams at once")
        columnar = Row("wan_fsspec_parquet", f"pyarrow reads 1 column of 16 of a {big} Parquet"
                       " output via openrouter://", "% of file", Target("<=", 20))
        out.append(Group("openrouter:// (fsspec)", [cat, columnar],
                         lambda: wan_fsspec(bench, cat, columnar)))
    rss = Row("rss", "peak RSS of a mount process (VmHWM)", "MiB", Target("<=", 100))
    out.append(Group("peak RSS", [rss], lambda: bench.peak_rss(rss)))
    return out


WAN_PARQUET_COLUMNS = 16


def wan_fsspec(bench: Bench, cat: Row, columnar: Row) -> None:
    """openrouter:// (orfs.fsspec, in this process) at a distance, each sample on a new
    filesystem instance that has listed the workspace once: `cat_file` of the output
    vs several ranged direct streams at once; the bytes the emulator sent while pyarrow
    read one column of a Parquet output, as a share of the file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orfs.fsspec import OpenRouterFileSystem

    def fresh() -> OpenRouterFileSystem:
        fs = OpenRouterFileSystem(api_key=bench.key, api_base=bench.emu.url,
                                  skip_instance_cache=True)
        fs.ls("")
        return fs

    name = "wan-seq.bin"
    file_id, _ = bench.output(name, WAN_BIG)
    quarter = -(-WAN_BIG // WAN_STREAMS)
    spans = [(i, min(i + quarter, WAN_BIG) - 1) for i in range(0, WAN_BIG, quarter)]

    def direct() -> None:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(spans)) as pool:
            got = sum(r[1] for r in pool.map(lambda s: bench.emu.download_range(
                file_id, *s), spans))
        cat.baseline.append(mibps(got, time.perf_counter() - t0))

    def through_fsspec() -> None:
        fs = fresh()
        t0 = time.perf_counter()
        got = len(fs.cat_file(name))
        seconds = time.perf_counter() - t0
        if got != WAN_BIG:
            raise BenchError(f"cat_file gave {got} bytes of {WAN_BIG}")
        cat.orfs.append(mibps(got, seconds))

    for rep in range(bench.plan.reps):
        alternate(rep, through_fsspec, direct, [cat])

    # Incompressible doubles, stored uncompressed in 4 row groups: each column is 1/16.
    rows = WAN_BIG // (8 * WAN_PARQUET_COLUMNS)
    rng = np.random.default_rng(20261207)
    table = pa.table({f"c{i}": rng.random(rows) for i in range(WAN_PARQUET_COLUMNS)})
    local = bench.work / "local" / "wan.parquet"
    local.parent.mkdir(exist_ok=True)
    pq.write_table(table, local, row_group_size=rows // 4, compression="none",
                   use_dictionary=False)
    del table
    size = local.stat().st_size
    bench.emu.create_output("wan.parquet", local)
    for _ in range(bench.plan.reps):
        fs = fresh()
        bench.emu.reset_stats()
        got = pq.read_table("wan.parquet", columns=["c3"], filesystem=fs)
        if got.num_rows != rows:
            raise BenchError(f"read {got.num_rows} rows of {rows}")
        columnar.orfs.append(round(100.0 * bench.emu.bytes_sent() / size, 1))
    columnar.notes.append(f"the file is {size / MiB:.1f} MiB")


def run_group(group: Group) -> None:
    """Run one group; on failure its rows show ERROR (keeping what was measured)."""
    print(f"- {group.name} ...", flush=True)
    t0 = time.perf_counter()
    try:
        group.run()
    except Exception as e:  # one broken group must not stop the others
        for row in group.rows:
            row.error = row.error or one_line(e)
        print(f"  failed: {one_line(e)}", flush=True)
    print(f"  {time.perf_counter() - t0:.1f} s", flush=True)


def remove_work_dir(work: Path) -> None:
    """Delete the work directory, never through a mount that is somehow still there."""
    for entry in work.iterdir():
        if is_listed(entry):  # a dead mount too
            unmount(entry)
        if is_listed(entry):
            print(f"bench: {entry} is still mounted; leaving {work} in place", file=sys.stderr)
            return
    shutil.rmtree(work, ignore_errors=True)


def machine_info(plan: Plan) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    changed = subprocess.run([*git, "status", "--porcelain", "--", "orfs"],
                             capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "python": platform.python_version(), "load_before": round(os.getloadavg()[0], 2),
        "commit": commit + ("+uncommitted" if changed else ""),
        "plan": plan.name, "sizes": dataclasses.asdict(plan),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smaller data ({size_label(QUICK.big)}, {QUICK.many:,} files),"
                        " under ~2 minutes")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    p.add_argument("--profile", choices=sorted(PROFILES), default="loopback",
                   help="loopback (default): the emulator as is; wan: the emulator at a"
                        f" distance (--latency-ms {WAN_LATENCY_MS:g} --bandwidth"
                        f" {WAN_BANDWIDTH} unless given), with the rows of a remote service")
    p.add_argument("--only", metavar="GROUPS", default=None,
                   help=f"comma-separated groups to run (default: all of the profile's:"
                        f" {','.join(GROUPS)}; wan: {','.join(WAN_GROUPS)})")
    p.add_argument("--latency-ms", type=float, default=None,
                   help="latency the emulator adds to every API request (default 0;"
                        f" wan {WAN_LATENCY_MS:g})")
    p.add_argument("--bandwidth", metavar="SIZE", default=None,
                   help="the emulator's cap on each transfer, bytes per second (default"
                        f" none; wan {WAN_BANDWIDTH})")
    p.add_argument("--mount-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for every `orfs mount` (repeatable)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where data, caches and mountpoints go (default: a new temporary"
                        " directory under $TMPDIR, removed at the end)")
    args = p.parse_args()
    wan = args.profile == "wan"
    if wan:
        args.latency_ms = WAN_LATENCY_MS if args.latency_ms is None else args.latency_ms
        args.bandwidth = args.bandwidth or WAN_BANDWIDTH
    args.latency_ms = args.latency_ms or 0.0
    known = PROFILES[args.profile]
    only = [g.strip() for g in (args.only or ",".join(known)).split(",") if g.strip()]
    if unknown := set(only) - set(known):
        p.error(f"unknown groups of the {args.profile} profile: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    tools = ("dd", "tail") if wan else ("cp", "ls") + (("rclone",) if "warm" in only else ())
    for tool in ("fusermount3", "cat") + tools:
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed (./scripts/setup installs it)")

    # SIGTERM unwinds like Ctrl-C, through every `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    machine = machine_info(plan)
    if wan:
        machine["plan"] = f"wan profile, {plan.name}: emulator --latency-ms" \
            f" {args.latency_ms:g} --bandwidth {args.bandwidth}"
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="orfs-bench.", dir=args.work_dir))
    t_start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(args, plan, work, stack)
            for group in wan_groups(bench, only) if wan else groups(bench, plan, only):
                run_group(group)
                rows += group.rows
    finally:
        remove_work_dir(work)
    machine["seconds"] = round(time.perf_counter() - t_start, 1)
    machine["load_after"] = round(os.getloadavg()[0], 2)
    print_table(machine, rows)
    verdicts = [r.verdict for r in rows]
    print(f"\n{verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL,"
          f" {verdicts.count('ERROR')} ERROR, {verdicts.count('info')} info"
          f" in {machine['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine,
                                         "rows": [r.as_json() for r in rows]}, indent=2) + "\n")
    return 1 if "ERROR" in verdicts else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # everything was stopped and unmounted on the way out
        print("\nbench: interrupted; nothing left mounted or running", file=sys.stderr)
        raise SystemExit(130) from None
