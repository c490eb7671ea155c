"""Content type detection: every accepted type from real minimal samples, text by structure."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from orfs import contenttypes as sniff
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


# -- the fast paths: whole-file UTF-8 check, structure from a bounded prefix --------------


def _toggle_count(line: str, delimiter: str) -> int:
    """The reference: a flag toggled at each quote, delimiters counted outside."""
    count, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            count += 1
    return count


@hypothesis.given(st.text(alphabet='",;|\tab "', max_size=40))
def test_unquoted_counts_like_toggling_at_each_quote(line: str) -> None:
    for d in (",", ";", "\t", "|"):
        assert sniff._unquoted(line).count(d) == _toggle_count(line, d)


@hypothesis.given(st.binary(max_size=64), st.integers(min_value=1, max_value=9))
def test_text_check_in_chunks_agrees_with_decoding_whole(data: bytes, step: int) -> None:
    check = sniff.TextCheck()
    for i in range(0, len(data), step):
        check.feed(data[i:i + step])
    try:
        text = data.decode("utf-8")
        expected = not re.search(r"[\x00-\x07\x0e-\x1a\x1c-\x1f]", text)
    except UnicodeDecodeError:
        expected = False
    assert check.finish() == expected


def test_structure_comes_from_the_prefix_cut_at_a_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sniff, "PREFIX_SIZE", 64)
    p = tmp_path / "t"
    # Consistent CSV for the first 64 bytes (the cut falls inside a row, which is
    # dropped); what follows does not change the verdict.
    rows = b"".join(b"%d,name %d,x\n" % (i, i) for i in range(8))
    assert len(rows) > 64
    p.write_bytes(rows + b"no delimiters here\n# not a heading that counts\n")
    assert sniff.classify_text(p) == sniff.CSV
    p.write_bytes(b'{"a": 1}\n' * 8 + b"not json\n")
    assert sniff.classify_text(p) == sniff.NDJSON
    p.write_bytes(b"plain words\n" * 8 + b"# Heading\n")
    assert sniff.classify_text(p) == sniff.PLAIN


def test_utf8_is_checked_past_the_prefix(tmp_path: Path) -> None:
    p = tmp_path / "t"
    body = b"a,b,c\n" * (sniff.PREFIX_SIZE // 6 + 1000)
    for tail in (b"\xff\n", b"nul\x00\n", b"ok \xe2\x98"):
        p.write_bytes(body + tail)
        assert sniff.classify_text(p) is None, tail
        with pytest.raises(sniff.UnsupportedType):
            sniff.sniff_file(p)
    p.write_bytes(body + "snow \u2603\n".encode())
    assert sniff.sniff_file(p) == sniff.CSV


def test_a_first_line_longer_than_the_prefix(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sniff, "PREFIX_SIZE", 16)
    monkeypatch.setattr(sniff, "TAIL_BLOCK", 4)
    p = tmp_path / "t"
    doc = '\ufeff  {"k": ["a", "b", "c", "d", "\u00e9\u00e9\u00e9"]}'.encode()
    p.write_bytes(doc + b" \n")
    assert sniff.classify_text(p) == sniff.JSON  # parsed whole (small)
    monkeypatch.setattr(sniff, "JSON_FULL_PARSE_LIMIT", 16)
    # By its brackets, the last one found behind whitespace longer than a tail block
    # and multi-byte characters on the block edges.
    p.write_bytes(doc + " \n\u3000\t  \n".encode() * 3)
    assert sniff.classify_text(p) == sniff.JSON
    p.write_bytes(doc + "\u00e9\n".encode())
    assert sniff.classify_text(p) == sniff.PLAIN
    p.write_bytes(b"x" * 40 + b"\n")
    assert sniff.classify_text(p) == sniff.PLAIN


def test_a_blank_prefix_is_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A documented approximation: the structure is judged from the prefix only.
    monkeypatch.setattr(sniff, "PREFIX_SIZE", 16)
    p = tmp_path / "t"
    p.write_bytes(b"\n" * 20 + b"a,b\n1,2\n")
    assert sniff.classify_text(p) == sniff.PLAIN


@pytest.mark.parametrize(("name", "data", "mime"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_sniff_known_bytes_agrees_with_the_file_sniffer(name: str, data: bytes,
                                                        mime: str) -> None:
    assert sniff.sniff_known_bytes(data) == mime


@pytest.mark.parametrize(("name", "data"), REJECTED, ids=[r[0] for r in REJECTED])
def test_sniff_known_bytes_of_rejected_content_is_none(name: str, data: bytes) -> None:
    assert sniff.sniff_known_bytes(data) is None


async def test_upload_checks_utf8_as_it_arrives(emu: InProcess) -> None:
    body = b"a,b\n" * (sniff.PREFIX_SIZE // 4 + 10)
    r = await emu.upload("bad.csv", body + b"\xc3(\n")
    assert r.status_code == 400 and "unsupported file type" in r.json()["error"]["message"]
    r = await emu.upload("good.csv", body + "\u00e9,\u00e8\n".encode())
    assert r.status_code == 200 and r.json()["mime_type"] == sniff.CSV
    out = await emu.output("bad.out", body + b"\xc3(\n", content_type="text/x-mine")
    assert out["mime_type"] == "text/x-mine"


def test_large_quoted_csv_is_classified_as_csv(tmp_path: Path) -> None:
    # The structure is judged from a bounded prefix; quoted fields with commas and
    # doubled quotes must not break the delimiter count. (Speed: scripts/emulator_bench.py.)
    row = b'"1","name, with a comma","city","1.50","a ""quoted"" comment"\n'
    p = tmp_path / "big.csv"
    with p.open("wb") as f:
        block = row * (1024 * 1024 // len(row))
        for _ in range(32):
            f.write(block)
    assert sniff.sniff_file(p) == sniff.CSV


# -- certain_refusal: what the mount refuses before sending ------------------------------

_MAGICS = [b"", b"\x1f\x8b\x08\x00", b"\x7fELF\x02\x01\x01\x00", b"PK\x03\x04", b"%PDF-1.4",
           b"SQLite format 3\x00", b"\xfd7zXZ\x00", b"MZ\x90\x00", b"\xff\xfb\x90\x00",
           b"RIFF\x00\x00\x00\x00WAVE", b"7z\xbc\xaf\x27\x1c", b"BZh91AY"]


@pytest.mark.parametrize(("name", "data", "mime"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_no_accepted_sample_is_refused_for_certain(name: str, data: bytes, mime: str) -> None:
    assert sniff.certain_refusal(io.BytesIO(data)) is None


@hypothesis.given(st.sampled_from(_MAGICS), st.binary(max_size=600),
                  st.sampled_from([b"", b"%PDF", b"\xff"]), st.binary(max_size=300))
@hypothesis.settings(max_examples=300, deadline=None)
def test_a_certain_refusal_is_always_a_refusal_of_the_rules(
        magic: bytes, middle: bytes, marker: bytes, tail: bytes) -> None:
    # What the mount refuses before sending, the emulator's rules refuse too: a file
    # the service would accept is never refused locally.
    data = magic + middle + marker + tail
    if sniff.certain_refusal(io.BytesIO(data)) is not None:
        with pytest.raises(sniff.UnsupportedType):
            sniff.sniff_stream(io.BytesIO(data))


def test_a_pdf_header_after_junk_is_doubtful() -> None:
    # A lenient reader finds %PDF anywhere in the first 1024 bytes.
    data = b"\x1f\x8b\x08\x00" + bytes(100) + b"%PDF-1.4\n"
    with pytest.raises(sniff.UnsupportedType):
        sniff.sniff_stream(io.BytesIO(data))
    assert sniff.certain_refusal(io.BytesIO(data)) is None


def test_a_zip_with_an_office_folder_or_unread_content_types_is_doubtful(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def make(*names: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n in names:
                z.writestr(n, "<x/>")
        return buf.getvalue()
    assert sniff.certain_refusal(io.BytesIO(make("a.txt"))) is not None
    assert sniff.certain_refusal(io.BytesIO(make("xl/workbook.xml"))) is None
    with_types = make("[Content_Types].xml", "a.txt")
    assert sniff.certain_refusal(io.BytesIO(with_types)) is not None
    monkeypatch.setattr(sniff, "CONTENT_TYPES_LIMIT", 1)  # too big to read: doubtful
    assert sniff.certain_refusal(io.BytesIO(with_types)) is None
