"""Reading through openrouter://: ranged, parallel, read-ahead, and the errors."""

from __future__ import annotations

import errno
import logging
import random
from pathlib import Path

import pytest

from orfs.fsspec import GrowingReadAhead, OpenRouterFileSystem
from orfs.testing.processes import EmulatorProcess
from tests.fsspec.conftest import MakeFs

MiB = 1024 * 1024


def data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_cat_file_ranges_are_range_requests(fs: OpenRouterFileSystem,
                                            emu: EmulatorProcess) -> None:
    body = data(100_000)
    emu.create_output("r.bin", body, workspace_id=fs.workspace)
    fs.ls("")
    emu.reset_stats()
    assert fs.cat_file("r.bin", 10, 20) == body[10:20]
    assert fs.cat_file("r.bin", -100) == body[-100:]
    assert fs.cat_file("r.bin", 99_990, 200_000) == body[99_990:]
    assert fs.cat_file("r.bin", 50, 50) == b""
    assert fs.cat_ranges(["r.bin", "r.bin"], [0, 500], [10, 600]) == [body[:10], body[500:600]]
    stats = emu.transfer_stats()
    assert stats["bytes_sent"] == 10 + 100 + 10 + 10 + 100
    assert stats["ranged_requests"] == emu.stats()["download"] == 5


def test_a_big_read_is_split_among_parallel_ranged_streams(fs: OpenRouterFileSystem,
                                                           emu: EmulatorProcess) -> None:
    body = data(17 * MiB)
    emu.create_output("big.bin", body, workspace_id=fs.workspace)
    fs.ls("")
    emu.reset_stats()
    assert fs.cat_file("big.bin") == body
    assert emu.stats()["download"] == 4                 # fs.streams
    assert emu.transfer_stats() == {"bytes_sent": len(body), "ranged_requests": 4}


def test_a_server_that_ignores_ranges_gets_one_stream_and_a_warning(
        emulator_factory: object, make_fs: MakeFs, caplog: pytest.LogCaptureFixture) -> None:
    emu = emulator_factory("--no-ranges")  # type: ignore[operator]
    fs = make_fs(api_base=emu.url)
    body = data(12 * MiB)
    emu.create_output("big.bin", body, workspace_id=fs.workspace)
    with caplog.at_level(logging.WARNING, "orfs.fsspec"):
        assert fs.cat_file("big.bin") == body
        assert fs.cat_file("big.bin", 5 * MiB, 11 * MiB) == body[5 * MiB:11 * MiB]
    assert sum("ignores Range" in r.getMessage() for r in caplog.records) == 1
    emu.reset_stats()
    assert fs.cat_file("big.bin", 100, 200) == body[100:200]
    assert emu.stats()["download"] == 1


def test_open_reads_ahead_more_and_more_in_order_and_little_when_seeking(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    body = data(40 * MiB)
    emu.create_output("seq.bin", body, workspace_id=fs.workspace)
    fs.ls("")
    emu.reset_stats()
    got = bytearray()
    with fs.open("seq.bin", "rb") as f:
        assert isinstance(f.cache, GrowingReadAhead)
        while chunk := f.read(256 * 1024):
            got += chunk
    assert got == body
    sent = emu.transfer_stats()["bytes_sent"]
    assert sent == len(body)                  # every byte once
    # 128K, 512K, 2M, 8M, 32M windows: 160 reads of 256 KiB took a handful of fetches
    # (each of the big ones in parallel parts).
    assert emu.stats()["download"] <= 12
    emu.reset_stats()
    rng = random.Random(7)
    with fs.open("seq.bin", "rb") as f:
        for _ in range(10):
            at = rng.randrange(0, len(body) - 4096)
            f.seek(at)
            assert f.read(4096) == body[at:at + 4096]
    assert emu.transfer_stats()["bytes_sent"] <= 10 * (4096 + 128 * 1024)


def test_get_writes_the_file_in_place_and_fsspec_open_takes_a_url(
        fs: OpenRouterFileSystem, emu: EmulatorProcess, tmp_path: Path) -> None:
    import fsspec

    body = data(9 * MiB)
    emu.create_output("g/out.bin", body, workspace_id=fs.workspace)
    fs.get("openrouter://g/out.bin", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == body
    fs.get("g", str(tmp_path / "tree"), recursive=True)
    assert (tmp_path / "tree" / "out.bin").read_bytes() == body
    with fsspec.open("openrouter://g/out.bin", "rb", api_key=emu.api_key,
                     api_base=emu.url, workspace=fs.workspace) as f:
        assert f.read(1000) == body[:1000]


def test_an_upload_is_permission_error_with_the_reason_and_no_request(
        make_fs: MakeFs, emu: EmulatorProcess, tmp_path: Path) -> None:
    writer, reader = make_fs(), make_fs()
    writer.pipe_file("mine.csv", b"a,b\n1,2\n")
    reader.ls("")
    emu.reset_stats()
    for read in (lambda: reader.cat_file("mine.csv"), lambda: reader.open("mine.csv"),
                 lambda: reader.get("mine.csv", str(tmp_path / "x"))):
        with pytest.raises(PermissionError) as err:
            read()
        assert err.value.errno == errno.EACCES and "uploaded" in str(err.value)
    assert emu.stats()["download"] == 0
    assert not (tmp_path / "x").exists()


def test_missing_and_folder_paths_raise_the_builtin_errors(fs: OpenRouterFileSystem,
                                                           emu: EmulatorProcess) -> None:
    emu.create_output("d/f.txt", b"1", workspace_id=fs.workspace)
    with pytest.raises(FileNotFoundError):
        fs.cat_file("d/nope.txt")
    with pytest.raises(FileNotFoundError):
        fs.open("nope", "rb")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("d")


def test_a_file_deleted_elsewhere_is_file_not_found(make_fs: MakeFs,
                                                    emu: EmulatorProcess) -> None:
    fs, other = make_fs(), make_fs()
    emu.create_output("gone.bin", b"x" * 10, workspace_id=fs.workspace)
    fs.ls("")
    other.rm("gone.bin")
    with pytest.raises(FileNotFoundError) as err:
        fs.cat_file("gone.bin")
    assert err.value.errno == errno.ENOENT
