"""Python's data tools on openrouter:// URLs: pandas, pyarrow's Parquet reader, Dask on a
cluster of worker processes."""

from __future__ import annotations

import io
import os
import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orfs.fsspec import OpenRouterFileSystem
from orfs.testing.processes import EmulatorProcess
from tests.fsspec.conftest import blob

MiB = 1024 * 1024


def options(emu: EmulatorProcess, fs: OpenRouterFileSystem) -> dict[str, str]:
    return {"api_key": emu.api_key, "api_base": emu.url, "workspace": fs.workspace or ""}


def test_pandas_read_csv_and_to_csv(fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    emu.create_output("reports/q3/summary.csv", b"region,sales\nnorth,10\nsouth,32\n",
                      workspace_id=fs.workspace)
    opts = options(emu, fs)
    df = pd.read_csv("openrouter://reports/q3/summary.csv", storage_options=opts)
    assert df["sales"].sum() == 42
    df["sales"] *= 2
    df.to_csv("openrouter://reports/q3/doubled.csv", index=False, storage_options=opts)
    info = fs.info("reports/q3/doubled.csv")
    assert blob(emu, info["id"]) == b"region,sales\nnorth,20\nsouth,64\n"
    assert info["mime_type"] == "text/csv"
    # The same process reads back what it wrote (fsspec hands it the same instance).
    again = pd.read_csv("openrouter://reports/q3/doubled.csv", storage_options=opts)
    assert again["sales"].tolist() == [20, 64]


def parquet_bytes(columns: int, rows: int, row_groups: int) -> bytes:
    rng = random.Random(3)
    table = pa.table({f"c{i}": pa.array([rng.random() for _ in range(rows)])
                      for i in range(columns)})
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=rows // row_groups, compression="none")
    return out.getvalue()


def test_pyarrow_reads_one_column_of_parquet_with_far_less_than_the_file(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    body = parquet_bytes(columns=10, rows=200_000, row_groups=4)   # ~16 MiB
    emu.create_output("data/t.parquet", body, workspace_id=fs.workspace)
    fs.ls("")
    emu.reset_stats()
    table = pq.read_table("data/t.parquet", columns=["c3"], filesystem=fs)
    assert table.num_rows == 200_000 and table.column_names == ["c3"]
    assert table.column("c3").to_pylist() == \
        pq.read_table(io.BytesIO(body), columns=["c3"]).column("c3").to_pylist()
    sent = emu.transfer_stats()["bytes_sent"]
    print(f"one column of ten: {sent} of {len(body)} bytes sent")
    assert sent <= 0.2 * len(body), (sent, len(body))   # one column of ten, plus footer
    assert emu.stats()["list"] == 0


def test_fsspec_open_of_a_url_works_as_in_any_fsspec_library(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    import fsspec

    emu.create_output("notes/a.md", b"# A\n\ntext\n", workspace_id=fs.workspace)
    with fsspec.open("openrouter://notes/a.md", "rt", **options(emu, fs)) as f:
        assert f.read() == "# A\n\ntext\n"
    files = fsspec.open_files("openrouter://notes/*.md", "rb", **options(emu, fs))
    assert [f.path for f in files] == ["notes/a.md"]


def worker_downloads() -> int:
    """Downloads made by the openrouter:// instances of this process (run on workers)."""
    return sum(fs.stats().get("download", 0) for fs in OpenRouterFileSystem._cache.values())


@pytest.mark.slow
def test_dask_read_csv_on_a_local_cluster_of_two_worker_processes(
        fs: OpenRouterFileSystem, emu: EmulatorProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    files, total = [], 0
    for i in range(6):
        rows = [(j, i * 1000 + j) for j in range(500)]
        total += sum(v for _, v in rows)
        text = "id,value\n" + "".join(f"{a},{b}\n" for a, b in rows)
        files.append((f"logs/part-{i}.csv", text.encode()))
    emu.create_outputs(files, workspace_id=fs.workspace)
    # The workers read the key from their environment: it is not in the task graph.
    monkeypatch.setenv("OPENROUTER_API_KEY", emu.api_key)
    opts = {"api_base": emu.url, "workspace": fs.workspace}
    emu.reset_stats()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        df = dd.read_csv("openrouter://logs/*.csv", storage_options=opts)
        assert df.npartitions == 6
        assert int(df["value"].sum().compute()) == total
        assert int(df["id"].count().compute()) == 3000
        pids = set(client.run(os.getpid).values())
        # Each worker unpickled the filesystem and read with its own client.
        downloads = client.run(worker_downloads)
    assert len(pids) == 2 and os.getpid() not in pids
    assert sum(downloads.values()) >= 6, downloads
    assert emu.stats()["download"] >= 6
