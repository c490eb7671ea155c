"""Content type detection for uploads: from the bytes only, never the name.

The service accepts PDF, PNG/JPEG/GIF/WebP, DOCX/XLSX/PPTX, MP3/WAV/FLAC/OGG
and UTF-8 text; text is reported by its structure. Everything is read from the
temporary file the upload was streamed into, in bounded chunks, so memory stays
flat whatever the size.

Known limits (documented in docs/EMULATOR.md):
- a text file counts as JSON only when its top level is an object or array;
  texts larger than ``JSON_FULL_PARSE_LIMIT`` are not parsed whole: they count
  as JSON when they start with ``{``/``[`` and end with the matching bracket;
- CSV detection is per line (a quoted field spanning lines breaks consistency).
"""

from __future__ import annotations

import codecs
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filetype.types import archive, audio, image

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
JSON = "application/json"
NDJSON = "application/x-ndjson"
CSV = "text/csv"
MARKDOWN = "text/markdown"
PLAIN = "text/plain"

HEADER_SIZE = 8192
CHUNK_SIZE = 1024 * 1024
# Whole-document JSON validation holds the decoded text in memory; above this
# size the structure check falls back to the bracket heuristic.
JSON_FULL_PARSE_LIMIT = 4 * 1024 * 1024
# A line longer than this is not inspected (and rules out NDJSON and CSV), so a
# file without newlines cannot make the classifier hold it whole.
LINE_LIMIT = 1024 * 1024
CONTENT_TYPES_LIMIT = 1024 * 1024

# filetype's matchers, mapped to the names the service reports. Its zip matcher
# is not used (filetype 1.2 checks the wrong bytes); zips go through zipfile.
_MAGIC: list[tuple[Any, str]] = [
    (archive.Pdf(), PDF),
    (image.Png(), "image/png"),
    (image.Jpeg(), "image/jpeg"),
    (image.Gif(), "image/gif"),
    (image.Webp(), "image/webp"),
    (audio.Flac(), "audio/flac"),
    (audio.Wav(), "audio/wav"),
    (audio.Ogg(), "audio/ogg"),
    (audio.Mp3(), "audio/mpeg"),
]

_OOXML_MAIN_TYPES = (
    ("wordprocessingml.document.main+xml", DOCX),
    ("spreadsheetml.sheet.main+xml", XLSX),
    ("presentationml.presentation.main+xml", PPTX),
)
_OOXML_DIRS = (("word/", DOCX), ("xl/", XLSX), ("ppt/", PPTX))

# C0 controls that do not occur in text (tab, newlines, form feed, backspace
# and escape do: logs and terminal captures carry them).
_BINARY_CONTROLS = re.compile(r"[\x00-\x07\x0e-\x1a\x1c-\x1f]")
_CSV_DELIMITERS = (",", ";", "\t", "|")
_MD_STRONG = re.compile(
    r"^(#{1,6}\s+\S|```|~~~)"  # heading, code fence
    r"|\[[^\]\n]+\]\([^)\s]+\)"  # inline link
)
_MD_LIST = re.compile(r"^\s{0,3}([-*+]|\d{1,9}[.)])\s+\S")


class UnsupportedType(Exception):
    """The content is none of the accepted types."""


def sniff_file(path: Path) -> str:
    """The MIME type the service would report for this content.

    Raises UnsupportedType when the content is not an accepted type.
    """
    with path.open("rb") as f:
        header = f.read(HEADER_SIZE)
    for matcher, mime in _MAGIC:
        if matcher.match(header):
            return str(mime)
    if header.startswith(b"PK"):
        office = _sniff_ooxml(path)
        if office is not None:
            return office
        raise UnsupportedType("unsupported file type: a zip archive that is not DOCX/XLSX/PPTX")
    text = classify_text(path)
    if text is None:
        raise UnsupportedType(
            "unsupported file type: expected PDF, PNG, JPEG, GIF, WebP, DOCX, XLSX, "
            "PPTX, MP3, WAV, FLAC, OGG or UTF-8 text"
        )
    return text


def sniff_known(path: Path) -> str | None:
    """Like sniff_file, but None instead of raising (for server-side outputs)."""
    try:
        return sniff_file(path)
    except UnsupportedType:
        return None


def _sniff_ooxml(path: Path) -> str | None:
    """DOCX/XLSX/PPTX from the package's [Content_Types].xml, else its folders."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if "[Content_Types].xml" not in names:
                return None
            info = z.getinfo("[Content_Types].xml")
            if info.file_size <= CONTENT_TYPES_LIMIT:
                with z.open(info) as f:
                    types = f.read(CONTENT_TYPES_LIMIT).decode("utf-8", "replace")
                for marker, mime in _OOXML_MAIN_TYPES:
                    if marker in types:
                        return mime
            for prefix, mime in _OOXML_DIRS:
                if any(n.startswith(prefix) for n in names):
                    return mime
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        return None
    return None


@dataclass
class _TextStats:
    """What one streaming pass over a text learns about its structure."""

    lines: int = 0  # non-empty lines
    ndjson: bool = True
    csv_counts: dict[str, int | None] = field(
        default_factory=lambda: dict.fromkeys(_CSV_DELIMITERS)
    )
    csv_ok: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(_CSV_DELIMITERS, True))
    md_strong: bool = False
    md_list_items: int = 0
    first_char: str = ""
    last_char: str = ""

    def add_line(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line.strip():
            return
        self.lines += 1
        if self.ndjson:
            try:
                json.loads(line)
            except ValueError:
                self.ndjson = False
        for d in _CSV_DELIMITERS:
            if not self.csv_ok[d]:
                continue
            n = _count_unquoted(line, d)
            expected = self.csv_counts[d]
            if expected is None:
                self.csv_counts[d] = n
            elif expected != n:
                self.csv_ok[d] = False
        if not self.md_strong and _MD_STRONG.search(line):
            self.md_strong = True
        if _MD_LIST.match(line):
            self.md_list_items += 1

    def add_long_line(self) -> None:
        """A line past LINE_LIMIT: counted, but it rules out NDJSON and CSV."""
        self.lines += 1
        self.ndjson = False
        self.csv_ok = dict.fromkeys(_CSV_DELIMITERS, False)

    def note_chars(self, text: str) -> None:
        stripped = text.strip()
        if stripped:
            if not self.first_char:
                self.first_char = stripped[0]
            self.last_char = stripped[-1]

    def is_csv(self) -> bool:
        if self.lines < 2:
            return False
        return any(self.csv_ok[d] and (self.csv_counts[d] or 0) >= 1 for d in _CSV_DELIMITERS)

    def is_markdown(self) -> bool:
        return self.md_strong or self.md_list_items >= 2


def _count_unquoted(line: str, delimiter: str) -> int:
    if '"' not in line:
        return line.count(delimiter)
    count, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            count += 1
    return count


def classify_text(path: Path) -> str | None:
    """The text type of a UTF-8 file, or None when it is not UTF-8 text.

    One pass, chunk by chunk, through an incremental decoder.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    stats = _TextStats()
    whole: list[str] | None = []  # kept while small enough to parse as one JSON document
    whole_size = 0
    pending = ""  # the start of a line whose newline has not arrived yet
    skipping = False  # inside an over-long line: discard until its newline
    first = True
    with path.open("rb") as f:
        while True:
            chunk = f.read(CHUNK_SIZE)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                return None
            if first and text:
                text = text.removeprefix("\ufeff")
                first = False
            if _BINARY_CONTROLS.search(text):
                return None
            stats.note_chars(text)
            if whole is not None:
                whole_size += len(text)
                if whole_size > JSON_FULL_PARSE_LIMIT:
                    whole = None
                else:
                    whole.append(text)
            pos = 0
            while (nl := text.find("\n", pos)) >= 0:
                line = pending + text[pos:nl]
                if skipping or len(line) > LINE_LIMIT:
                    stats.add_long_line()
                else:
                    stats.add_line(line)
                pending, skipping, pos = "", False, nl + 1
            if not skipping:
                pending += text[pos:]
                if len(pending) > LINE_LIMIT:
                    pending, skipping = "", True
            if not chunk:
                break
    if skipping:
        stats.add_long_line()
    elif pending:
        stats.add_line(pending)
    if stats.lines == 0:
        return PLAIN  # whitespace only (empty files never get here)
    if stats.lines >= 2 and stats.ndjson:
        return NDJSON
    if _looks_like_json(whole, stats):
        return JSON
    if stats.is_markdown():
        return MARKDOWN
    if stats.is_csv():
        return CSV
    return PLAIN


def _looks_like_json(whole: list[str] | None, stats: _TextStats) -> bool:
    if stats.first_char not in ("{", "["):
        return False
    if whole is None:
        return (stats.first_char, stats.last_char) in (("{", "}"), ("[", "]"))
    try:
        value = json.loads("".join(whole))
    except ValueError:
        return False
    return isinstance(value, dict | list)
