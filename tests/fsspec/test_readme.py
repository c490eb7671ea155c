"""The README's "Python and clusters" examples, run as written against an emulator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orfs.testing.processes import EmulatorProcess, without_api_key
from tests.fsspec.conftest import blob

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Python and clusters", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run(code: str, emu: EmulatorProcess, cwd: Path) -> str:
    env = {**without_api_key(), "OPENROUTER_API_KEY": emu.api_key,
           "OPENROUTER_BASE_URL": emu.url}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_readme_has_a_pandas_and_a_dask_example() -> None:
    found = examples()
    assert len(found) == 2
    assert "pd.read_csv(\"openrouter://" in found[0] and "dd.read_csv(\"openrouter://" in found[1]
    assert all(len(code.strip().splitlines()) <= 4 for code in found)


def test_the_pandas_example_runs(emulator: EmulatorProcess, tmp_path: Path) -> None:
    emulator.create_output("reports/q3/summary.csv", b"region,sales\nnorth,10\nsouth,32\n")
    run(examples()[0], emulator, tmp_path)
    with emulator.client() as c:
        files = {f["filename"]: f for f in c.get("files").json()["data"]}
    copy = files["reports/q3/summary-copy.csv"]
    assert blob(emulator, copy["id"]) == b"region,sales\nnorth,10\nsouth,32\n"


@pytest.mark.slow
def test_the_dask_example_runs_on_a_cluster(emulator: EmulatorProcess, tmp_path: Path) -> None:
    total = 0
    files = []
    for i in range(4):
        rows = [(f"/p{j}", 200, 100 * i + j) for j in range(50)]
        total += sum(r[2] for r in rows)
        text = "path,status,bytes\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
        files.append((f"logs/day-{i}.csv", text.encode()))
    emulator.create_outputs(files)
    out = run(examples()[1], emulator, tmp_path)
    assert out.strip().splitlines()[-1] == str(total)
