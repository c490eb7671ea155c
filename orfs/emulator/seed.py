"""The demo workspace: a few server-side outputs and one uploaded PDF.

``--seed-demo`` stores these in the default workspace (OpenRouter storage) once
per data directory; the demo script and tests use ``demo_files()`` to know what
to expect.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

from orfs.emulator.store import Scope, Store

SEED_MARKER = "seeded_demo_v1"


@dataclasses.dataclass(frozen=True, slots=True)
class DemoFile:
    filename: str
    data: bytes
    mime_type: str
    downloadable: bool  # True: a server-side output; False: an upload


def make_png(width: int = 64, height: int = 32) -> bytes:
    """A real RGB PNG: a small bar chart (three bars on white)."""
    bars = [(8, 20, (220, 60, 60)), (26, 10, (60, 160, 60)), (44, 4, (60, 90, 220))]
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0 (none) for each scanline
        for x in range(width):
            color = (255, 255, 255)
            for x0, top, c in bars:
                if x0 <= x < x0 + 12 and y >= top:
                    color = c
            row += bytes(color)
        rows.append(bytes(row))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def make_pdf(text: str = "Hello from orfs") -> bytes:
    """A real one-page PDF showing ``text`` (cross-reference table included)."""
    content = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


_REPORT_CSV = b"""month,revenue,costs,margin
2025-07,120000,80000,0.33
2025-08,135000,82000,0.39
2025-09,142000,85000,0.40
"""

_SUMMARY_CSV = b"""region,q3_revenue,q3_growth
north,151000,0.08
south,98000,0.12
west,148000,0.05
"""

_SUMMARY_MD = b"""# Q3 summary

Revenue grew in every month of the quarter.

- July: 120k
- August: 135k
- September: 142k

See [the chart](chart.png) and the `report.csv` output.
"""


def demo_files() -> list[DemoFile]:
    """What ``--seed-demo`` stores, oldest first."""
    return [
        DemoFile("report.csv", _REPORT_CSV, "text/csv", True),
        DemoFile("chart.png", make_png(), "image/png", True),
        DemoFile("summary.md", _SUMMARY_MD, "text/markdown", True),
        DemoFile("reports/q3/summary.csv", _SUMMARY_CSV, "text/csv", True),
        DemoFile("brief.pdf", make_pdf("Project brief"), "application/pdf", False),
    ]


def seed_demo(store: Store, scope: Scope | None = None) -> bool:
    """Store the demo files unless this data directory already has them.

    Returns True when it seeded, False when it had already been done.
    """
    scope = scope or Scope()
    marker = f"{SEED_MARKER}:{scope.workspace}:{scope.provider}"
    if store.get_meta(marker) is not None:
        return False
    for f in demo_files():
        store.add_bytes(scope, f.data, filename=f.filename, mime_type=f.mime_type,
                        downloadable=f.downloadable)
    store.set_meta(marker, "1")
    return True
