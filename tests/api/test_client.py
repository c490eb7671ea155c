"""FilesClient over httpx.MockTransport: requests, pagination, errors, retries, stats."""

from __future__ import annotations

import logging

import httpx
import pytest

from orfs.api import (
    BadRequest,
    FilesClient,
    Forbidden,
    HttpStatusError,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
    UploadBody,
    is_retryable,
    upload_may_have_applied,
)
from orfs.api.credentials import ApiKey

from .helpers import BASE, KEY, FakeClock, error_response, json_response, make_client, or_file


async def test_requests_carry_auth_attribution_workspace_and_provider() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, or_file())

    async with make_client(handler, workspace="ws-1", provider="anthropic") as c:
        await c.retrieve("file_1")
    (r,) = seen
    assert r.url.path == "/api/v1/files/file_1"  # trailing slash of the base URL dropped
    assert r.url.params["workspace_id"] == "ws-1" and r.url.params["provider"] == "anthropic"
    assert r.headers["authorization"] == f"Bearer {KEY}"
    assert r.headers["x-openrouter-title"] == "orfs"


async def test_api_key_wrapper_is_accepted_and_file_ids_are_quoted() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        assert request.headers["authorization"] == f"Bearer {KEY}"
        return json_response(200, {"id": "a/b", "type": "file_deleted"})

    async with FilesClient(BASE, ApiKey(KEY), transport=httpx.MockTransport(handler)) as c:
        await c.delete("a/../b")
    assert seen == ["/api/v1/files/a%2F..%2Fb"]


@pytest.mark.parametrize("kw", [{"provider": "google"}, {"base_url": "ftp://x"},
                                {"api_key": "has space"}, {"api_key": ""}])
def test_bad_construction_is_refused_without_echoing_the_key(kw: dict[str, str]) -> None:
    with pytest.raises(ValueError) as info:
        FilesClient(kw.get("base_url", BASE), kw.get("api_key", KEY),
                    provider=kw.get("provider"))
    assert "has space" not in str(info.value) and KEY not in str(info.value)


async def test_list_pages_follow_openrouter_cursor() -> None:
    pages = {None: ("c1", ["f1", "f2"]), "c1": ("c2", ["f3", "f4"]), "c2": (None, ["f5"])}
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        nxt, ids = pages[params.get("cursor")]
        return json_response(200, {"_shape": "openrouter", "cursor": nxt,
                                   "data": [or_file(i) for i in ids], "first_id": ids[0],
                                   "has_more": nxt is not None, "last_id": ids[-1]})

    async with make_client(handler, workspace="w") as c:
        got = [[f.id for f in page] async for page in c.list_pages(limit=2)]
        assert got == [["f1", "f2"], ["f3", "f4"], ["f5"]]
        assert [f.id async for f in c.list_files(limit=2)] == ["f1", "f2", "f3", "f4", "f5"]
    assert all(p["limit"] == "2" and p["workspace_id"] == "w" for p in seen)
    assert c.stats()["list"] == 6


@pytest.mark.parametrize(("provider", "param"), [("openai", "after"), ("anthropic", "after_id")])
async def test_list_pages_follow_last_id(provider: str, param: str) -> None:
    ids = [f"f{i}" for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get(param)
        start = 0 if after is None else ids.index(after) + 1
        chunk = ids[start:start + 2]
        body = {"data": [or_file(i) for i in chunk], "first_id": chunk[0],
                "has_more": start + 2 < len(ids), "last_id": chunk[-1]}
        if provider == "openai":
            body["object"] = "list"
        else:
            body["_shape"] = "anthropic"
        return json_response(200, body)

    async with make_client(handler, provider=provider) as c:
        assert [f.id async for f in c.list_files(limit=2)] == ids


async def test_list_pagination_that_repeats_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response(200, {"cursor": "same", "data": [or_file()], "has_more": True})

    async with make_client(handler) as c:
        with pytest.raises(ProtocolError):
            async for _ in c.list_pages():
                pass


async def test_list_all_hands_every_page_over_in_order() -> None:
    pages = {None: ("c1", ["f1", "f2"]), "c1": ("c2", ["f3", "f4"]), "c2": (None, ["f5"])}

    def handler(request: httpx.Request) -> httpx.Response:
        nxt, ids = pages[request.url.params.get("cursor")]
        return json_response(200, {"cursor": nxt, "data": [or_file(i) for i in ids],
                                   "has_more": nxt is not None})

    got: list[list[str]] = []
    async with make_client(handler) as c:
        await c.list_all(lambda page: got.append([f.id for f in page]), limit=2)
    assert got == [["f1", "f2"], ["f3", "f4"], ["f5"]]
    assert c.stats()["list"] == 3


@pytest.mark.parametrize("bad", ["page", "record", "consumer"])
async def test_list_all_raises_the_error_itself_not_a_group(bad: str) -> None:
    # A failure in the page fetcher, in converting a record, or in the consumer comes
    # out as that exception, as from list_pages, never wrapped in an ExceptionGroup.
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") is None:
            return json_response(200, {"cursor": "c1", "data": [or_file("f1")],
                                       "has_more": True})
        if bad == "page":
            return error_response(404, "gone")
        record = {"id": "f2"} if bad == "record" else or_file("f2")
        return json_response(200, {"cursor": None, "data": [record], "has_more": False})

    def add(page: list[object]) -> None:
        if bad == "consumer" and len(seen) == 1:
            raise KeyError("consumer")
        seen.append(page)

    seen: list[object] = []
    expected: type[Exception] = {"page": NotFound, "record": ProtocolError,
                                 "consumer": KeyError}[bad]
    async with make_client(handler) as c:
        with pytest.raises(expected):
            await c.list_all(add)
    assert len(seen) == 1


async def test_malformed_json_is_a_protocol_error() -> None:
    async with make_client(lambda r: httpx.Response(200, content=b"<html>")) as c:
        with pytest.raises(ProtocolError):
            await c.retrieve("x")
        with pytest.raises(ProtocolError):
            await c.check()


@pytest.mark.parametrize(("status", "cls"), [
    (400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound),
    (413, PayloadTooLarge), (429, RateLimited), (500, ServerError), (502, ServerError),
    (503, ServerError), (504, ServerError), (409, HttpStatusError),
])
async def test_each_status_is_classified_with_the_server_message(
        status: int, cls: type[HttpStatusError]) -> None:
    clock = FakeClock()
    async with make_client(lambda r: error_response(status, f"msg {status}"), clock) as c:
        with pytest.raises(cls) as info:
            await c.retrieve("x")
    exc = info.value
    assert type(exc) is cls and exc.status == status and exc.message == f"msg {status}"
    assert str(exc) == f"HTTP {status}: msg {status}"


async def test_error_without_json_body_gets_a_reason() -> None:
    async with make_client(lambda r: httpx.Response(404, content=b"gone")) as c:
        with pytest.raises(NotFound, match="Not Found"):
            await c.retrieve("x")


async def test_check_raises_unauthorized_at_once() -> None:
    clock = FakeClock()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        assert request.url.params["limit"] == "1"
        return error_response(401, "No auth credentials found")

    async with make_client(handler, clock) as c:
        with pytest.raises(Unauthorized, match="No auth credentials"):
            await c.check()
    assert calls == 1 and clock.sleeps == []


def flaky(statuses: list[int | type[Exception]], final: httpx.Response | None = None):  # type: ignore[no-untyped-def]
    """A handler that fails with each of `statuses` in turn, then answers `final`."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= len(statuses):
            s = statuses[len(calls) - 1]
            if isinstance(s, int):
                return error_response(s, "try again")
            raise s("boom", request=request)  # type: ignore[call-arg]
        return final if final is not None else json_response(200, or_file())

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


async def test_reads_retry_with_exponential_full_jitter_backoff() -> None:
    clock = FakeClock()
    h = flaky([500, 502, 503, 504, 429, httpx.ConnectError, httpx.ReadTimeout,
               httpx.RemoteProtocolError])
    from .helpers import policy
    async with make_client(h, clock, retry=policy(clock, total=1000, max_attempts=20)) as c:
        assert (await c.retrieve("x")).id == "file_1"
        stats = c.stats()
    # random() == 1.0 in tests: each sleep is its ceiling, 0.5 * 2**n capped at 8.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert stats["retrieve"] == 9 and stats["retries"] == 8 and stats["errors"] == 8


async def test_jitter_is_full() -> None:
    from orfs.api import RetryPolicy
    p = RetryPolicy(random=lambda: 0.25)
    assert p.backoff(0) == 0.125 and p.backoff(10) == 2.0


async def test_retry_gives_up_within_the_total_time() -> None:
    clock = FakeClock()
    h = flaky([503] * 100)
    async with make_client(h, clock) as c:
        with pytest.raises(ServerError):
            await c.retrieve("x")
    assert sum(clock.sleeps) <= 20.0
    # 0.5 + 1 + 2 + 4 + 8 = 15.5; another 8 would pass 20.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


async def test_retry_gives_up_after_max_attempts() -> None:
    from .helpers import policy
    clock = FakeClock()
    h = flaky([500] * 100)
    async with make_client(h, clock, retry=policy(clock, max_attempts=3, total=1000)) as c:
        with pytest.raises(ServerError):
            await c.retrieve("x")
    assert len(h.calls) == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(("headers", "minimum"), [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"Retry-After": "9", "retry-after-ms": "2500"}, 2.5),  # ms preferred
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.5),  # in the past: backoff wins
    ({"Retry-After": "soon"}, 0.5),
])
async def test_retry_after_headers_set_the_minimum_sleep(headers: dict[str, str],
                                                         minimum: float) -> None:
    clock = FakeClock()
    final = json_response(200, or_file())
    answers = [error_response(429, "slow down", headers), final]

    async with make_client(lambda r: answers.pop(0), clock) as c:
        await c.retrieve("x")
    assert clock.sleeps == [minimum]


async def test_retry_after_beyond_the_budget_fails_at_once() -> None:
    clock = FakeClock()
    async with make_client(lambda r: error_response(429, "later", {"Retry-After": "60"}),
                           clock) as c:
        with pytest.raises(RateLimited) as info:
            await c.retrieve("x")
    assert info.value.retry_after == 60.0 and clock.sleeps == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
async def test_client_errors_are_never_retried(status: int) -> None:
    clock = FakeClock()
    h = flaky([status])
    async with make_client(h, clock) as c:
        with pytest.raises(HttpStatusError):
            await c.retrieve("x")
    assert len(h.calls) == 1 and clock.sleeps == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("failure", [429, 503, httpx.ConnectError, httpx.ConnectTimeout,
                                     httpx.PoolTimeout])
async def test_uploads_retry_where_they_cannot_have_been_applied(
        failure: int | type[Exception]) -> None:
    clock = FakeClock()
    h = flaky([failure])
    async with make_client(h, clock) as c:
        f = await c.upload("a.txt", UploadBody.from_bytes(b"abc"))
    assert f.id == "file_1" and len(h.calls) == 2  # type: ignore[attr-defined]
    assert c.stats()["upload"] == 2 and c.stats()["retries"] == 1


@pytest.mark.parametrize("failure", [500, 502, 504, httpx.ReadTimeout, httpx.ReadError,
                                     httpx.WriteError, httpx.RemoteProtocolError])
async def test_uploads_are_not_repeated_when_they_may_have_been_applied(
        failure: int | type[Exception]) -> None:
    clock = FakeClock()
    h = flaky([failure])
    async with make_client(h, clock) as c:
        with pytest.raises((ServerError, Unreachable)) as info:
            await c.upload("a.txt", UploadBody.from_bytes(b"abc"))
    assert len(h.calls) == 1 and clock.sleeps == []  # type: ignore[attr-defined]
    assert upload_may_have_applied(info.value)
    assert not is_retryable(info.value, idempotent=False)
    assert is_retryable(info.value, idempotent=True)


def test_upload_may_have_applied_is_false_for_clean_refusals() -> None:
    for exc in (BadRequest("x"), RateLimited("x"), ServerError("x", status=503),
                Unreachable("x", request_sent=False), PayloadTooLarge("x")):
        assert not upload_may_have_applied(exc)
    assert upload_may_have_applied(ProtocolError("x"))


async def test_transport_errors_become_unreachable_after_retries() -> None:
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    async with make_client(handler, clock) as c:
        with pytest.raises(Unreachable, match="Connection refused") as info:
            await c.list_files().__anext__()
    assert info.value.request_sent is False
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert sum(clock.sleeps) <= 20.0 and len(clock.sleeps) >= 3


async def test_delete_not_found_propagates() -> None:
    async with make_client(lambda r: error_response(404, "File not found")) as c:
        with pytest.raises(NotFound, match="File not found"):
            await c.delete("gone")


async def test_retries_are_logged_with_rising_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="orfs.api")
    clock = FakeClock()
    h = flaky([503] * 5)
    async with make_client(h, clock) as c:
        await c.retrieve("x")
    retry_lines = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert [r.levelno for r in retry_lines] == [logging.DEBUG] * 2 + [logging.INFO] * 2 + [
        logging.WARNING]
    assert "GET /api/v1/files/x" in retry_lines[0].getMessage()
    assert "503" in retry_lines[0].getMessage()
    request_lines = [r.getMessage() for r in caplog.records if "bytes," in r.getMessage()]
    assert len(request_lines) == 6 and request_lines[-1].startswith("GET /api/v1/files/x -> 200")
