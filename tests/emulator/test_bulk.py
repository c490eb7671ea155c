"""The bulk-create hook: many outputs in one request and one transaction, all or none."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from orfs.emulator import app as emulator_app
from orfs.emulator.seed import make_png
from orfs.emulator.store import Scope
from tests.conftest import EmulatorProcess, new_workspace
from tests.emulator.conftest import InProcess, MakeEmu
from tests.emulator.test_api import assert_error


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def bulk(emu: InProcess, files: list[Any], **params: str) -> httpx.Response:
    return await emu.client.post("_emulator/outputs/bulk", params=params, json={"files": files})


async def live_files(emu: InProcess, **params: str) -> list[dict[str, Any]]:
    r = await emu.client.get("files", params={"limit": 1000, **params})
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def test_bulk_creates_downloadable_outputs_in_order(emu: InProcess) -> None:
    png = make_png()
    r = await bulk(emu, [
        {"filename": "a/b.csv", "content_b64": b64(b"a,b\n1,2\n")},
        {"filename": "chart.png", "content_b64": b64(png), "content_type": "text/plain"},
        {"filename": "blob.bin", "content_b64": b64(b"\x00\x01"),
         "content_type": "application/x-thing; q=1"},
        {"filename": "filled.txt", "size": 5000, "fill": "ab"},
        {"filename": "x.txt", "size": 3},  # fill defaults to "x"
        {"filename": "empty", "size": 0},
        {"filename": "empty2", "content_b64": ""},
    ])
    assert r.status_code == 200, r.text
    made = r.json()["data"]
    assert [f["filename"] for f in made] == ["a/b.csv", "chart.png", "blob.bin", "filled.txt",
                                             "x.txt", "empty", "empty2"]
    # Sniffed when known, else the declared type, else octet-stream, as the single hook.
    assert [f["mime_type"] for f in made] == [
        "text/csv", "image/png", "application/x-thing", "text/plain", "text/plain",
        "application/octet-stream", "application/octet-stream"]
    assert [f["size_bytes"] for f in made] == [8, len(png), 2, 5000, 3, 0, 0]
    assert all(f["downloadable"] and f["_shape"] == "openrouter" for f in made)
    assert [f["created_at"] for f in made] == sorted(set(f["created_at"] for f in made))
    assert [f["id"] for f in await live_files(emu)] == [f["id"] for f in made]
    contents = [(await emu.client.get(f"files/{f['id']}/content")).content for f in made]
    assert contents == [b"a,b\n1,2\n", png, b"\x00\x01", b"ab" * 2500, b"xxx", b"", b""]
    assert list(emu.state.store.tmp_dir.iterdir()) == []
    # Hooks are not counted.
    assert (await emu.stats())["list"] == 1 and (await emu.stats())["download"] == 7
    assert sum((await emu.stats()).values()) == 8


async def test_bulk_fill_is_cut_at_size_and_can_be_large(emu: InProcess,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_app, "FILL_BLOCK", 7)  # blocks join up across writes
    r = await bulk(emu, [{"filename": "f", "size": 50, "fill": "abc"},
                         {"filename": "g", "size": 3 * 1024 * 1024, "fill": "é"}])
    assert r.status_code == 200, r.text
    f, g = r.json()["data"]
    assert (await emu.client.get(f"files/{f['id']}/content")).content == (b"abc" * 17)[:50]
    big = (await emu.client.get(f"files/{g['id']}/content")).content
    assert big == "é".encode() * (3 * 1024 * 1024 // 2) and g["mime_type"] == "text/plain"


async def test_a_nul_fill_is_a_sparse_file_of_any_size(emu: InProcess) -> None:
    size = 10 * 1024**3 - 1000  # a workspace at its quota
    r = await bulk(emu, [{"filename": "pad.bin", "size": size, "fill": "\u0000"}])
    assert r.status_code == 200, r.text
    rec = r.json()["data"][0]
    assert rec["size_bytes"] == size
    blob = emu.state.store.blob_path(rec["id"])
    assert blob.stat().st_size == size and blob.stat().st_blocks * 512 < 1024 * 1024
    assert emu.state.store.remaining(Scope()) == 1000
    head = await emu.client.get(f"files/{rec['id']}/content", headers={"Range": "bytes=0-9"})
    assert head.content == bytes(10)


async def test_bulk_respects_workspace_and_provider(emu: InProcess) -> None:
    ws = str(uuid.uuid4())
    r = await bulk(emu, [{"filename": "o.txt", "content_b64": b64(b"hi\n")}], workspace_id=ws,
                   provider="openai")
    assert r.status_code == 200, r.text
    (made,) = r.json()["data"]
    assert made["_shape"] == "openai" and made["object"] == "file" and made["bytes"] == 3
    assert await live_files(emu) == []
    assert await live_files(emu, workspace_id=ws) == []
    assert [f["id"] for f in await live_files(emu, workspace_id=ws, provider="openai")] == [
        made["id"]]
    assert_error(await bulk(emu, [], workspace_id="nope"), 400, "uuid")


async def test_bulk_of_nothing_is_an_empty_answer(emu: InProcess) -> None:
    r = await bulk(emu, [])
    assert r.status_code == 200 and r.json() == {"data": []}


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "json"),
    (b"[]", "files"),
    (b'{"files": {}}', "files"),
    (b'{"files": [1]}', "files[0]"),
    (b'{"files": [{"content_b64": ""}]}', "filename"),
    (b'{"files": [{"filename": "", "content_b64": ""}]}', "filename"),
    (b'{"files": [{"filename": 3, "content_b64": ""}]}', "filename"),
    (b'{"files": [{"filename": "a"}]}', "either"),
    (b'{"files": [{"filename": "a", "content_b64": "", "size": 0}]}', "either"),
    (b'{"files": [{"filename": "a", "content_b64": "!!"}]}', "base64"),
    (b'{"files": [{"filename": "a", "content_b64": 5}]}', "base64"),
    (b'{"files": [{"filename": "a", "content_b64": "", "fill": "x"}]}', "fill"),
    (b'{"files": [{"filename": "a", "size": -1}]}', "size"),
    (b'{"files": [{"filename": "a", "size": true}]}', "size"),
    (b'{"files": [{"filename": "a", "size": 1.5}]}', "size"),
    (b'{"files": [{"filename": "a", "size": 1, "fill": ""}]}', "fill"),
    (b'{"files": [{"filename": "a", "size": 1, "content_type": 1}]}', "content_type"),
    (b'{"files": [{"filename": "a", "size": 1, "mime": "x"}]}', "unknown"),
])
async def test_bad_bulk_bodies_are_400_and_create_nothing(emu: InProcess, body: bytes,
                                                          message: str) -> None:
    good = b'{"filename": "ok", "size": 1}, '
    if body.startswith(b'{"files": ['):
        body = body.replace(b"[", b"[" + good, 1)  # a good entry first: nothing is kept
        message = message.replace("files[0]", "files[1]")
    r = await emu.client.post("_emulator/outputs/bulk", content=body,
                              headers={"Content-Type": "application/json"})
    assert_error(r, 400, message)
    assert await live_files(emu) == []
    assert list(emu.state.store.tmp_dir.iterdir()) == []
    assert list(emu.state.store.blobs_dir.iterdir()) == []


async def test_bulk_over_the_quota_is_403_and_creates_nothing(make_emu: MakeEmu) -> None:
    emu = await make_emu(quota=1000)
    await emu.output("first", b"a" * 400)
    r = await bulk(emu, [{"filename": "b", "size": 300}, {"filename": "c", "size": 301}])
    assert_error(r, 403, "quota")
    assert [f["filename"] for f in await live_files(emu)] == ["first"]
    assert len(list(emu.state.store.blobs_dir.iterdir())) == 1
    assert list(emu.state.store.tmp_dir.iterdir()) == []
    r = await bulk(emu, [{"filename": "b", "size": 300}, {"filename": "c", "size": 300}])
    assert r.status_code == 200, r.text  # exactly full
    assert emu.state.store.used(Scope()) == 1000


async def test_bulk_body_over_the_limit_is_413(emu: InProcess,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_app, "BULK_BODY_LIMIT", 100)
    files = [{"filename": f"f{i}", "size": 1} for i in range(10)]
    assert_error(await bulk(emu, files), 413)  # by Content-Length, before reading

    async def chunks() -> Any:
        yield b'{"files": ['
        for i in range(20):
            yield b'{"filename": "f%d", "size": 1}, ' % i
        yield b'{"filename": "last", "size": 1}]}'

    r = await emu.client.post("_emulator/outputs/bulk", content=chunks())  # no length
    assert_error(r, 413)
    assert await live_files(emu) == []


async def test_bulk_needs_the_key(emu: InProcess) -> None:
    r = await emu.client.post("_emulator/outputs/bulk", json={"files": []},
                              headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401)
    r = await emu.client.get("_emulator/outputs/bulk")
    assert_error(r, 405)


def test_create_outputs_helper_against_a_real_process(emulator_session: EmulatorProcess) -> None:
    ws = new_workspace()
    names = [f"dir/f{i:05d}.txt" for i in range(2500)]
    made = emulator_session.create_outputs(
        [(n, f"{n}\n".encode()) for n in names] + [("pad.bin", 10)], workspace_id=ws, batch=1000)
    assert [f["filename"] for f in made] == [*names, "pad.bin"]
    with emulator_session.client() as c:
        seen = []
        cursor = None
        while True:
            params: dict[str, Any] = {"workspace_id": ws, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = c.get("files", params=params).json()
            seen += [f["id"] for f in page["data"]]
            cursor = page["cursor"]
            if not cursor:
                break
        assert seen == [f["id"] for f in made]
        r = c.get(f"files/{made[-1]['id']}/content", params={"workspace_id": ws})
        assert r.content == b"x" * 10
        r = c.get(f"files/{made[7]['id']}/content", params={"workspace_id": ws})
        assert r.content == b"dir/f00007.txt\n"
