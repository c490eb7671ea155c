"""Normalising the API's JSON answers into `RemoteFile` and list pages.

The service negotiates three shapes (``_shape``: ``openrouter``, ``anthropic``,
``openai``; older deployments send none). They differ only in field names and
in how a list page points at the next one, so one tolerant reader serves all:

- size: ``size_bytes`` (openrouter, anthropic) or ``bytes`` (openai);
- created_at: an ISO-8601 string (openrouter, anthropic) or unix seconds (openai),
  always returned as an aware UTC datetime;
- mime_type and downloadable: absent from openai files, read as ``""`` and False;
- next page: ``cursor`` (openrouter), else ``after=<last_id>`` (openai, whose page says
  ``"object": "list"``), else ``after_id=<last_id>`` (anthropic).

Anything missing or of the wrong type raises `ProtocolError`; no KeyError or
TypeError ever escapes from here.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime

from orfs.api.errors import ProtocolError
from orfs.api.models import RemoteFile

__all__ = ["Page", "check_deleted", "error_message", "file_from_json", "files_from_json",
           "page_from_json", "page_records", "parse_json"]


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One list page: its files and the query parameter that asks for the next one."""

    files: list[RemoteFile]
    # (parameter name, value) for the next request, or None on the last page.
    next: tuple[str, str] | None


def parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        # The body itself may be large or binary: name the problem, not the bytes.
        raise ProtocolError(f"malformed JSON in response ({len(body)} bytes): {exc}") from None


def _obj(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _str(obj: dict[str, object], key: str, what: str, *, empty_ok: bool = True) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: field {key!r} missing or not a string")
    if not empty_ok and not value:
        raise ProtocolError(f"{what}: field {key!r} is empty")
    return value


def _int(obj: dict[str, object], key: str, what: str) -> int:
    value = obj.get(key)
    # bool is an int in Python; a JSON true is not a size.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{what}: field {key!r} missing or not a non-negative integer")
    return value


def _timestamp(value: object, what: str) -> datetime:
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:  # no offset given: the API speaks UTC
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ProtocolError(f"{what}: bad 'created_at' {value!r}: {exc}") from None
    raise ProtocolError(f"{what}: field 'created_at' missing or not a timestamp")


def file_from_json(value: object) -> RemoteFile:
    """Any of the three file shapes (or none) → `RemoteFile`."""
    obj = _obj(value, "file")
    fid = _str(obj, "id", "file", empty_ok=False)
    what = f"file {fid!r}"
    filename = _str(obj, "filename", what)
    # openai says "bytes"; the others "size_bytes". Decide by the field present,
    # not by _shape, so shape-less answers work too.
    size = _int(obj, "bytes" if "size_bytes" not in obj and "bytes" in obj else "size_bytes",
                what)
    mime = obj.get("mime_type")
    if mime is None:
        mime = ""
    elif not isinstance(mime, str):
        raise ProtocolError(f"{what}: field 'mime_type' is not a string")
    else:
        mime = sys.intern(mime)  # a few distinct types across many files: share them
    downloadable = obj.get("downloadable", False)
    if downloadable is None:
        downloadable = False
    elif not isinstance(downloadable, bool):
        raise ProtocolError(f"{what}: field 'downloadable' is not a boolean")
    return RemoteFile(id=fid, filename=filename, size=size, mime_type=mime,
                      created_at=_timestamp(obj.get("created_at"), what),
                      downloadable=downloadable)


def page_from_json(value: object) -> Page:
    """A list page of any shape → `Page` (files + how to ask for the next page)."""
    records, after = page_records(value)
    return Page(files_from_json(records), after)


def files_from_json(records: list[object]) -> list[RemoteFile]:
    """The records of a list page (from `page_records`) → `RemoteFile`s."""
    return [file_from_json(item) for item in records]


def page_records(value: object) -> tuple[list[object], tuple[str, str] | None]:
    """A list page of any shape → its raw file records and how to ask for the next page,
    without converting the records: a listing can ask for the next page first."""
    obj = _obj(value, "list page")
    data = obj.get("data")
    if not isinstance(data, list):
        raise ProtocolError("list page: field 'data' missing or not a list")
    has_more = obj.get("has_more")
    if has_more is not None and not isinstance(has_more, bool):
        raise ProtocolError("list page: field 'has_more' is not a boolean")
    if not data or has_more is False:
        return data, None
    if "cursor" in obj:  # openrouter: the cursor is authoritative; null/"" ends the listing
        cursor = obj["cursor"]
        if cursor is None or cursor == "":
            return data, None
        if not isinstance(cursor, str):
            raise ProtocolError("list page: field 'cursor' is not a string")
        return data, ("cursor", cursor)
    if has_more is None:
        # Neither a cursor nor has_more: nothing says there is more.
        return data, None
    last_id = obj.get("last_id")
    if not isinstance(last_id, str) or not last_id:
        last_id = _str(_obj(data[-1], "file"), "id", "file", empty_ok=False)
    openai = obj.get("_shape") == "openai" or obj.get("object") == "list"
    return data, ("after" if openai else "after_id", last_id)


def check_deleted(value: object) -> None:
    """Accept any of the deletion shapes; refuse one that says it did not delete."""
    obj = _obj(value, "deletion result")
    if obj.get("deleted") is False:
        raise ProtocolError("deletion result says the file was not deleted")


def error_message(body: bytes) -> str | None:
    """The server's ``error.message`` from an error body, or None if it has none."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, dict):
        err = value.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(value.get("message"), str):
            return str(value["message"])
    return None
