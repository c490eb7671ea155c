"""The wire contract, in-process: auth, errors, shapes, paging, scoping, limits, persistence."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from orfs.emulator.app import MAX_UPLOAD, decode_cursor
from orfs.emulator.seed import demo_files
from orfs.emulator.store import Scope
from tests.emulator.conftest import InProcess, MakeEmu

ID_RE = re.compile(r"^or_file_[0-9A-Za-z]{24}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
OR_FILE_KEYS = {"_shape", "id", "type", "filename", "mime_type", "size_bytes", "created_at",
                "downloadable"}


def assert_error(r: httpx.Response, status: int, message_part: str = "") -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "user_id"}
    assert body["user_id"] is None
    assert body["error"]["code"] == status
    assert body["error"]["metadata"] == {}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert message_part.lower() in body["error"]["message"].lower()


# -- auth and errors ------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": "Basic b3Jmcw=="},
    {"Authorization": "Bearer"},
])
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "files"), ("POST", "files"), ("GET", "files/or_file_x"),
    ("DELETE", "files/or_file_x"), ("GET", "files/or_file_x/content"),
    ("GET", "_emulator/stats"), ("POST", "_emulator/outputs"),
])
async def test_missing_or_wrong_key_is_401(emu: InProcess, headers: dict[str, str], method: str,
                                           path: str) -> None:
    emu.client.headers.pop("Authorization")
    r = await emu.client.request(method, path, headers=headers)
    assert_error(r, 401)


async def test_401_never_echoes_the_key(emu: InProcess) -> None:
    r = await emu.client.get("files", headers={"Authorization": "Bearer sk-or-v1-guess"})
    assert "sk-or-v1-guess" not in r.text
    assert emu.config.api_key not in r.text


async def test_unknown_route_is_404_with_the_error_body(emu: InProcess) -> None:
    assert_error(await emu.client.get("nothing-here"), 404)
    assert_error(await emu.client.get("/other"), 404)


async def test_wrong_method_is_405_with_the_error_body(emu: InProcess) -> None:
    r = await emu.client.put("files")
    assert_error(r, 405)
    assert "GET" in r.headers["allow"]
    assert_error(await emu.client.post("files/or_file_x"), 405)


# -- upload -----------------------------------------------------------------------------


async def test_upload_returns_the_openrouter_file_shape(emu: InProcess) -> None:
    before = datetime.now().astimezone()
    f = await emu.upload_ok("notes/today.txt", b"hello\n")
    assert set(f) == OR_FILE_KEYS
    assert f["_shape"] == "openrouter" and f["type"] == "file"
    assert ID_RE.match(f["id"])
    assert ISO_RE.match(f["created_at"])
    created = datetime.fromisoformat(f["created_at"].replace("Z", "+00:00"))
    assert abs((created - before).total_seconds()) < 60
    assert f["filename"] == "notes/today.txt"
    assert f["size_bytes"] == 6
    assert f["mime_type"] == "text/plain"
    assert f["downloadable"] is False


@pytest.mark.parametrize("filename", [
    "../../etc/passwd", "/absolute/path.txt", "a//b/./c/../d.txt", "caf\u00e9 \u2603.txt",
    "back\\slash.txt", "semi;colon=1.txt", " spaced .txt", "..",
])
async def test_filenames_are_stored_exactly_as_sent(emu: InProcess, filename: str) -> None:
    f = await emu.upload_ok(filename, b"x\n")
    assert f["filename"] == filename
    got = (await emu.client.get(f"files/{f['id']}")).json()
    assert got["filename"] == filename


async def test_quotes_in_filenames_arrive_as_the_client_encoded_them(emu: InProcess) -> None:
    # httpx (like browsers) sends '"' as %22 in the multipart header; the emulator
    # stores what arrived, as a server that does not undo that encoding would.
    f = await emu.upload_ok('say "hi".txt', b"x\n")
    assert f["filename"] == "say %22hi%22.txt"
    # A backslash-escaped quote in a hand-made header is unescaped.
    body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="say \\"hi\\".txt"'
            b"\r\n\r\nx\n\r\n--B--\r\n")
    r = await emu.client.post("files", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert r.json()["filename"] == 'say "hi".txt'


async def test_dotdot_filenames_never_escape_the_data_dir(emu: InProcess,
                                                          tmp_path: Path) -> None:
    data_dir = emu.config.data_dir
    for name in ("../../escaped.txt", "../escaped.txt", "/tmp/escaped.txt", "blobs/../x.txt"):
        await emu.upload_ok(name, b"secret\n")
        await emu.output(name, b"secret\n")
    # Nothing anywhere under the test's directory is named after a filename...
    assert not [p for p in tmp_path.rglob("*escaped*")]
    assert not Path("/tmp/escaped.txt").exists()
    # ...and every blob is named by its id.
    blobs = sorted(p.name for p in (data_dir / "blobs").iterdir())
    assert len(blobs) == 8 and all(ID_RE.match(b) for b in blobs)


async def test_two_uploads_of_one_name_are_two_files(emu: InProcess) -> None:
    a = await emu.upload_ok("a.txt", b"one\n")
    b = await emu.upload_ok("a.txt", b"two\n")
    assert a["id"] != b["id"]
    page = (await emu.client.get("files")).json()
    assert [f["id"] for f in page["data"]] == [a["id"], b["id"]]


async def test_ids_are_unique_and_created_at_strictly_increases(emu: InProcess) -> None:
    files = [await emu.upload_ok(f"{i}.txt", b"x\n") for i in range(20)]
    assert len({f["id"] for f in files}) == 20
    stamps = [f["created_at"] for f in files]
    assert stamps == sorted(stamps) and len(set(stamps)) == 20


async def test_empty_upload_is_400(emu: InProcess) -> None:
    assert_error(await emu.upload("empty.txt", b""), 400, "empty")


async def test_upload_without_filename_is_400(emu: InProcess) -> None:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nhello\r\n--B--\r\n")
    r = await emu.client.post("files", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert_error(r, 400, "filename")


async def test_upload_without_a_file_part_is_400(emu: InProcess) -> None:
    r = await emu.client.post("files", files={"other": ("a.txt", b"x")})
    assert_error(r, 400, "'file'")
    r = await emu.client.post("files", data={"file": "not a file"})
    assert_error(r, 400)


async def test_upload_that_is_not_multipart_is_400(emu: InProcess) -> None:
    r = await emu.client.post("files", content=b"hello", headers={"Content-Type": "text/plain"})
    assert_error(r, 400, "multipart")


async def test_upload_with_two_file_parts_is_400(emu: InProcess) -> None:
    r = await emu.client.post("files", files=[("file", ("a.txt", b"a\n")),
                                              ("file", ("b.txt", b"b\n"))])
    assert_error(r, 400, "more than one")
    assert (await emu.client.get("files")).json()["data"] == []


async def test_truncated_multipart_body_is_400(emu: InProcess) -> None:
    body = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhello"
    r = await emu.client.post("files", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert_error(r, 400, "malformed")
    assert list(emu.state.store.tmp_dir.iterdir()) == []


class Body:
    """A chunked upload body that would be ``total`` bytes, counting what was pulled."""

    def __init__(self, total: int, chunk: int = 1024 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        yield head
        block = b"a" * self.chunk
        while self.pulled < self.total:
            self.pulled += len(block)
            yield block
        yield b"\r\n--B--\r\n"


async def test_over_100_mib_is_413_without_reading_the_whole_body(emu: InProcess) -> None:
    body = Body(200 * 1024 * 1024)
    r = await emu.client.post("files", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert_error(r, 413)
    assert MAX_UPLOAD < body.pulled <= MAX_UPLOAD + 2 * body.chunk  # stopped right after the limit
    assert list(emu.state.store.tmp_dir.iterdir()) == []


async def test_exactly_100_mib_is_accepted(emu: InProcess) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="max.txt"\r\n\r\n'
        block = (b"x" * 1023 + b"\n") * 1024  # 1 MiB of text lines
        for _ in range(MAX_UPLOAD // len(block)):
            yield block
        yield b"\r\n--B--\r\n"

    r = await emu.client.post("files", content=chunks(),
                              headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200, r.text
    assert r.json()["size_bytes"] == MAX_UPLOAD
    assert r.json()["mime_type"] == "text/plain"


async def test_declared_length_too_large_is_413_before_reading(emu: InProcess) -> None:
    body = Body(200 * 1024 * 1024)
    r = await emu.client.post("files", content=body, headers={
        "Content-Type": "multipart/form-data; boundary=B",
        "Content-Length": str(200 * 1024 * 1024)})
    assert_error(r, 413)
    assert body.pulled == 0


# -- quota -----------------------------------------------------------------------------------


async def test_quota_full_is_403_per_workspace(make_emu: MakeEmu) -> None:
    emu = await make_emu(quota=1000)
    await emu.upload_ok("a.txt", b"a" * 600)
    assert_error(await emu.upload("b.txt", b"b" * 600), 403, "quota")
    await emu.upload_ok("c.txt", b"c" * 400)  # exactly full is fine
    assert_error(await emu.upload("d.txt", b"d"), 403)
    other = str(uuid.uuid4())
    await emu.upload_ok("a.txt", b"a" * 600, workspace_id=other)  # another workspace has room
    # Deleting makes room again.
    first = (await emu.client.get("files")).json()["data"][0]
    await emu.client.delete(f"files/{first['id']}")
    await emu.upload_ok("e.txt", b"e" * 600)
    assert list(emu.state.store.tmp_dir.iterdir()) == []


async def test_quota_stops_a_streamed_upload_early(make_emu: MakeEmu) -> None:
    emu = await make_emu(quota=5 * 1024 * 1024)
    body = Body(50 * 1024 * 1024)
    r = await emu.client.post("files", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert_error(r, 403)
    assert body.pulled < 10 * 1024 * 1024


async def test_quota_applies_to_outputs(make_emu: MakeEmu) -> None:
    emu = await make_emu(quota=10)
    r = await emu.client.post("_emulator/outputs", files={"file": ("o.bin", b"x" * 11)})
    assert_error(r, 403)


# -- workspaces and providers --------------------------------------------------------------


async def test_workspaces_have_separate_files(emu: InProcess) -> None:
    ws_a, ws_b = str(uuid.uuid4()), str(uuid.uuid4())
    a = await emu.upload_ok("a.txt", b"a\n", workspace_id=ws_a)
    d = await emu.upload_ok("d.txt", b"d\n")
    assert [f["id"] for f in (await emu.client.get("files")).json()["data"]] == [d["id"]]
    listed = (await emu.client.get("files", params={"workspace_id": ws_a})).json()["data"]
    assert [f["id"] for f in listed] == [a["id"]]
    assert (await emu.client.get("files", params={"workspace_id": ws_b})).json()["data"] == []
    # Another workspace's id is unknown here: 404 for every operation.
    assert_error(await emu.client.get(f"files/{a['id']}"), 404)
    assert_error(await emu.client.get(f"files/{a['id']}", params={"workspace_id": ws_b}), 404)
    assert_error(await emu.client.delete(f"files/{a['id']}"), 404)
    assert_error(await emu.client.get(f"files/{a['id']}/content"), 404)
    assert (await emu.client.get(f"files/{a['id']}",
                                 params={"workspace_id": ws_a.upper()})).status_code == 200


async def test_workspace_id_must_be_a_uuid(emu: InProcess) -> None:
    assert_error(await emu.client.get("files", params={"workspace_id": "team"}), 400, "UUID")


async def test_each_provider_is_its_own_store(emu: InProcess) -> None:
    o = await emu.upload_ok("o.txt", b"o\n", provider="openai")
    a = await emu.upload_ok("a.txt", b"a\n", provider="anthropic")
    r = await emu.upload_ok("r.txt", b"r\n")
    for provider, fid in (("openai", o["id"]), ("anthropic", a["id"]), (None, r["id"])):
        params = {"provider": provider} if provider else {}
        listed = (await emu.client.get("files", params=params)).json()["data"]
        assert [f["id"] for f in listed] == [fid]
    assert_error(await emu.client.get(f"files/{o['id']}"), 404)


async def test_unknown_provider_is_400(emu: InProcess) -> None:
    assert_error(await emu.client.get("files", params={"provider": "mistral"}), 400, "provider")


async def test_openai_shapes(emu: InProcess) -> None:
    p = {"provider": "openai"}
    f = await emu.upload_ok("o.json", b'{"a": 1}', **p)
    assert set(f) == {"_shape", "id", "object", "bytes", "created_at", "filename", "purpose",
                      "status"}
    assert f["_shape"] == "openai" and f["object"] == "file"
    assert f["bytes"] == 8 and f["filename"] == "o.json"
    assert isinstance(f["created_at"], int)
    assert abs(f["created_at"] - datetime.now().timestamp()) < 60
    assert f["purpose"] == "user_data" and f["status"] == "processed"
    assert (await emu.client.get(f"files/{f['id']}", params=p)).json() == f
    page = (await emu.client.get("files", params=p)).json()
    assert page == {"_shape": "openai", "object": "list", "data": [f], "first_id": f["id"],
                    "has_more": False, "last_id": f["id"]}
    out = await emu.output("out.csv", b"a,b\n1,2\n", **p)
    assert out["_shape"] == "openai"
    r = await emu.client.get(f"files/{out['id']}/content", params=p)
    assert r.content == b"a,b\n1,2\n"
    d = (await emu.client.delete(f"files/{f['id']}", params=p)).json()
    assert d == {"_shape": "openai", "id": f["id"], "object": "file", "deleted": True}


async def test_anthropic_shapes(emu: InProcess) -> None:
    p = {"provider": "anthropic"}
    f = await emu.upload_ok("a.md", b"# hi\n", **p)
    assert set(f) == OR_FILE_KEYS and f["_shape"] == "anthropic"
    assert f["mime_type"] == "text/markdown" and f["downloadable"] is False
    page = (await emu.client.get("files", params=p)).json()
    assert page == {"_shape": "anthropic", "data": [f], "first_id": f["id"], "has_more": False,
                    "last_id": f["id"]}
    d = (await emu.client.delete(f"files/{f['id']}", params=p)).json()
    assert d == {"_shape": "anthropic", "id": f["id"], "type": "file_deleted"}


async def test_openrouter_shapes(emu: InProcess) -> None:
    empty = (await emu.client.get("files")).json()
    assert empty == {"_shape": "openrouter", "cursor": None, "data": [], "first_id": None,
                     "has_more": False, "last_id": None}
    f = await emu.upload_ok("a.txt", b"a\n")
    assert (await emu.client.get(f"files/{f['id']}")).json() == f
    d = (await emu.client.delete(f"files/{f['id']}")).json()
    assert d == {"_shape": "openrouter", "id": f["id"], "type": "file_deleted"}


# -- list paging -------------------------------------------------------------------------------


async def _make_files(emu: InProcess, n: int, **params: str) -> list[str]:
    return [(await emu.output(f"f{i:02d}.txt", b"x", **params))["id"] for i in range(n)]


async def test_paging_with_cursor(emu: InProcess) -> None:
    ids = await _make_files(emu, 7)
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await emu.client.get("files", params=params)).json()
        pages += 1
        seen += [f["id"] for f in page["data"]]
        assert page["first_id"] == page["data"][0]["id"]
        assert page["last_id"] == page["data"][-1]["id"]
        cursor = page["cursor"]
        assert page["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == ids and pages == 3


async def test_cursor_wins_over_after_as_the_sdk_sends_both(emu: InProcess) -> None:
    ids = await _make_files(emu, 5)
    first = (await emu.client.get("files", params={"limit": 2, "after": ids[0]})).json()
    assert [f["id"] for f in first["data"]] == ids[1:3]
    second = (await emu.client.get("files", params={"limit": 2, "after": ids[0],
                                                     "cursor": first["cursor"]})).json()
    assert [f["id"] for f in second["data"]] == ids[3:5]
    assert second["cursor"] is None and second["has_more"] is False


@pytest.mark.parametrize(("provider", "param"), [("openai", "after"),
                                                  ("anthropic", "after_id"),
                                                  (None, "after_id"), (None, "after")])
async def test_paging_with_after_ids(emu: InProcess, provider: str | None, param: str) -> None:
    base = {"provider": provider} if provider else {}
    ids = await _make_files(emu, 7, **base)
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {**base, "limit": 3}
        if after:
            params[param] = after
        page = (await emu.client.get("files", params=params)).json()
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids


async def test_after_a_deleted_file_still_pages_on(emu: InProcess) -> None:
    ids = await _make_files(emu, 4)
    await emu.client.delete(f"files/{ids[1]}")
    page = (await emu.client.get("files", params={"after_id": ids[1]})).json()
    assert [f["id"] for f in page["data"]] == ids[2:]


async def test_cursor_survives_deletions_between_pages(emu: InProcess) -> None:
    ids = await _make_files(emu, 6)
    page = (await emu.client.get("files", params={"limit": 2})).json()
    await emu.client.delete(f"files/{ids[1]}")
    await emu.client.delete(f"files/{ids[2]}")
    rest = (await emu.client.get("files", params={"cursor": page["cursor"]})).json()
    assert [f["id"] for f in rest["data"]] == ids[3:]


async def test_exact_multiple_of_the_limit_ends_with_has_more_false(emu: InProcess) -> None:
    await _make_files(emu, 4)
    page = (await emu.client.get("files", params={"limit": 4})).json()
    assert len(page["data"]) == 4 and page["has_more"] is False and page["cursor"] is None


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5"])
async def test_limit_outside_1_to_1000_is_400(emu: InProcess, limit: str) -> None:
    assert_error(await emu.client.get("files", params={"limit": limit}), 400, "limit")


async def test_limit_bounds_and_default(emu: InProcess) -> None:
    await _make_files(emu, 3)
    assert len((await emu.client.get("files", params={"limit": 1})).json()["data"]) == 1
    assert len((await emu.client.get("files", params={"limit": 1000})).json()["data"]) == 3


async def test_default_limit_is_100(emu: InProcess) -> None:
    for i in range(101):
        emu.state.store.add_bytes(Scope(), b"x", filename=f"{i}", mime_type="text/plain",
                                  downloadable=True)
    page = (await emu.client.get("files")).json()
    assert len(page["data"]) == 100 and page["has_more"] is True


async def test_before_id_is_400(emu: InProcess) -> None:
    ids = await _make_files(emu, 2)
    assert_error(await emu.client.get("files", params={"before_id": ids[1]}), 400, "before_id")


async def test_order(emu: InProcess) -> None:
    ids = await _make_files(emu, 3, provider="anthropic")
    await _make_files(emu, 1)
    assert (await emu.client.get("files", params={"order": "asc"})).status_code == 200
    assert_error(await emu.client.get("files", params={"order": "desc"}), 400, "desc")
    assert_error(await emu.client.get("files", params={"order": "up"}), 400)
    p = {"provider": "anthropic", "order": "desc"}
    page = (await emu.client.get("files", params={**p, "limit": 2})).json()
    assert [f["id"] for f in page["data"]] == [ids[2], ids[1]]
    page = (await emu.client.get("files", params={**p, "after_id": page["last_id"]})).json()
    assert [f["id"] for f in page["data"]] == [ids[0]]


async def test_bad_cursor_and_unknown_after_are_400(emu: InProcess) -> None:
    assert_error(await emu.client.get("files", params={"cursor": "%%%"}), 400, "cursor")
    assert_error(await emu.client.get("files", params={"cursor": "aGVsbG8"}), 400, "cursor")
    assert_error(await emu.client.get("files", params={"after": "or_file_nope"}), 400)
    assert_error(await emu.client.get("files", params={"after_id": "or_file_nope"}), 400)


def test_cursor_is_opaque_base64_of_the_sequence() -> None:
    from orfs.emulator.app import encode_cursor
    assert decode_cursor(encode_cursor(42)) == 42
    assert "42" not in encode_cursor(42)


# -- retrieve, delete, download ---------------------------------------------------------------


async def test_unknown_ids_are_404(emu: InProcess) -> None:
    for r in (await emu.client.get("files/or_file_000000000000000000000000"),
              await emu.client.delete("files/or_file_000000000000000000000000"),
              await emu.client.get("files/or_file_000000000000000000000000/content"),
              await emu.client.get("files/..%2F..%2Fetc%2Fpasswd/content")):
        assert_error(r, 404, "not found")


async def test_delete_is_irreversible(emu: InProcess) -> None:
    f = await emu.output("a.csv", b"a,b\n1,2\n")
    assert (await emu.client.delete(f"files/{f['id']}")).status_code == 200
    assert_error(await emu.client.get(f"files/{f['id']}"), 404)
    assert_error(await emu.client.get(f"files/{f['id']}/content"), 404)
    assert_error(await emu.client.delete(f"files/{f['id']}"), 404)
    assert not (emu.config.data_dir / "blobs" / f["id"]).exists()


async def test_uploaded_files_are_not_downloadable(emu: InProcess) -> None:
    f = await emu.upload_ok("a.txt", b"hello\n")
    assert_error(await emu.client.get(f"files/{f['id']}/content"), 400, "downloadable")


async def test_download_streams_the_bytes(emu: InProcess) -> None:
    data = bytes(range(256)) * 9000  # ~2.2 MiB, several chunks
    f = await emu.output("bin/data.bin", data)
    assert f["downloadable"] is True and f["size_bytes"] == len(data)
    async with emu.client.stream("GET", f"files/{f['id']}/content",
                                 headers={"Accept": "application/octet-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-length"] == str(len(data))
        chunks = [c async for c in r.aiter_raw()]
    # (ASGITransport hands the body over whole; test_server.py sees it streamed.)
    assert b"".join(chunks) == data


@pytest.mark.parametrize(("header", "status", "expect"), [
    ("bytes=10-", 206, (10, 99)),
    ("bytes=0-9", 206, (0, 9)),
    ("bytes=95-200", 206, (95, 99)),
    ("bytes=-5", 206, (95, 99)),
    ("bytes=0-0", 206, (0, 0)),
    ("bytes=0-1,5-6", 200, (0, 99)),  # multiple ranges: the whole file
    ("items=0-1", 200, (0, 99)),
])
async def test_download_range(emu: InProcess, header: str, status: int,
                              expect: tuple[int, int]) -> None:
    data = bytes(range(100))
    f = await emu.output("r.bin", data)
    r = await emu.client.get(f"files/{f['id']}/content", headers={"Range": header})
    assert r.status_code == status
    first, last = expect
    assert r.content == data[first:last + 1]
    assert r.headers["content-length"] == str(last - first + 1)
    if status == 206:
        assert r.headers["content-range"] == f"bytes {first}-{last}/100"


async def test_stats_count_the_content_bytes_sent(emu: InProcess) -> None:
    data = bytes(range(256)) * 9000  # ~2.2 MiB, several chunks
    f = await emu.output("b.bin", data)
    up = await emu.upload_ok("u.txt", b"hello\n")
    stats = (await emu.client.get("_emulator/stats")).json()
    assert (stats["bytes_sent"], stats["ranged_requests"]) == (0, 0)  # hooks, uploads: none
    assert (await emu.client.get(f"files/{f['id']}/content")).content == data
    await emu.client.get(f"files/{up['id']}/content")  # 400: no content sent
    await emu.client.get(f"files/{f['id']}")  # metadata is not content
    stats = (await emu.client.get("_emulator/stats")).json()
    assert (stats["bytes_sent"], stats["ranged_requests"]) == (len(data), 0)
    r = await emu.client.get(f"files/{f['id']}/content", headers={"Range": "bytes=-65536"})
    assert r.status_code == 206 and r.content == data[-65536:]
    await emu.client.get(f"files/{f['id']}/content", headers={"Range": "bytes=0-9"})
    await emu.client.get(f"files/{f['id']}/content",  # 416: nothing sent, not ranged
                         headers={"Range": f"bytes={len(data)}-"})
    stats = (await emu.client.get("_emulator/stats")).json()
    assert stats["bytes_sent"] == len(data) + 65536 + 10
    assert stats["ranged_requests"] == 2
    assert stats["requests"]["download"] == 5
    reset = (await emu.client.post("_emulator/reset-stats")).json()
    assert (reset["bytes_sent"], reset["ranged_requests"]) == (0, 0)
    await emu.client.get(f"files/{f['id']}/content", headers={"Range": "bytes=100-199"})
    stats = (await emu.client.get("_emulator/stats")).json()
    assert (stats["bytes_sent"], stats["ranged_requests"]) == (100, 1)


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=0-9", "bytes=-5", "bytes=0-1,5-6"])
async def test_no_ranges_answers_the_whole_file(make_emu: MakeEmu, header: str) -> None:
    emu = await make_emu(ranges=False)
    data = bytes(range(100))
    f = await emu.output("r.bin", data)
    r = await emu.client.get(f"files/{f['id']}/content", headers={"Range": header})
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == "100"
    assert "accept-ranges" not in r.headers and "content-range" not in r.headers
    r = await emu.client.get(f"files/{f['id']}/content", headers={"Range": "bytes=100-"})
    assert r.status_code == 200 and r.content == data  # no 416 either
    stats = (await emu.client.get("_emulator/stats")).json()
    assert (stats["bytes_sent"], stats["ranged_requests"]) == (200, 0)


async def test_ranges_are_advertised_by_default(emu: InProcess) -> None:
    f = await emu.output("r.bin", bytes(100))
    r = await emu.client.get(f"files/{f['id']}/content")
    assert r.status_code == 200 and r.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=50-10", "bytes=x-"])
async def test_unsatisfiable_range_is_416(emu: InProcess, header: str) -> None:
    f = await emu.output("r.bin", bytes(100))
    r = await emu.client.get(f"files/{f['id']}/content", headers={"Range": header})
    assert_error(r, 416)
    assert r.headers["content-range"] == "bytes */100"


# -- hooks -------------------------------------------------------------------------------------


async def test_outputs_hook_accepts_anything_and_records_a_plausible_type(emu: InProcess) -> None:
    png = await emu.output("charts/a.png", demo_files()[1].data, "application/octet-stream")
    assert png["mime_type"] == "image/png" and png["downloadable"] is True
    assert png["filename"] == "charts/a.png"
    blob = await emu.output("blob.bin", bytes(range(256)), "application/x-custom")
    assert blob["mime_type"] == "application/x-custom"
    raw = await emu.output("raw", bytes(range(256)))
    assert raw["mime_type"] == "application/octet-stream"
    empty = await emu.output("empty.txt", b"")
    assert empty["size_bytes"] == 0
    r = await emu.client.get(f"files/{empty['id']}/content")
    assert r.status_code == 200 and r.content == b""


async def test_stats_count_each_operation(emu: InProcess) -> None:
    f = await emu.upload_ok("a.txt", b"a\n")
    o = await emu.output("o.txt", b"o\n")  # hooks are not counted
    await emu.client.get("files")
    await emu.client.get("files", params={"limit": 0})  # a 400 still counts
    await emu.client.get(f"files/{f['id']}")
    await emu.client.get(f"files/{o['id']}/content")
    await emu.client.get(f"files/{f['id']}/content")  # 400: not downloadable
    await emu.client.delete(f"files/{f['id']}")
    await emu.upload("empty", b"")
    assert await emu.stats() == {"list": 2, "retrieve": 1, "upload": 2, "delete": 1,
                                 "download": 2}
    r = await emu.client.post("_emulator/reset-stats")
    assert r.json() == {"requests": dict.fromkeys(
        ("list", "retrieve", "upload", "delete", "download"), 0),
        "bytes_sent": 0, "ranged_requests": 0}
    await emu.client.get("files")
    assert (await emu.stats())["list"] == 1


async def test_unauthenticated_requests_are_not_counted(emu: InProcess) -> None:
    await emu.client.get("files", headers={"Authorization": "Bearer nope"})
    assert (await emu.stats())["list"] == 0


# -- persistence ----------------------------------------------------------------------------------


async def test_restart_keeps_the_workspace(make_emu: MakeEmu, tmp_path: Path) -> None:
    first = await make_emu(data_dir=tmp_path / "d")
    ws = str(uuid.uuid4())
    up = await first.upload_ok("a/b.txt", b"hello\n", workspace_id=ws)
    await first.output("first.txt", b"1")
    out = await first.output("o.bin", b"\x00\x01\x02")
    listing = (await first.client.get("files", params={"limit": 1})).json()
    first.state.store.close()

    second = await make_emu(data_dir=tmp_path / "d")
    assert (await second.client.get(f"files/{up['id']}", params={"workspace_id": ws})).json() == up
    assert (await second.client.get(f"files/{out['id']}/content")).content == b"\x00\x01\x02"
    # A cursor from before the restart still works, and new files come after the old ones.
    new = await second.output("new.txt", b"n")
    rest = (await second.client.get("files", params={"cursor": listing["cursor"]})).json()
    assert [f["id"] for f in rest["data"]] == [out["id"], new["id"]]
    assert new["created_at"] > out["created_at"]


async def test_seed_demo_is_idempotent(make_emu: MakeEmu, tmp_path: Path) -> None:
    first = await make_emu(data_dir=tmp_path / "d", seed_demo=True)
    page = (await first.client.get("files")).json()
    expected = demo_files()
    assert [f["filename"] for f in page["data"]] == [d.filename for d in expected]
    for f, d in zip(page["data"], expected, strict=True):
        assert f["mime_type"] == d.mime_type and f["downloadable"] == d.downloadable
        assert f["size_bytes"] == len(d.data)
        if d.downloadable:
            assert (await first.client.get(f"files/{f['id']}/content")).content == d.data
    first.state.store.close()
    second = await make_emu(data_dir=tmp_path / "d", seed_demo=True)
    assert (await second.client.get("files")).json()["data"] == page["data"]


def test_demo_files_sniff_as_they_claim(tmp_path: Path) -> None:
    from orfs.contenttypes import sniff_file
    for d in demo_files():
        p = tmp_path / "x"
        p.write_bytes(d.data)
        assert sniff_file(p) == d.mime_type, d.filename
