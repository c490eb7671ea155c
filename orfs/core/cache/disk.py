"""The cache directory's file names, and the few syscalls on its files that several
parts share (remove quietly, fsync by path)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")


def disk_name(file_id: str) -> str:
    """The file name under ``content/`` for an id: the id itself when it is a tame
    name, else ``~`` + its SHA-256 (``~`` never starts a tame name, so no clash)."""
    if _SAFE_NAME.fullmatch(file_id):
        return file_id
    return "~" + hashlib.sha256(file_id.encode("utf-8", "surrogatepass")).hexdigest()


def fsync_path(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    """Remove ``path``; already gone is fine, any other failure is logged."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
