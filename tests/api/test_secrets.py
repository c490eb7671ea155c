"""The API key never shows: not in errors (str, repr, traceback), logs, or reprs."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from orfs.api import ApiError, ApiKey, ApiKeyError, UploadBody, read_api_key
from orfs.api.client import FilesClient

from .helpers import KEY, FakeClock, error_response, json_response, make_client, or_file


def leaks(exc: BaseException) -> bool:
    text = "".join(traceback.format_exception(exc)) + str(exc) + repr(exc)
    # Also everything reachable through the chain (cause/context).
    e: BaseException | None = exc
    while e is not None:
        text += str(e) + repr(e)
        e = e.__cause__ or e.__context__
    return KEY in text


def failing(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if kind == "connect":
            raise httpx.ConnectError(f"refused {request.headers}", request=request)
        if kind == "read":
            raise httpx.ReadTimeout("timed out", request=request)
        if kind == "json":
            return httpx.Response(200, content=b"{")
        if kind == "shape":
            return json_response(200, {"id": 3})
        return error_response(int(kind), "server says no")
    return handler


KINDS = ["connect", "read", "json", "shape", "400", "401", "403", "404", "413", "429",
         "500", "502", "503", "504"]


@pytest.mark.parametrize("kind", KINDS)
async def test_no_error_or_log_line_contains_the_key(kind: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    ops: list[Callable[[FilesClient], Awaitable[object]]] = [
        lambda c: c.retrieve("f"), lambda c: c.check(),
        lambda c: c.upload("a", UploadBody.from_bytes(b"abc")),
    ]
    body_ok = kind in ("json", "shape")  # fine for a download; a delete is lenient
    if not body_ok:
        ops.append(lambda c: c.delete("f"))
    async with make_client(failing(kind), FakeClock()) as c:
        assert KEY not in repr(c)
        for op in ops:
            with pytest.raises(ApiError) as info:
                await op(c)
            assert not leaks(info.value), (kind, str(info.value))
        if not body_ok:
            with pytest.raises(ApiError) as info:
                async with c.download("f") as d:
                    async for _ in d.iter_bytes():
                        pass
            assert not leaks(info.value)
    assert caplog.records, "expected log lines to check"
    assert KEY not in caplog.text
    assert "Bearer" not in caplog.text


def test_api_key_wrapper_hides_its_value() -> None:
    k = ApiKey(KEY)
    texts = [str(k), repr(k), f"{k}", f"{k!r}", str([k]),
             "%s" % (k,)]  # noqa: UP031
    for text in texts:
        assert KEY not in text
    assert k.reveal() == KEY and k == ApiKey(KEY)


def test_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", f"  {KEY}\n")
    assert read_api_key(None).reveal() == KEY
    monkeypatch.delenv("OPENROUTER_API_KEY")
    with pytest.raises(ApiKeyError, match="OPENROUTER_API_KEY"):
        read_api_key(None)


def test_key_file_takes_precedence_and_is_stripped(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "other")
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    f.chmod(0o600)
    assert read_api_key(f).reveal() == KEY


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "key"
    f.write_text(KEY)
    f.chmod(mode)
    with pytest.raises(ApiKeyError, match=f"chmod 600 {f}") as info:
        read_api_key(f)
    assert KEY not in str(info.value)


def test_missing_or_empty_key_file(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="cannot read"):
        read_api_key(tmp_path / "nope")
    f = tmp_path / "empty"
    f.write_text("  \n")
    os.chmod(f, 0o600)
    with pytest.raises(ApiKeyError, match="empty"):
        read_api_key(f)


async def test_request_log_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="orfs.api.client")
    async with make_client(lambda r: json_response(200, or_file()), workspace="w") as c:
        await c.retrieve("f")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "orfs.api.client"]
    assert line.startswith("GET /api/v1/files/f?workspace_id=w -> 200, ")
    assert " bytes, " in line and line.endswith(" ms")
