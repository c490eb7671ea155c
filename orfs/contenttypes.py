"""Content types of uploads: the service's rules, from the bytes only, never the name.

One module, two users: the emulator answers an upload with these rules
(`sniff_file`: the type it reports, or `UnsupportedType`), and the mount refuses at
close, before any request, the content these rules refuse *for certain*
(`certain_refusal`). It imports nothing of orfs, so both may use it.

The service accepts PDF, PNG/JPEG/GIF/WebP, DOCX/XLSX/PPTX, MP3/WAV/FLAC/OGG
and UTF-8 text; text is reported by its structure. Everything is read from the
temporary file the upload was streamed into, in bounded chunks, so memory stays
flat whatever the size.

Text costs two cheap passes: the whole file is checked to be UTF-8 without
binary control characters at C speed (about 1 GB/s), and the structure is
judged in Python from a bounded prefix only, so a 100 MiB upload is limited by
the network and the disk, not by classification.

Known limits (documented in docs/EMULATOR.md):
- NDJSON, markdown and CSV are judged from the first ``PREFIX_SIZE`` bytes (cut
  after their last newline); what follows does not change the verdict;
- a text file counts as JSON only when its top level is an object or array;
  texts larger than ``JSON_FULL_PARSE_LIMIT`` are not parsed whole: they count
  as JSON when they start with ``{``/``[`` and end with the matching bracket;
- CSV detection is per line (a quoted field spanning lines breaks consistency).
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from filetype.types import application, archive, audio, image

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
CHUNK_SIZE = 1024 * 1024  # reads of the whole-file UTF-8 pass
# The structure (NDJSON, markdown, CSV) is judged from this much of the start.
PREFIX_SIZE = 1024 * 1024
# Reads from the end when looking for the last character of a large text.
TAIL_BLOCK = 64 * 1024
# Whole-document JSON validation holds the decoded text in memory; above this
# size the structure check falls back to the bracket heuristic.
JSON_FULL_PARSE_LIMIT = 4 * 1024 * 1024
# A line longer than this is not inspected (and rules out NDJSON and CSV); a
# first line longer than the prefix counts as one such line.
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
_BINARY_CONTROL_BYTES = bytes([*range(0x00, 0x08), *range(0x0e, 0x1b), *range(0x1c, 0x20)])
# A quoted stretch of a CSV line: from a quote to the next one, or to the end.
_QUOTED = re.compile(r'"[^"]*(?:"|\Z)')
_CSV_DELIMITERS = (",", ";", "\t", "|")
_MD_STRONG = re.compile(
    r"^(#{1,6}\s+\S|```|~~~)"  # heading, code fence
    r"|\[[^\]\n]+\]\([^)\s]+\)"  # inline link
)
_MD_LIST = re.compile(r"^\s{0,3}([-*+]|\d{1,9}[.)])\s+\S")


class UnsupportedType(Exception):
    """The content is none of the accepted types."""


def sniff_file(path: Path, *, utf8_text: bool | None = None) -> str:
    """The MIME type the service would report for this content.

    ``utf8_text``: the verdict of a TextCheck fed the same bytes as they were
    received (spares the whole-file pass); None: check the file here.
    Raises UnsupportedType when the content is not an accepted type.
    """
    with path.open("rb") as f:
        return sniff_stream(f, utf8_text=utf8_text)


def sniff_stream(f: BinaryIO, *, utf8_text: bool | None = None) -> str:
    """sniff_file on an open, seekable binary file (a file, or BytesIO of small content)."""
    f.seek(0)
    header = f.read(HEADER_SIZE)
    accepted = _accepted_magic(header)
    if accepted is not None:
        return accepted
    if header.startswith(b"PK"):
        office = _sniff_ooxml(f)
        if office is not None:
            return office
        raise UnsupportedType("unsupported file type: a zip archive that is not DOCX/XLSX/PPTX")
    text = classify_stream(f, utf8_text=utf8_text)
    if text is None:
        raise UnsupportedType(
            "unsupported file type: expected PDF, PNG, JPEG, GIF, WebP, DOCX, XLSX, "
            "PPTX, MP3, WAV, FLAC, OGG or UTF-8 text"
        )
    return text


def sniff_known(path: Path, *, utf8_text: bool | None = None) -> str | None:
    """Like sniff_file, but None instead of raising (for server-side outputs)."""
    try:
        return sniff_file(path, utf8_text=utf8_text)
    except UnsupportedType:
        return None


def sniff_known_bytes(data: bytes) -> str | None:
    """sniff_known of small in-memory content (no file to open)."""
    try:
        return sniff_stream(io.BytesIO(data))
    except UnsupportedType:
        return None


def _accepted_magic(header: bytes) -> str | None:
    """The accepted binary type whose magic number starts the header, if any."""
    for matcher, mime in _MAGIC:
        if matcher.match(header):
            return str(mime)
    return None


def _sniff_ooxml(f: BinaryIO) -> str | None:
    """DOCX/XLSX/PPTX from the package's [Content_Types].xml, else its folders."""
    return _ooxml(f)[0]


def _ooxml(f: BinaryIO) -> tuple[str | None, bool]:
    """(the OOXML type of a zip, or None; whether it is certainly none: the zip was
    read, and neither a [Content_Types].xml read whole nor a folder of its names
    points to DOCX, XLSX or PPTX)."""
    try:
        with zipfile.ZipFile(f) as z:
            names = z.namelist()
            folders = any(n.startswith(prefix) for n in names for prefix, _ in _OOXML_DIRS)
            if "[Content_Types].xml" not in names:
                return None, not folders
            info = z.getinfo("[Content_Types].xml")
            if info.file_size > CONTENT_TYPES_LIMIT:
                types = None
            else:
                with z.open(info) as part:
                    types = part.read(CONTENT_TYPES_LIMIT).decode("utf-8", "replace")
                for marker, mime in _OOXML_MAIN_TYPES:
                    if marker in types:
                        return mime, False
            for prefix, mime in _OOXML_DIRS:
                if any(n.startswith(prefix) for n in names):
                    return mime, False
            return None, types is not None
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        return None, False


@dataclass
class _TextStats:
    """What the lines of a text's prefix tell about its structure."""

    lines: int = 0  # non-empty lines
    ndjson: bool = True
    csv_counts: dict[str, int | None] = field(
        default_factory=lambda: dict.fromkeys(_CSV_DELIMITERS)
    )
    csv_ok: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(_CSV_DELIMITERS, True))
    md_strong: bool = False
    md_list_items: int = 0

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
        unquoted = _unquoted(line)
        for d in _CSV_DELIMITERS:
            if not self.csv_ok[d]:
                continue
            n = unquoted.count(d)
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

    def is_csv(self) -> bool:
        if self.lines < 2:
            return False
        return any(self.csv_ok[d] and (self.csv_counts[d] or 0) >= 1 for d in _CSV_DELIMITERS)

    def is_markdown(self) -> bool:
        return self.md_strong or self.md_list_items >= 2


def _unquoted(line: str) -> str:
    """The line without its quoted stretches: a ``"`` opens one, the next closes it.

    Same as toggling a flag at each quote (an unclosed quote runs to the end), as
    ``""`` inside a quoted field closes and reopens it; one C-level pass.
    """
    return _QUOTED.sub("", line) if '"' in line else line


class TextCheck:
    """Whether a byte stream, fed in chunks, is UTF-8 without binary control characters.

    At C speed (about 1 GB/s): the control characters are ASCII, which UTF-8
    never uses inside a multi-byte sequence, so they are looked for in the raw
    bytes (``bytes.translate`` deleting them changes the length); the
    incremental decoder validates the encoding across chunk edges. Once the
    answer is no, feeding costs nothing (binary files fail on their first bytes).
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.ok = True

    def feed(self, data: bytes) -> None:
        if not self.ok:
            return
        if len(data.translate(None, _BINARY_CONTROL_BYTES)) != len(data):
            self.ok = False
            return
        try:
            self._decoder.decode(data)
        except UnicodeDecodeError:
            self.ok = False

    def finish(self) -> bool:
        """The verdict, once every byte has been fed."""
        if self.ok:
            try:
                self._decoder.decode(b"", final=True)  # a truncated character at the end
            except UnicodeDecodeError:
                self.ok = False
        return self.ok


def is_utf8_text(f: BinaryIO) -> bool:
    """Whether the whole file is UTF-8 without binary control characters."""
    check = TextCheck()
    f.seek(0)
    while check.ok and (chunk := f.read(CHUNK_SIZE)):
        check.feed(chunk)
    return check.finish()


def _read_prefix(f: BinaryIO, size: int) -> tuple[str, bool]:
    """The text of the first PREFIX_SIZE bytes cut after their last newline, and
    whether that is the whole file. No newline in them: ("", False), one over-long
    line. Only called on validated UTF-8, so the cut never splits a character."""
    f.seek(0)
    head = f.read(PREFIX_SIZE)
    whole = size <= PREFIX_SIZE
    if not whole:
        cut = head.rfind(b"\n")
        head = head[:cut + 1] if cut >= 0 else b""
    return head.decode("utf-8").removeprefix("\ufeff"), whole


def _first_char(f: BinaryIO) -> str:
    """The first non-whitespace character of the file ('' if none), a BOM skipped."""
    decoder = codecs.getincrementaldecoder("utf-8")("ignore")
    f.seek(0)
    start = True
    while block := f.read(TAIL_BLOCK):
        text = decoder.decode(block)
        if start and text:
            text, start = text.removeprefix("\ufeff"), False
        if stripped := text.lstrip():
            return stripped[0]
    return ""


def _last_char(f: BinaryIO, size: int) -> str:
    """The last non-whitespace character of the file ('' if none), read from the end."""
    end = size
    while end > 0:
        start = max(0, end - TAIL_BLOCK)
        f.seek(start)
        # The block may start inside a character: drop those bytes (the file was
        # validated, so nothing else is lost).
        tail = f.read(end - start).decode("utf-8", "ignore").rstrip()
        if tail:
            return tail[-1]
        end = start
    return ""


def classify_text(path: Path, *, utf8_text: bool | None = None) -> str | None:
    """classify_stream on a file."""
    with path.open("rb") as f:
        return classify_stream(f, utf8_text=utf8_text)


def classify_stream(f: BinaryIO, *, utf8_text: bool | None = None) -> str | None:
    """The text type of a UTF-8 file, or None when it is not UTF-8 text.

    UTF-8 validity is checked over the whole file (``is_utf8_text``, unless
    ``utf8_text`` already tells, from a TextCheck fed while receiving); the
    structure is judged from the first PREFIX_SIZE bytes, cut at a line
    boundary, plus the whole file for JSON (parsed whole up to
    JSON_FULL_PARSE_LIMIT bytes, else judged by its first and last characters).
    """
    if not (is_utf8_text(f) if utf8_text is None else utf8_text):
        return None
    size = f.seek(0, io.SEEK_END)
    text, whole = _read_prefix(f, size)
    stats = _TextStats()
    for line in text.split("\n"):
        if len(line) > LINE_LIMIT:
            stats.add_long_line()
        else:
            stats.add_line(line)
    if not whole and not text:
        stats.add_long_line()  # a first line longer than the prefix
    if stats.lines == 0:
        return PLAIN  # whitespace only (empty files never get here)
    if stats.lines >= 2 and stats.ndjson:
        return NDJSON
    if _looks_like_json(f, size, text):
        return JSON
    if stats.is_markdown():
        return MARKDOWN
    if stats.is_csv():
        return CSV
    return PLAIN


def _looks_like_json(f: BinaryIO, size: int, prefix: str) -> bool:
    stripped = prefix.lstrip()
    if stripped:
        first = stripped[0]
    else:  # no whole line in the prefix: look at the raw start
        first = _first_char(f)
    if first not in ("{", "["):
        return False
    if size > JSON_FULL_PARSE_LIMIT:
        return (first, _last_char(f, size)) in (("{", "}"), ("[", "]"))
    f.seek(0)
    try:
        value = json.loads(f.read().decode("utf-8").removeprefix("\ufeff"))
    except ValueError:
        return False
    return isinstance(value, dict | list)


# -- what the mount may refuse before sending (docs/SEMANTICS.md, "Refused at close") ------

# Formats that are no document, image, audio or text at all: archives, compressed
# streams, executables, packages, databases. The service's accepted list (module doc)
# holds none of them, and none is a likely addition to it, unlike other images, audio
# or video, which are left to the service. Each is known by its magic number at a fixed
# offset (filetype's matchers, as for the accepted types).
_CERTAINLY_REFUSED: list[tuple[Any, str]] = [
    (archive.Gz(), "a gzip archive"),
    (archive.Bz2(), "a bzip2 archive"),
    (archive.Xz(), "an xz archive"),
    (archive.Zstd(), "a zstd archive"),
    (archive.Lz4(), "an lz4 archive"),
    (archive.Lz(), "an lzip archive"),
    (archive.Lzop(), "an lzop archive"),
    (archive.Z(), "a compress (.Z) archive"),
    (archive.SevenZ(), "a 7-Zip archive"),
    (archive.Rar(), "a RAR archive"),
    (archive.Tar(), "a tar archive"),
    (archive.Cab(), "a cabinet archive"),
    (archive.Deb(), "a Debian package"),
    (archive.Rpm(), "an RPM package"),
    (archive.Ar(), "an ar archive"),
    (archive.Elf(), "an ELF executable"),
    (archive.Exe(), "a DOS/Windows executable"),
    (application.Wasm(), "a WebAssembly module"),
    (archive.Sqlite(), "an SQLite database"),
]
# A lenient PDF reader finds the header anywhere in the first 1024 bytes.
_PDF_WINDOW = 1024


def certain_refusal(f: BinaryIO) -> str | None:
    """Why the service refuses this content for certain, or None when it may accept it.

    Certain means that these rules refuse it (`sniff_stream` raises UnsupportedType)
    and that no other reading of the same bytes could find an accepted type:
    - the start is binary (invalid UTF-8 or binary control characters in the header,
      so no text reading applies), matches no accepted magic number, has no ``%PDF``
      in its first 1024 bytes, and is the magic number of a format in
      `_CERTAINLY_REFUSED`; or
    - it is a zip archive that can be read and shows nothing of DOCX/XLSX/PPTX:
      no ``[Content_Types].xml`` naming one, no ``word/``, ``xl/`` or ``ppt/`` folder
      (a zip with such a folder but no ``[Content_Types].xml``, which these rules
      refuse, is doubtful: another reader may take it for the document).
    Everything else the rules refuse (an unknown binary, text in another encoding,
    text with a control character, another image, audio or video format, a zip that
    cannot be read) is doubtful: None, and the service decides. Reads the header, and
    for a zip its central directory, never the whole file.
    """
    f.seek(0)
    header = f.read(HEADER_SIZE)
    if not header or _accepted_magic(header) is not None or b"%PDF" in header[:_PDF_WINDOW]:
        return None
    if _starts_as_text(header):
        return None  # text, or a text-like start: doubtful at most
    if header.startswith(b"PK"):  # as sniff_stream: a zip, DOCX/XLSX/PPTX or not
        if not header.startswith(b"PK\x03\x04"):
            return None  # an empty or spanned zip: left to the service
        if _ooxml(f)[1]:
            return "a zip archive that is not DOCX/XLSX/PPTX"
        return None
    for matcher, what in _CERTAINLY_REFUSED:
        if matcher.match(header):
            return f"{what} ({matcher.mime})"
    return None


def _starts_as_text(header: bytes) -> bool:
    """Whether the header reads as UTF-8 text without binary control characters (a
    character cut at the header's end does not count against it)."""
    check = TextCheck()
    check.feed(header)
    return check.ok
