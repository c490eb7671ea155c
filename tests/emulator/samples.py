"""Real minimal samples of every accepted type (and some rejected ones), built here."""

from __future__ import annotations

import io
import struct
import zipfile

from orfs import contenttypes as sniff
from orfs.emulator.seed import make_pdf, make_png


def jpeg() -> bytes:
    # SOI, a JFIF APP0 segment, EOI: the header sniffers look at.
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def gif() -> bytes:
    # A 1x1 GIF89a with a two-colour table and one image block.
    return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
            b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def webp() -> bytes:
    vp8l = b"\x2f\x00\x00\x00\x00\x88\x88\x08\x08"  # a 1x1 lossless bitstream
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + b"\x00"
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def wav() -> bytes:
    samples = b"\x00\x00" * 8
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def flac() -> bytes:
    streaminfo = bytes(34)
    return b"fLaC" + b"\x80" + len(streaminfo).to_bytes(3, "big") + streaminfo


def ogg() -> bytes:
    # An Ogg page header (capture pattern, version, BOS flag) with one segment.
    return b"OggS\x00\x02" + bytes(8) + b"\x01\x00\x00\x00" + bytes(8) + b"\x01\x1e" + bytes(30)


def mp3_id3() -> bytes:
    return b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(413)


def mp3_frame() -> bytes:
    return b"\xff\xfb\x90\x64" + bytes(413)


_MAIN = {
    "docx": ("word/document.xml",
             "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"),
    "xlsx": ("xl/workbook.xml",
             "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"),
    "pptx": ("ppt/presentation.xml",
             "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"),
}


def ooxml(kind: str, *, content_types: bool = True, override: bool = True) -> bytes:
    """A DOCX/XLSX/PPTX package: [Content_Types].xml, rels and the main part.

    ``override=False`` leaves the main part's type out of [Content_Types].xml
    (the folder names then tell); ``content_types=False`` leaves the file out.
    """
    part, ctype = _MAIN[kind]
    main = f'<Override PartName="/{part}" ContentType="{ctype}"/>' if override else ""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        if content_types:
            z.writestr("[Content_Types].xml", (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                '<Default Extension="rels" ContentType='
                '"application/vnd.openxmlformats-package.relationships+xml"/>'
                '<Default Extension="xml" ContentType="application/xml"/>'
                f"{main}</Types>"))
        z.writestr("_rels/.rels", (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns='
            '"http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            f'2006/relationships/officeDocument" Target="{part}"/></Relationships>'))
        z.writestr(part, "<root/>")
    return buf.getvalue()


def plain_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    return buf.getvalue()


# (name, content, the MIME type the emulator must report)
ACCEPTED: list[tuple[str, bytes, str]] = [
    ("pdf", make_pdf(), sniff.PDF),
    ("png", make_png(), "image/png"),
    ("jpeg", jpeg(), "image/jpeg"),
    ("gif", gif(), "image/gif"),
    ("webp", webp(), "image/webp"),
    ("docx", ooxml("docx"), sniff.DOCX),
    ("xlsx", ooxml("xlsx"), sniff.XLSX),
    ("pptx", ooxml("pptx"), sniff.PPTX),
    ("docx-by-folder", ooxml("docx", override=False), sniff.DOCX),
    ("xlsx-by-folder", ooxml("xlsx", override=False), sniff.XLSX),
    ("pptx-by-folder", ooxml("pptx", override=False), sniff.PPTX),
    ("mp3-id3", mp3_id3(), "audio/mpeg"),
    ("mp3-frame", mp3_frame(), "audio/mpeg"),
    ("wav", wav(), "audio/wav"),
    ("flac", flac(), "audio/flac"),
    ("ogg", ogg(), "audio/ogg"),
    ("json", b'{"a": [1, 2, {"b": null}]}\n', sniff.JSON),
    ("json-pretty", b'[\n  {"a": 1},\n  {"a": 2}\n]\n', sniff.JSON),
    ("ndjson", b'{"a": 1}\n{"a": 2}\n\n{"a": 3}\n', sniff.NDJSON),
    ("csv", b"name,age,city\nada,36,london\nalan,41,wilmslow\n", sniff.CSV),
    ("csv-quoted", b'name,quote\nada,"hello, world"\nalan,"a, b"\n', sniff.CSV),
    ("tsv", b"a\tb\tc\n1\t2\t3\n", sniff.CSV),
    ("markdown-heading", b"# Title\n\nSome text.\n", sniff.MARKDOWN),
    ("markdown-fence", b"Example:\n```python\nprint(1)\n```\n", sniff.MARKDOWN),
    ("markdown-link", b"See [the docs](https://example.com) for more.\n", sniff.MARKDOWN),
    ("markdown-list", b"Shopping:\n- eggs\n- milk\n", sniff.MARKDOWN),
    ("plain", b"just some words\non two lines\n", sniff.PLAIN),
    ("plain-one-line", "caf\u00e9 na\u00efve \u2603\n".encode(), sniff.PLAIN),
    ("plain-bom", b"\xef\xbb\xbfhello\n", sniff.PLAIN),
    ("json-invalid-is-plain", b'{"a": 1,\n', sniff.PLAIN),
    ("csv-inconsistent-is-plain", b"a,b,c\n1,2\n", sniff.PLAIN),
]

REJECTED: list[tuple[str, bytes]] = [
    ("binary", bytes(range(256)) * 4),
    ("nul-text", b"hello\x00world\n"),
    ("invalid-utf8", b"caf\xe9 latin-1\n"),
    ("plain-zip", plain_zip()),
    ("docx-without-content-types", ooxml("docx", content_types=False)),
    ("elf", b"\x7fELF\x02\x01\x01" + bytes(100)),
    ("gzip", b"\x1f\x8b\x08\x00" + bytes(20)),
]
