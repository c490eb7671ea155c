from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orfs.api import ProtocolError, RemoteFile
from orfs.api.shapes import check_deleted, file_from_json, page_from_json, parse_json

from .helpers import or_file

WHEN = datetime(2025, 1, 1, tzinfo=UTC)


def test_openrouter_file_shape() -> None:
    f = file_from_json(or_file("or_file_1", "reports/q3.csv", 1024, mime_type="text/csv",
                               downloadable=True))
    assert f == RemoteFile("or_file_1", "reports/q3.csv", 1024, "text/csv", WHEN, True)
    assert f.created_at.tzinfo is not None


def test_anthropic_file_shape() -> None:
    f = file_from_json(or_file(_shape="anthropic", created_at="2025-01-01T01:00:00+01:00"))
    assert f.created_at == WHEN and f.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_openai_file_shape() -> None:
    f = file_from_json({"_shape": "openai", "id": "file-x", "object": "file", "bytes": 7,
                        "created_at": 1735689600, "filename": "n.md",
                        "purpose": "user_data", "status": "processed"})
    assert f == RemoteFile("file-x", "n.md", 7, "", WHEN, False)


def test_shapeless_file_is_read_by_its_fields() -> None:
    d = or_file()
    del d["_shape"], d["mime_type"], d["downloadable"]
    assert file_from_json(d).mime_type == "" and not file_from_json(d).downloadable
    naive = or_file(created_at="2025-01-01T00:00:00")
    assert file_from_json(naive).created_at == WHEN


@pytest.mark.parametrize("change", [
    {"id": None}, {"id": ""}, {"id": 5}, {"filename": None}, {"filename": 3},
    {"size_bytes": "3"}, {"size_bytes": -1}, {"size_bytes": True}, {"size_bytes": None},
    {"created_at": "yesterday"}, {"created_at": None}, {"created_at": [1]},
    {"created_at": 10**20}, {"mime_type": 3}, {"downloadable": "yes"},
])
def test_missing_or_ill_typed_fields_are_protocol_errors(change: dict[str, Any]) -> None:
    d = or_file()
    for k, v in change.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    with pytest.raises(ProtocolError):
        file_from_json(d)


@pytest.mark.parametrize("value", [None, [], "x", 3])
def test_non_object_file_is_protocol_error(value: object) -> None:
    with pytest.raises(ProtocolError):
        file_from_json(value)


def test_malformed_json_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_json(b"{not json")
    with pytest.raises(ProtocolError):
        parse_json(b"\xff\xfe")


def test_openrouter_page_follows_cursor() -> None:
    page = page_from_json({"_shape": "openrouter", "cursor": "c2", "data": [or_file()],
                           "first_id": "file_1", "has_more": True, "last_id": "file_1"})
    assert page.next == ("cursor", "c2") and len(page.files) == 1
    end = page_from_json({"_shape": "openrouter", "cursor": None, "data": [or_file()],
                          "has_more": False})
    assert end.next is None


def test_anthropic_and_openai_pages_follow_last_id() -> None:
    a = page_from_json({"_shape": "anthropic", "data": [or_file("f1"), or_file("f2")],
                        "first_id": "f1", "has_more": True, "last_id": "f2"})
    assert a.next == ("after_id", "f2")
    o = page_from_json({"object": "list", "data": [or_file("f1")], "first_id": "f1",
                        "has_more": True, "last_id": "f1"})
    assert o.next == ("after", "f1")


def test_empty_page_ends_listing() -> None:
    p = page_from_json({"data": [], "cursor": "c", "has_more": True, "first_id": None,
                        "last_id": None})
    assert p.files == [] and p.next is None


@pytest.mark.parametrize("page", [
    {}, {"data": None}, {"data": {}}, {"data": [{"id": 1}]},
    {"data": [or_file()], "cursor": 5, "has_more": True},
    {"data": [or_file()], "has_more": "yes"},
])
def test_bad_pages_are_protocol_errors(page: object) -> None:
    with pytest.raises(ProtocolError):
        page_from_json(page)


def test_deletion_shapes() -> None:
    check_deleted({"_shape": "openrouter", "id": "f", "type": "file_deleted"})
    check_deleted({"id": "f", "object": "file", "deleted": True})
    with pytest.raises(ProtocolError):
        check_deleted({"id": "f", "deleted": False})
    with pytest.raises(ProtocolError):
        check_deleted([])
