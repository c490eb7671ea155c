"""Content type detection: every accepted type from real minimal samples, text by structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from orfs.emulator import sniff
from tests.emulator.conftest import InProcess
from tests.emulator.samples import ACCEPTED, REJECTED


@pytest.mark.parametrize(("name", "data", "mime"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_sniff_file_reports_the_type_of_the_content(tmp_path: Path, name: str, data: bytes,
                                                     mime: str) -> None:
    p = tmp_path / "sample"
    p.write_bytes(data)
    assert sniff.sniff_file(p) == mime


@pytest.mark.parametrize(("name", "data"), REJECTED, ids=[r[0] for r in REJECTED])
def test_sniff_file_rejects_other_content(tmp_path: Path, name: str, data: bytes) -> None:
    p = tmp_path / "sample"
    p.write_bytes(data)
    with pytest.raises(sniff.UnsupportedType, match="unsupported file type"):
        sniff.sniff_file(p)


@pytest.mark.parametrize(("name", "data", "mime"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
async def test_upload_reports_the_sniffed_type_whatever_the_name(
        emu: InProcess, name: str, data: bytes, mime: str) -> None:
    # The name and declared content type say "PNG": only the bytes count.
    r = await emu.client.post("files", files={"file": ("misleading.png", data, "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["mime_type"] == mime
    assert r.json()["size_bytes"] == len(data)


@pytest.mark.parametrize(("name", "data"), REJECTED, ids=[r[0] for r in REJECTED])
async def test_upload_of_unsupported_content_is_400(emu: InProcess, name: str,
                                                    data: bytes) -> None:
    r = await emu.upload("file.txt", data)
    assert r.status_code == 400
    assert "unsupported file type" in r.json()["error"]["message"]
    assert list(emu.state.store.tmp_dir.iterdir()) == []  # the temp file is gone


def test_text_split_across_chunks_and_multibyte_boundaries(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks: a multi-byte character and lines straddle chunk edges.
    monkeypatch.setattr(sniff, "CHUNK_SIZE", 3)
    p = tmp_path / "t"
    p.write_bytes("h\u00e9llo,w\u00f6rld\nsn\u2603w,x\n".encode())
    assert sniff.classify_text(p) == sniff.CSV
    p.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    assert sniff.classify_text(p) == sniff.NDJSON
    p.write_bytes(b"ok \xe2\x98")  # truncated multi-byte character at the end
    assert sniff.classify_text(p) is None


def test_long_lines_are_not_held_and_rule_out_ndjson_and_csv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sniff, "LINE_LIMIT", 10)
    monkeypatch.setattr(sniff, "CHUNK_SIZE", 4)
    p = tmp_path / "t"
    p.write_bytes(b'{"a": 1}\n{"long": "xxxxxxxxxxxxxxxxxxxxxx"}\n')
    assert sniff.classify_text(p) == sniff.PLAIN
    p.write_bytes(b"a,b\n" + b"c," * 20 + b"\n")
    assert sniff.classify_text(p) == sniff.PLAIN


def test_large_json_uses_the_bracket_heuristic(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sniff, "JSON_FULL_PARSE_LIMIT", 16)
    p = tmp_path / "t"
    p.write_bytes(b'{\n  "key": "a value longer than the limit"\n}\n')
    assert sniff.classify_text(p) == sniff.JSON
    p.write_bytes(b'{\n  "key": "a value longer than the limit"\n')
    assert sniff.classify_text(p) == sniff.PLAIN


@pytest.mark.parametrize(("text", "mime"), [
    (b"1\n2\n3\n", sniff.NDJSON),  # every line a JSON value
    (b"42\n", sniff.PLAIN),  # a scalar is not a JSON document here (object or array only)
    (b"[1, 2]\n", sniff.JSON),
    (b"   \n\n", sniff.PLAIN),
    (b"| a | b |\n|---|---|\n| 1 | 2 |\n", sniff.CSV),
    (b"# heading\na,b\n1,2\n", sniff.MARKDOWN),  # markdown signals win over delimiters
    (b"one line, with a comma\n", sniff.PLAIN),  # CSV needs two lines
    (b"- only one list item\n", sniff.PLAIN),
])
def test_text_classification_edges(tmp_path: Path, text: bytes, mime: str) -> None:
    p = tmp_path / "t"
    p.write_bytes(text)
    assert sniff.classify_text(p) == mime
