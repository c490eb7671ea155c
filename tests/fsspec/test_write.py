"""Writing through openrouter://: upload on close, replace, remove, move, and refusals."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from orfs.config import MAX_FILE_SIZE
from orfs.fsspec import OpenRouterFileSystem
from orfs.testing.processes import EmulatorProcess
from tests.fsspec.conftest import MakeFs, blob

MiB = 1024 * 1024
CSV = b"a,b\n1,2\n3,4\n"


def test_open_wb_uploads_on_close_with_the_folder_in_the_name(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    emu.reset_stats()
    with fs.open("openrouter://out/q3/table.csv", "wb") as f:
        for _ in range(3):
            f.write(CSV)
        assert emu.stats()["upload"] == 0          # nothing sent before close
    info = fs.info("out/q3/table.csv")
    assert info["filename"] == "out/q3/table.csv" and info["size"] == 3 * len(CSV)
    assert blob(emu, info["id"]) == 3 * CSV
    assert emu.stats()["upload"] == 1 and emu.stats()["list"] == 1
    assert fs.cat_file("out/q3/table.csv") == 3 * CSV   # read back: kept by this process


def test_a_large_write_is_staged_on_disk_not_in_memory(fs: OpenRouterFileSystem,
                                                       emu: EmulatorProcess) -> None:
    line = b"0123456789," * 9 + b"x\n"
    with fs.open("big.csv", "wb") as f:
        for _ in range(12 * MiB // len(line)):
            f.write(line)
            # the memory buffer never holds more than one block
            assert f.buffer.tell() <= f.blocksize + len(line)
    info = fs.info("big.csv")
    assert info["size"] == (12 * MiB // len(line)) * len(line)
    assert blob(emu, info["id"]) == line * (12 * MiB // len(line))


def test_a_write_past_100_mib_is_efbig_at_that_write_and_nothing_is_sent(
        fs: OpenRouterFileSystem, emu: EmulatorProcess, tmp_path: Path) -> None:
    emu.reset_stats()
    with pytest.raises(OSError) as err:
        with fs.open("huge.bin", "wb") as f:
            f.write(b"x" * MAX_FILE_SIZE)
            f.write(b"y")
    assert err.value.errno == errno.EFBIG
    with pytest.raises(OSError) as err:
        fs.pipe_file("huge.bin", b"x" * (MAX_FILE_SIZE + 1))
    assert err.value.errno == errno.EFBIG
    big = tmp_path / "huge.bin"
    with big.open("wb") as out:
        out.truncate(MAX_FILE_SIZE + 1)
    with pytest.raises(OSError) as err:
        fs.put_file(str(big), "huge.bin")
    assert err.value.errno == errno.EFBIG
    assert emu.stats()["upload"] == 0
    assert not fs.exists("huge.bin")


def test_a_failing_writer_uploads_nothing_and_the_old_file_stays(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    old = emu.create_output("keep.csv", CSV, workspace_id=fs.workspace)
    emu.reset_stats()
    with pytest.raises(RuntimeError), fs.open("keep.csv", "wb") as f:
        f.write(b"half,")
        raise RuntimeError("the writer failed")
    assert emu.stats()["upload"] == 0 and emu.stats()["delete"] == 0
    assert fs.info("keep.csv")["id"] == old["id"]


def test_writing_over_a_file_replaces_it_upload_first(fs: OpenRouterFileSystem,
                                                      emu: EmulatorProcess) -> None:
    old = emu.create_output("r/report.csv", CSV, workspace_id=fs.workspace)
    fs.pipe_file("r/report.csv", b"x,y\n9,9\n")
    info = fs.info("r/report.csv")
    assert info["id"] != old["id"] and blob(emu, info["id"]) == b"x,y\n9,9\n"
    assert fs.ls("r", detail=False) == ["r/report.csv"]
    fresh = OpenRouterFileSystem(api_key=emu.api_key, api_base=emu.url,
                                 workspace=fs.workspace, skip_instance_cache=True)
    assert [e["id"] for e in fresh.ls("r")] == [info["id"]]   # the old one is deleted
    with pytest.raises(FileExistsError):
        fs.pipe_file("r/report.csv", b"1,2\n3,4\n", mode="create")
    with pytest.raises(FileExistsError):
        fs.open("r/report.csv", "xb")


def test_an_upload_the_service_refuses_keeps_the_old_file_and_says_why(
        make_fs: MakeFs, emulator_factory: object, tmp_path: Path) -> None:
    emu = emulator_factory("--quota", "1K")  # type: ignore[operator]
    fs = make_fs(api_base=emu.url)
    fs.pipe_file("a.csv", CSV)
    with pytest.raises(OSError) as err:
        fs.pipe_file("a.csv", b"\x00\x01\x02 not a type the service takes")
    assert err.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as err:
        fs.pipe_file("b.csv", b"a,b\n" + b"1,2\n" * 400)
    assert err.value.errno == errno.ENOSPC
    assert fs.ls("", detail=False) == ["a.csv"] and fs.cat_file("a.csv") == CSV


def test_put_streams_a_local_file_and_a_tree(fs: OpenRouterFileSystem,
                                             emu: EmulatorProcess, tmp_path: Path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "one.csv").write_bytes(CSV)
    (tmp_path / "src" / "sub" / "two.md").write_bytes(b"# title\n\ntext\n")
    fs.put(str(tmp_path / "src"), "up", recursive=True)
    assert fs.find("up") == ["up/one.csv", "up/sub/two.md"]
    assert blob(emu, fs.info("up/sub/two.md")["id"]) == b"# title\n\ntext\n"


def test_touch_makes_a_local_empty_file_until_it_has_content(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    emu.reset_stats()
    fs.touch("t/empty.txt")
    assert fs.info("t/empty.txt")["size"] == 0 and fs.info("t/empty.txt")["local"] is True
    assert fs.cat_file("t/empty.txt") == b"" and fs.ls("t", detail=False) == ["t/empty.txt"]
    assert emu.stats()["upload"] == 0
    fs.pipe_file("t/empty.txt", b"now with text\n")
    assert "local" not in fs.info("t/empty.txt")
    fs.touch("t/gone.txt")
    fs.rm("t/gone.txt")
    assert not fs.exists("t/gone.txt")
    with pytest.raises(OSError) as err:
        fs.pipe_file("t/empty.txt", b"")      # the API stores no empty files
    assert err.value.errno == errno.EINVAL and fs.cat_file("t/empty.txt") == b"now with text\n"


def test_rm_deletes_and_mkdir_sends_nothing(fs: OpenRouterFileSystem,
                                            emu: EmulatorProcess) -> None:
    emu.create_outputs([("d/a.txt", b"1"), ("d/e/b.txt", b"2"), ("c.txt", b"3")],
                       workspace_id=fs.workspace)
    fs.ls("")
    emu.reset_stats()
    fs.mkdir("new/folder")
    fs.makedirs("d", exist_ok=True)
    assert fs.isdir("new/folder") and emu.stats()["upload"] == 0
    fs.rm("d", recursive=True)
    fs.rm_file("c.txt")
    assert emu.stats()["delete"] == 3
    assert fs.ls("", detail=False) == ["new"]
    with pytest.raises(FileNotFoundError):
        fs.rm("d/a.txt")
    with pytest.raises(FileExistsError):
        fs.pipe_file("x.txt", b"x")
        fs.mkdir("x.txt")


def test_mv_copies_then_deletes_and_an_upload_cannot_move(
        make_fs: MakeFs, emu: EmulatorProcess) -> None:
    fs, other = make_fs(), make_fs()
    src = emu.create_output("out/result.csv", CSV, workspace_id=fs.workspace)
    fs.mv("out/result.csv", "archive/2026/result.csv")
    assert not fs.exists("out/result.csv")
    moved = fs.info("archive/2026/result.csv")
    assert moved["id"] != src["id"] and blob(emu, moved["id"]) == CSV
    assert moved["downloadable"] is False      # the copy is an upload
    fs.cp_file("archive/2026/result.csv", "copy.csv")  # this process kept its bytes
    assert fs.cat_file("copy.csv") == CSV
    with pytest.raises(PermissionError):     # another process cannot read an upload
        other.mv("copy.csv", "elsewhere.csv")
    assert other.exists("copy.csv") and not other.exists("elsewhere.csv")


def test_changes_made_while_a_listing_runs_are_kept_in_it(
        make_fs: MakeFs, emulator_factory: object) -> None:
    import threading
    import time

    emu = emulator_factory("--latency-ms", "100")  # type: ignore[operator]
    fs = make_fs(api_base=emu.url, listing_ttl=2.5)
    # old.csv on the first page: the listing has it before the delete below.
    old = emu.create_output("old.csv", CSV, workspace_id=fs.workspace)
    emu.create_outputs([(f"many/f{i:05d}", 1) for i in range(10_000)],
                       workspace_id=fs.workspace)
    started = time.monotonic()
    fs.ls("")                                   # 11 pages, about 1.1 s
    f = fs.open("old.csv", "wb")                # replaces old.csv at close
    f.write(b"x,y\n5,6\n")
    time.sleep(max(0.0, started + 2.6 - time.monotonic()))   # the listing expires
    emu.reset_stats()
    listing = threading.Thread(target=fs.ls, args=("many",))
    listing.start()
    deadline = time.monotonic() + 10
    while emu.stats()["list"] < 2 and time.monotonic() < deadline:  # pages are coming
        time.sleep(0.01)
    f.close()                                   # upload, then delete, during the listing
    running = listing.is_alive()
    listing.join()
    assert running, "the listing ended before the changes: the test proved nothing"
    info = fs.info("old.csv")
    assert info["id"] != old["id"] and blob(emu, info["id"]) == b"x,y\n5,6\n"
    assert [e["id"] for e in fs.ls("") if e["name"] == "old.csv"] == [info["id"]]
    assert emu.stats()["list"] == 11            # listed once
