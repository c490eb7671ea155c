"""Paths through openrouter:// are the mount's names, answered from one cached listing."""

from __future__ import annotations

import errno
import time
from datetime import datetime

import fsspec
import pytest

from orfs.fsspec import OpenRouterFileSystem
from orfs.testing.processes import EmulatorProcess
from tests.fsspec.conftest import MakeFs


def test_the_protocol_is_registered_by_the_entry_point(emu: EmulatorProcess,
                                                       workspace: str) -> None:
    fs = fsspec.filesystem("openrouter", api_key=emu.api_key, api_base=emu.url,
                           workspace=workspace)
    assert isinstance(fs, OpenRouterFileSystem)
    assert fsspec.get_filesystem_class("openrouter") is OpenRouterFileSystem


def test_folders_come_from_names_and_info_has_the_records_fields(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    f = emu.create_output("reports/q3/summary.csv", b"a,b\n1,2\n",
                          workspace_id=fs.workspace)
    assert fs.ls("", detail=False) == ["reports"]
    assert fs.ls("reports", detail=False) == ["reports/q3"]
    assert fs.ls("openrouter://reports/q3/", detail=False) == ["reports/q3/summary.csv"]
    info = fs.info("openrouter://reports/q3/summary.csv")
    assert info["type"] == "file" and info["size"] == 8
    assert info["id"] == f["id"] and info["mime_type"] == "text/csv"
    assert info["downloadable"] is True and info["filename"] == "reports/q3/summary.csv"
    assert isinstance(info["created"], datetime) and fs.modified(info["name"]) == info["created"]
    assert fs.info("reports/q3") == {"name": "reports/q3", "size": 0, "type": "directory"}
    assert fs.isdir("reports") and fs.isfile("reports/q3/summary.csv")


def test_duplicates_and_odd_names_are_shown_as_in_the_mount(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    first = emu.create_output("a.csv", b"x,y\n1,2\n", workspace_id=fs.workspace)
    second = emu.create_output("a.csv", b"x,y\n3,4\n", workspace_id=fs.workspace)
    emu.create_output("odd//name", b"1", workspace_id=fs.workspace)
    emu.create_output("dots/../up", b"2", workspace_id=fs.workspace)
    emu.create_output("dots", b"3", workspace_id=fs.workspace)   # a file where a folder is
    listed = fs.ls("", detail=False)
    twin = f"a [{second['id']}].csv"
    assert "a.csv" in listed and twin in listed
    assert fs.info("a.csv")["id"] == first["id"]        # the oldest keeps the plain name
    assert fs.cat_file(twin) == b"x,y\n3,4\n"
    assert fs.ls("odd", detail=False) == ["odd/\u2205"]     # an empty component: ∅
    assert fs.cat_file("odd/\u2205/name") == b"1"
    assert fs.cat_file("dots/\uff0e\uff0e/up") == b"2"      # '..' as ．．
    dots = next(name for name in listed if name.startswith("dots ["))
    assert fs.isdir("dots") and fs.cat_file(dots) == b"3"  # the folder keeps the plain name


def test_by_id_reaches_any_file_and_costs_a_retrieve_only_when_not_listed(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    f = emu.create_output("deep/x.txt", b"hello", workspace_id=fs.workspace)
    assert fs.cat_file(f".by-id/{f['id']}") == b"hello"
    emu.reset_stats()
    assert fs.info(f"openrouter://.by-id/{f['id']}")["size"] == 5
    assert emu.stats()["retrieve"] == 0          # in the listing
    later = emu.create_output("later.txt", b"new", workspace_id=fs.workspace)
    assert fs.cat_file(f".by-id/{later['id']}") == b"new"
    assert emu.stats()["retrieve"] == 1 and emu.stats()["list"] == 0
    with pytest.raises(FileNotFoundError):
        fs.info(".by-id/or_file_000000000000000000000000")
    assert ".by-id" not in fs.ls("", detail=False)


def test_ls_of_10000_files_is_10_list_requests_and_info_after_it_none(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    n = 10_000
    emu.create_outputs([(f"logs/f{i:05d}.txt", 1) for i in range(n)], workspace_id=fs.workspace)
    emu.reset_stats()
    names = fs.ls("logs", detail=False)
    assert len(names) == n
    assert emu.stats()["list"] == 10
    for name in names:
        assert fs.info(name)["size"] == 1
    assert fs.find("logs") == sorted(names) and len(fs.glob("logs/f0*.txt")) == n
    assert fs.exists("logs/f09999.txt") and not fs.exists("logs/nope.txt")
    assert emu.stats() == {"list": 10, "retrieve": 0, "upload": 0, "delete": 0, "download": 0}


def test_a_missing_path_is_file_not_found_from_a_fresh_listing(
        fs: OpenRouterFileSystem, emu: EmulatorProcess) -> None:
    emu.create_output("a/b.txt", b"1", workspace_id=fs.workspace)
    fs.ls("")
    emu.reset_stats()
    for path in ("nope", "a/nope.txt", "a/b.txt/c"):
        with pytest.raises((FileNotFoundError, NotADirectoryError)) as err:
            fs.info(path)
        assert err.value.errno in (errno.ENOENT, errno.ENOTDIR)
    with pytest.raises(NotADirectoryError):
        fs.ls("a/b.txt/c")
    assert emu.stats()["list"] == 0
    assert fs.find("nope") == [] and fs.glob("nope/*") == []


def test_the_listing_is_cached_for_the_ttl_then_listed_again(
        make_fs: MakeFs, emu: EmulatorProcess, workspace: str) -> None:
    fs = make_fs(listing_ttl=0.5)
    emu.create_output("one.txt", b"1", workspace_id=workspace)
    emu.reset_stats()
    assert fs.ls("", detail=False) == ["one.txt"]
    emu.create_output("two.txt", b"2", workspace_id=workspace)
    assert fs.ls("", detail=False) == ["one.txt"]   # within the TTL: no request
    assert emu.stats()["list"] == 1
    time.sleep(0.6)
    assert fs.ls("", detail=False) == ["one.txt", "two.txt"]
    assert emu.stats()["list"] == 2
    fs.invalidate_cache()
    emu.create_output("three.txt", b"3", workspace_id=workspace)
    assert "three.txt" in fs.ls("", detail=False)


def test_find_and_glob_honour_depth_and_folders(fs: OpenRouterFileSystem,
                                                emu: EmulatorProcess) -> None:
    emu.create_outputs([("top.csv", b"1"), ("d/one.csv", b"1"), ("d/e/two.csv", b"1"),
                        ("d/e/f/three.txt", b"1")], workspace_id=fs.workspace)
    assert fs.find("d", maxdepth=1) == ["d/one.csv"]
    assert fs.find("d", withdirs=True) == ["d", "d/e", "d/e/f", "d/e/f/three.txt",
                                           "d/e/two.csv", "d/one.csv"]
    assert fs.glob("**/*.csv") == ["d/e/two.csv", "d/one.csv", "top.csv"]
    assert fs.glob("openrouter://d/*/*.csv") == ["d/e/two.csv"]
    assert fs.du("d") == 3
