"""What an upload must pass before any request: what the service would refuse for certain.

`refusal` is the one list of checks, run on a closed file's staged bytes before its
upload is sent (`LocalFiles.admit` in writes.py, which records the refusal as a failed
upload: bytes kept, ``user.orfs.state=failed``, a WARNING naming the file and why):

    size 0            nothing to check: an empty file stays local, nothing is sent
    over 100 MiB      FileTooBig (writes past the limit already fail with EFBIG)
    a refused type    Unsupported, only where the content type rules shared with the
                      emulator (orfs/contenttypes.py, `certain_refusal`) are certain;
                      anything doubtful is sent, and the service decides
    a full workspace  NoSpace, when the known usage (the listing, as statfs counts it),
                      plus the uploads under way, plus this file pass the quota; a
                      stale listing is refreshed first (one listing, never an upload)

`may_stream` is the part of it that can be judged from a file's first bytes while it is
still being written, so that a streamed upload (streaming.py) never starts for a file
that close will refuse: those files make no request at all. What is written about it is
docs/SEMANTICS.md, "Refused at close"; keep the two in step.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import trio

from orfs import contenttypes
from orfs.api.errors import ApiError
from orfs.config import MAX_FILE_SIZE
from orfs.core.errors import CoreError, FileTooBig, NoSpace, Unsupported
from orfs.core.local import LocalFile
from orfs.core.status import QUOTA
from orfs.core.tables import Tables

log = logging.getLogger(__name__)

ACCEPTED = ("PDF, PNG, JPEG, GIF, WebP, DOCX, XLSX, PPTX, MP3, WAV, FLAC, OGG or UTF-8 text")


async def refusal(tables: Tables, local: LocalFile) -> CoreError | None:
    """The error the service's answer to this file's upload would certainly become, or
    None when it may be sent (module doc). Makes no request but, when the known usage
    says the workspace is full on a stale listing, one listing."""
    if local.size == 0:
        return None
    if local.size > MAX_FILE_SIZE:
        return FileTooBig(f"{local.size} bytes is past the {MAX_FILE_SIZE} byte upload limit")
    why = await _type_refusal(local)
    if why is not None:
        return Unsupported(f"unsupported file type: {why}; the service accepts {ACCEPTED}")
    if _over_quota(tables, local) and not tables.ns.is_fresh():
        try:
            await tables.ns.ensure_fresh()  # files deleted elsewhere may have made room
        except (ApiError, CoreError) as exc:
            log.info("cannot refresh the listing to check the quota for %s (%s): sending "
                     "it, the service decides", "/".join(local.path), exc)
            return None
    needed = _over_quota(tables, local)
    if needed:
        return NoSpace(f"workspace storage quota exceeded: {needed - local.size} of {QUOTA} "
                       f"bytes used or being uploaded, the file needs {local.size}")
    return None


def may_stream(tables: Tables, local: LocalFile) -> bool:
    """May the upload of a file being written in order start now (streaming.py)? Not
    when its first bytes already show `refusal` will refuse it (a type known from its
    header; the quota passed by the bytes written so far)."""
    try:
        header = os.pread(local.fd, contenttypes.HEADER_SIZE, 0)
    except OSError:
        return True  # doubtful: the close decides
    if not header.startswith(b"PK") and contenttypes.certain_refusal(io.BytesIO(header)):
        return False
    return not _over_quota(tables, local)


def committed_bytes(tables: Tables, but: LocalFile) -> int:
    """The bytes of the uploads under way or queued (async), other than `but`'s: they
    count against the quota before the listing shows them."""
    return sum(lf.size for lf in tables.locals
               if lf is not but and lf.state in ("queued", "uploading")
               and lf.remote is None and not lf.unlinked)


def _over_quota(tables: Tables, local: LocalFile) -> int:
    """The bytes the workspace would hold with this file, when past the quota; else 0."""
    total = tables.ns.used_bytes() + committed_bytes(tables, local) + local.size
    return total if total > QUOTA else 0


async def _type_refusal(local: LocalFile) -> str | None:
    """`contenttypes.certain_refusal` of the staged bytes: from the header read here
    (one pread), except for a zip, whose directory is read in a worker thread."""
    if local.fd < 0:
        # A queued file keeps no descriptor while it waits: read it by its path.
        return await trio.to_thread.run_sync(_file_refusal, local.staged)
    try:
        header = os.pread(local.fd, contenttypes.HEADER_SIZE, 0)
    except OSError:
        return None
    if not header.startswith(b"PK"):
        return contenttypes.certain_refusal(io.BytesIO(header))
    return await trio.to_thread.run_sync(_file_refusal, local.staged)


def _file_refusal(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return contenttypes.certain_refusal(f)
    except OSError:
        return None
