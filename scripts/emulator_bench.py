#!/usr/bin/env python3
"""How fast the emulator itself is: the ceiling of every baseline of scripts/bench.py.

Starts `python -m orfs.emulator` on loopback (orfs.testing.processes: port 0, a
temporary data directory, stopped by PID at the end) and measures, with httpx as
scripts/bench.py uses it:

- uploads of 100 MiB: a plain CSV, a CSV of quoted fields, a PNG-headed binary;
- a 100 MiB download streamed to nowhere;
- the latency of small requests (retrieve, a 100-file list page) on keep-alive;
- creating N small outputs one request each (16 threads), and with the bulk hook
  when the emulator has it.

    .venv/bin/python scripts/emulator_bench.py [--size-mib 100] [--many 10000]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from orfs.testing.processes import EmulatorProcess, ProcessError

MiB = 1 << 20
KEY = "emulator-bench-key"


def write_csv(path: Path, size: int, quoted: bool) -> None:
    row = ('"{i}","name {i}, with a comma","city","{i}.50","a ""quoted"" comment"\n'
           if quoted else "{i},name-{i},city,{i}.50,row {i} of the benchmark\n")
    with path.open("wb") as f:
        written, i = 0, 0
        while True:
            batch = "".join(row.format(i=j) for j in range(i, i + 10000)).encode()
            i += 10000
            room = size - written - 256  # whole rows only, then a padded last one
            if len(batch) > room:
                batch = batch[:batch.rfind(b"\n", 0, max(room, 0)) + 1]
                written += f.write(batch)
                break
            written += f.write(batch)
        last = row.format(i=i).encode()
        pad = size - written - len(last)
        f.write(last[:-2] + b"x" * pad + last[-2:])  # padded inside the last field


def write_png_headed(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
        left = size - 16
        while left:
            n = min(left, MiB)
            f.write(os.urandom(n))
            left -= n


class Emulator:
    """The emulator process (orfs.testing.processes) and a keep-alive client of it."""

    def __init__(self, work: Path) -> None:
        self.process = EmulatorProcess(work / "data", api_key=KEY,
                                       log_path=work / "emulator.log", new_session=True)
        try:
            self.process.start()
        except ProcessError as e:
            raise SystemExit(f"emulator did not start: {e}") from None
        self.client = self.process.client(timeout=300,
                                          limits=httpx.Limits(max_connections=32))

    def close(self) -> None:
        self.client.close()
        self.process.stop()


def timed_upload(emu: Emulator, path: Path, route: str, ctype: str) -> tuple[float, dict[str, str]]:
    t0 = time.perf_counter()
    with path.open("rb") as f:
        r = emu.client.post(route, files={"file": (path.name, f, ctype)})
    seconds = time.perf_counter() - t0
    r.raise_for_status()
    return seconds, r.json()


def timed_download(emu: Emulator, file_id: str) -> tuple[float, int]:
    total = 0
    t0 = time.perf_counter()
    with emu.client.stream("GET", f"files/{file_id}/content") as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            total += len(chunk)
    return time.perf_counter() - t0, total


def median_ms(fn: object, n: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=100)
    p.add_argument("--many", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="orfs-emubench-"))
    emu: Emulator | None = None
    try:
        files = {"csv": work / "plain.csv", "quoted csv": work / "quoted.csv",
                 "png": work / "big.png"}
        write_csv(files["csv"], size, quoted=False)
        write_csv(files["quoted csv"], size, quoted=True)
        write_png_headed(files["png"], size)
        emu = Emulator(work)
        print(f"{args.size_mib} MiB uploads (median of {args.reps}):")
        ids: list[str] = []
        for label, path in files.items():
            runs = []
            for _ in range(args.reps):
                seconds, out = timed_upload(emu, path, "files", "application/octet-stream")
                runs.append(seconds)
                ids.append(out["id"])
            print(f"  {label:<11} {size / MiB / statistics.median(runs):8.1f} MiB/s"
                  f"  ({out['mime_type']})")
        for fid in ids:
            emu.client.delete(f"files/{fid}").raise_for_status()
        _, out = timed_upload(emu, files["png"], "_emulator/outputs", "image/png")
        runs = []
        for _ in range(args.reps):
            seconds, got = timed_download(emu, out["id"])
            assert got == size
            runs.append(seconds)
        print(f"download    {size / MiB / statistics.median(runs):8.1f} MiB/s"
              f" (median of {args.reps})")

        small = emu.client.post("_emulator/outputs",
                                files={"file": ("s.txt", b"hi\n", "text/plain")}).json()
        small_id = small["id"]
        retrieve = median_ms(lambda: emu.client.get(f"files/{small_id}"), 300)
        listing = median_ms(lambda: emu.client.get("files"), 100)
        tiny = median_ms(lambda: emu.client.post(
            "files", files={"file": ("a.txt", b"a,b\n1,2\n")}), 100)
        print(f"latency     retrieve {retrieve:.2f} ms, list 100 {listing:.2f} ms,"
              f" tiny upload {tiny:.2f} ms (medians)")

        names = [f"f{i:05d}.txt" for i in range(args.many)]
        ws_one = "00000000-0000-4000-8000-000000000001"

        def one(name: str) -> None:
            emu.client.post("_emulator/outputs", params={"workspace_id": ws_one},
                            files={"file": (name, f"{name}\n".encode(), "text/plain")},
                            ).raise_for_status()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, names))
        print(f"create {args.many:,} outputs one by one (16 threads):"
              f" {time.perf_counter() - t0:.1f} s")
        ws_bulk = "00000000-0000-4000-8000-000000000002"
        t0 = time.perf_counter()
        for start in range(0, args.many, 5000):
            body = {"files": [{"filename": n, "content_b64": base64.b64encode(
                f"{n}\n".encode()).decode()} for n in names[start:start + 5000]]}
            r = emu.client.post("_emulator/outputs/bulk", params={"workspace_id": ws_bulk},
                                json=body)
            if r.status_code == 404:
                print("bulk hook: not available")
                break
            r.raise_for_status()
        else:
            print(f"create {args.many:,} outputs with the bulk hook:"
                  f" {time.perf_counter() - t0:.2f} s")
        return 0
    finally:
        if emu is not None:
            emu.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
