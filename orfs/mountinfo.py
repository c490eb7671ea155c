"""/proc/self/mountinfo, parsed once and correctly (see proc(5)).

A line is ``ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
SUPER_OPTIONS``. The kernel writes a space, tab, newline or backslash inside a field as a
backslash and three octal digits (``\\040``, ``\\011``, ``\\012``, ``\\134``), so fields
split on spaces and are unescaped one by one; nothing else is an escape.

The list includes a dead FUSE mount (its server gone, "Transport endpoint is not
connected"), which `os.path.ismount` misses because it stat()s the path. When mounts
are stacked on one mountpoint, the later line is the one on top.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """A mountinfo field as the path or word it stands for."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclasses.dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo, its fields unescaped."""

    mount_id: int
    parent_id: int
    device: str          # "major:minor"
    root: str
    mountpoint: str
    options: str         # per-mount options (ro/rw, nosuid, ...)
    fstype: str          # "fuse.orfs" for an orfs mount
    source: str
    super_options: str   # per-superblock options (user_id=, allow_other, ...)


def parse_line(line: str) -> MountEntry:
    """One mountinfo line (without or with its newline); ValueError if malformed."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)  # the optional fields end at a lone "-"
    except ValueError:
        raise ValueError(f"not a mountinfo line: {line!r}") from None
    after = fields[sep + 1:]
    if sep < 6 or len(after) < 2:
        raise ValueError(f"not a mountinfo line: {line!r}")
    return MountEntry(
        mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2],
        root=unescape(fields[3]), mountpoint=unescape(fields[4]), options=fields[5],
        fstype=unescape(after[0]), source=unescape(after[1]),
        super_options=after[2] if len(after) > 2 else "")


def parse(text: str) -> list[MountEntry]:
    """Every line of a mountinfo text, in order."""
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def read(path: str = MOUNTINFO) -> list[MountEntry]:
    """This process's mounts; [] if the file cannot be read (no /proc)."""
    try:
        # surrogateescape: a path that is not UTF-8 compares equal to its os.fsdecode
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return parse(f.read())
    except OSError:
        return []


def entry_of(mountpoint: str | os.PathLike[str], path: str = MOUNTINFO) -> MountEntry | None:
    """The mount on top at `mountpoint` (an absolute path, or made one), or None."""
    target = os.path.abspath(mountpoint)
    found = None
    for entry in read(path):
        if entry.mountpoint == target:
            found = entry  # later lines are mounted on top of earlier ones
    return found


def is_listed(mountpoint: str | os.PathLike[str] | Path, path: str = MOUNTINFO) -> bool:
    """Whether anything is mounted at `mountpoint`, a dead FUSE mount included."""
    return entry_of(mountpoint, path) is not None
