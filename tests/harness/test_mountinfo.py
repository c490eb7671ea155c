"""The one mountinfo parser (orfs.mountinfo): escaped paths, optional fields, stacking,
and the live /proc/self/mountinfo of this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orfs import mountinfo
from orfs.fuse.tuning import device_of

# Real lines in the kernel's shape: a plain root, a FUSE mount whose mountpoint holds a
# space, a tab, a newline and a backslash, one with no optional fields, and one with two.
TEXT = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    "40 22 0:45 / /tmp/a\\040b\\011c\\012d\\134e rw,nosuid,nodev,relatime shared:20"
    " - fuse.orfs orfs rw,user_id=0,group_id=0\n"
    "41 22 0:46 /sub\\040dir /mnt/plain ro,relatime - tmpfs my\\040src rw,size=10k\n"
    "42 22 0:47 / /mnt/opt rw shared:3 master:1 - fuse.orfs orfs rw\n"
    "43 22 0:48 / /tmp/a\\040b\\011c\\012d\\134e rw - fuse.orfs orfs rw\n"
)


def test_escapes_are_octal_triples_for_space_tab_newline_backslash() -> None:
    assert mountinfo.unescape("/tmp/a\\040b\\011c\\012d\\134e") == "/tmp/a b\tc\nd\\e"
    # A backslash not followed by three octal digits is not an escape.
    assert mountinfo.unescape("/x\\08\\9\\04") == "/x\\08\\9\\04"
    # \134 is a backslash: what follows it is not read as a second escape.
    assert mountinfo.unescape("/a\\134040") == "/a\\040"


def test_lines_parse_into_their_fields() -> None:
    entries = mountinfo.parse(TEXT)
    assert [e.mount_id for e in entries] == [22, 40, 41, 42, 43]
    fuse = entries[1]
    assert fuse.mountpoint == "/tmp/a b\tc\nd\\e"
    assert (fuse.parent_id, fuse.device, fuse.root) == (22, "0:45", "/")
    assert (fuse.fstype, fuse.source) == ("fuse.orfs", "orfs")
    assert fuse.options == "rw,nosuid,nodev,relatime"
    assert fuse.super_options == "rw,user_id=0,group_id=0"
    plain = entries[2]  # no optional fields; escapes in root and source too
    assert (plain.root, plain.mountpoint, plain.source) == ("/sub dir", "/mnt/plain", "my src")
    assert (plain.fstype, plain.options) == ("tmpfs", "ro,relatime")
    assert entries[3].mountpoint == "/mnt/opt" and entries[3].fstype == "fuse.orfs"


def test_a_line_without_the_separator_is_an_error() -> None:
    with pytest.raises(ValueError):
        mountinfo.parse_line("22 1 8:1 / / rw,relatime shared:1 ext4 /dev/sda1 rw")


def test_the_mount_on_top_wins(tmp_path: Path) -> None:
    f = tmp_path / "mountinfo"
    f.write_text(TEXT)
    entry = mountinfo.entry_of("/tmp/a b\tc\nd\\e", str(f))
    assert entry is not None and entry.mount_id == 43
    assert mountinfo.is_listed("/mnt/plain", str(f))
    assert not mountinfo.is_listed("/mnt", str(f))
    assert not mountinfo.is_listed("/tmp/a\\040b\\011c\\012d\\134e", str(f))  # the raw form
    # The mount's read-ahead tuning finds its device through the same parser.
    assert device_of(Path("/tmp/a b\tc\nd\\e"), str(f)) == "0:48"
    assert device_of(Path("/nowhere"), str(f)) is None


def test_a_missing_file_is_no_mounts(tmp_path: Path) -> None:
    assert mountinfo.read(str(tmp_path / "absent")) == []
    assert mountinfo.entry_of("/", str(tmp_path / "absent")) is None


def test_this_process_sees_its_root_mount() -> None:
    entry = mountinfo.entry_of("/")
    assert entry is not None and entry.mountpoint == "/"
    assert os.path.ismount("/")
