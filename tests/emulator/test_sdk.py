"""The official ``openrouter`` SDK, unchanged, against a real emulator process."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterator

import pytest
from openrouter import OpenRouter, components, errors

from tests.conftest import EmulatorProcess, new_workspace

Factory = Callable[..., EmulatorProcess]


@pytest.fixture
def sdk(emulator: EmulatorProcess) -> Iterator[OpenRouter]:
    with OpenRouter(api_key=emulator.api_key, server_url=emulator.url) as client:
        yield client


def test_list_pages_through_every_file(emulator: EmulatorProcess, sdk: OpenRouter) -> None:
    ids = [emulator.create_output(f"out/{i}.txt", b"x\n")["id"] for i in range(7)]
    page = sdk.files.list(limit=3)
    seen: list[str] = []
    pages = 0
    while page is not None:
        assert isinstance(page.result, components.OpenRouterFileList)
        seen += [f.id for f in page.result.data]
        pages += 1
        nxt = page.next()
        assert not isinstance(nxt, Awaitable)  # the synchronous client pages synchronously
        page = nxt
    assert seen == ids and pages == 3


def test_empty_list(sdk: OpenRouter) -> None:
    page = sdk.files.list()
    assert page is not None
    assert isinstance(page.result, components.OpenRouterFileList)
    assert page.result.data == [] and page.result.cursor is None
    assert page.result.first_id is None and page.next() is None


def test_upload_retrieve_download_delete(emulator: EmulatorProcess, sdk: OpenRouter) -> None:
    up = sdk.files.upload(file={"file_name": "reports/q3.csv",
                                "content": io.BytesIO(b"a,b\n1,2\n3,4\n"),
                                "content_type": "text/csv"})
    assert isinstance(up, components.OpenRouterFile)
    assert up.filename == "reports/q3.csv" and up.mime_type == "text/csv"
    assert up.size_bytes == 12 and up.downloadable is False

    got = sdk.files.retrieve(file_id=up.id)
    assert isinstance(got, components.OpenRouterFile) and got == up

    out = emulator.create_output("chart.csv", b"x,y\n1,2\n")
    res = sdk.files.download(file_id=out["id"])
    try:
        assert res.status_code == 200
        assert b"".join(res.iter_bytes()) == b"x,y\n1,2\n"
    finally:
        res.close()

    deleted = sdk.files.delete(file_id=up.id)
    assert isinstance(deleted, components.OpenRouterFileDeleted) and deleted.id == up.id
    with pytest.raises(errors.NotFoundResponseError):
        sdk.files.retrieve(file_id=up.id)


def test_workspace_and_provider_shapes(emulator: EmulatorProcess, sdk: OpenRouter) -> None:
    ws = new_workspace()
    oa = sdk.files.upload(file={"file_name": "a.json", "content": b'{"a": 1}'},
                          workspace_id=ws, provider="openai")
    assert isinstance(oa, components.OpenAIFile) and oa.bytes_ == 8
    an = sdk.files.upload(file={"file_name": "a.md", "content": b"# hi\n"},
                          workspace_id=ws, provider="anthropic")
    assert isinstance(an, components.AnthropicFile) and an.mime_type == "text/markdown"
    page = sdk.files.list(workspace_id=ws, provider="openai")
    assert page is not None and isinstance(page.result, components.OpenAIFileList)
    assert [f.id for f in page.result.data] == [oa.id]
    page = sdk.files.list(workspace_id=ws, provider="anthropic")
    assert page is not None and isinstance(page.result, components.AnthropicFileList)
    deleted = sdk.files.delete(file_id=an.id, workspace_id=ws, provider="anthropic")
    assert isinstance(deleted, components.AnthropicFileDeleted)
    deleted_oa = sdk.files.delete(file_id=oa.id, workspace_id=ws, provider="openai")
    assert isinstance(deleted_oa, components.OpenAIFileDeleted)
    assert sdk.files.list().result.data == []  # type: ignore[union-attr]


def test_errors_are_the_sdks_typed_exceptions(emulator: EmulatorProcess,
                                              sdk: OpenRouter) -> None:
    with OpenRouter(api_key="wrong", server_url=emulator.url) as bad:
        with pytest.raises(errors.UnauthorizedResponseError) as e401:
            bad.files.list()
    assert e401.value.data.error.code == 401
    with pytest.raises(errors.NotFoundResponseError):
        sdk.files.retrieve(file_id="or_file_000000000000000000000000")
    with pytest.raises(errors.NotFoundResponseError):
        sdk.files.delete(file_id="or_file_000000000000000000000000")
    with pytest.raises(errors.BadRequestResponseError, match="empty"):
        sdk.files.upload(file={"file_name": "e.txt", "content": b""})
    with pytest.raises(errors.BadRequestResponseError, match="unsupported file type"):
        sdk.files.upload(file={"file_name": "x.bin", "content": bytes(range(256))})
    with pytest.raises(errors.BadRequestResponseError, match="limit"):
        sdk.files.list(limit=1001)
    up = sdk.files.upload(file={"file_name": "u.txt", "content": b"u\n"})
    assert isinstance(up, components.OpenRouterFile)
    with pytest.raises(errors.BadRequestResponseError, match="downloadable"):
        sdk.files.download(file_id=up.id)
    with pytest.raises(errors.NotFoundResponseError):
        sdk.files.download(file_id="or_file_000000000000000000000000")


def test_quota_throttle_and_failure_statuses(emulator_factory: Factory) -> None:
    full = emulator_factory("--quota", "10")
    with OpenRouter(api_key=full.api_key, server_url=full.url) as sdk:
        with pytest.raises(errors.ForbiddenResponseError, match="quota"):
            sdk.files.upload(file={"file_name": "a.txt", "content": b"more than ten bytes\n"})
    throttled = emulator_factory("--throttle-rate", "1")
    with OpenRouter(api_key=throttled.api_key, server_url=throttled.url) as sdk:
        with pytest.raises(errors.TooManyRequestsResponseError):
            sdk.files.list(retries=None)
    failing = emulator_factory("--fail-rate", "1")
    with OpenRouter(api_key=failing.api_key, server_url=failing.url) as sdk:
        with pytest.raises(errors.InternalServerResponseError):
            sdk.files.list(retries=None)
