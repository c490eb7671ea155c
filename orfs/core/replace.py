"""Helpers for rename, rewrite and temporary names (issue 4); the operations are in fs.py.

`looks_temporary` is the rule that decides whether a just-closed file's upload is held
for ``temp_grace`` seconds, so that write-temp-then-rename (rsync, editors, ``sed -i``,
Python's atomic-write idiom) uploads once, under the final name. The rule is written
out in docs/SEMANTICS.md ("Temporary names"); keep the two in step.

`copy_cached` and `copy_fd` copy a file's bytes into a staging file in bounded chunks
(never the whole file in memory), for rename of a remote file and for opening one for
writing without O_TRUNC.
"""

from __future__ import annotations

import os
import re

import trio

from orfs.core.content import CacheHandle

# One chunk of a staging copy: bounded memory, few enough event-loop turns.
COPY_CHUNK = 1024 * 1024

_TEMP_NAMES = re.compile(
    r"""
      \..+\.[A-Za-z0-9_]{6}           # rsync, mktemp: .name.XXXXXX
    | .+\.(?:tmp|temp|TMP|swp|swx|swo|part|partial)  # editors, downloaders: x.tmp, .x.swp
    | .+~                             # backups: x~
    | sed[A-Za-z0-9]{6}               # sed -i: ./sedXXXXXX
    | tmp[a-z0-9_]{8}(?:\..*)?        # Python tempfile: tmpab12cd34, tmpab12cd34.json
    | tmp\.[A-Za-z0-9]{10}            # mktemp: tmp.XXXXXXXXXX
    | \.goutputstream-[A-Za-z0-9]+    # GLib (gedit, nautilus) safe save
    | \#.+\#                          # emacs auto-save #x#
    | \.\#.+                          # emacs lock .#x
    """,
    re.VERBOSE,
)


def looks_temporary(name: str) -> bool:
    """Does this file name (one path component) look like a temporary file that a tool
    will rename or remove within moments? See docs/SEMANTICS.md for the list."""
    return _TEMP_NAMES.fullmatch(name) is not None


async def copy_cached(handle: CacheHandle, fd: int) -> int:
    """Copy every byte behind ``handle`` (waiting for its download as needed) into ``fd``
    from offset 0; returns the number of bytes copied. Raises ContentUnavailable."""
    offset = 0
    while True:
        data = await handle.read(offset, COPY_CHUNK)
        if not data:
            return offset
        _pwrite_all(fd, data, offset)
        offset += len(data)


async def copy_fd(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes of ``src`` into ``dst`` from offset 0 (a staged local file)."""
    offset = 0
    while offset < size:
        data = os.pread(src, min(COPY_CHUNK, size - offset), offset)
        if not data:
            break
        _pwrite_all(dst, data, offset)
        offset += len(data)
        await trio.lowlevel.checkpoint()
    return offset


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
