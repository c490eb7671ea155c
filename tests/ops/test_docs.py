"""docs/OPERATIONS.md stays in step with the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

from orfs import cli, config

from .test_cli import _mount_actions

ROOT = Path(__file__).resolve().parents[2]
OPS = (ROOT / "docs" / "OPERATIONS.md").read_text()


def test_every_mount_flag_is_in_the_options_table() -> None:
    for action in _mount_actions():
        flag = action.option_strings[-1]
        name = flag.lstrip("-").replace("-", "_")
        assert re.search(rf"^\| `{name}[=` ]", OPS, re.M), f"-o {name} is not in the table"
        assert f"`{flag}`" in OPS or f"`{action.option_strings[0]}`" in OPS, flag


def test_every_ignored_option_is_listed() -> None:
    section = OPS.split("accepts and ignores", 1)[1].split("\n\n", 1)[0]
    atime_family = {"atime", "noatime", "relatime", "strictatime", "nodiratime"}
    assert "the `atime` family" in section
    for opt in config._IGNORED_OPTIONS - atime_family:
        assert f"`{opt}`" in section, opt
    for prefix in ("x-", "comment=", "fsname=", "subtype=", "user="):
        assert prefix in section, prefix


def test_the_fstab_recipe() -> None:
    assert 'ln -s "$(command -v mount.orfs)" /sbin/mount.fuse.orfs' in OPS
    line = next(line for line in OPS.splitlines() if line.startswith("orfs  /mnt/openrouter"))
    source, target, fstype, options, *_ = line.split()
    assert (source, fstype) == ("orfs", "fuse.orfs")
    for opt in ("_netdev", "nofail", "api_key_file="):
        assert opt in options
    assert 'ln -s "$(command -v mount.orfs)" /sbin/mount.fuse.orfs' in cli._MOUNT_EPILOG


def test_the_systemd_recipe() -> None:
    assert (ROOT / "contrib" / "orfs@.service").is_file()
    for text in ("cp ~/src/orfs/contrib/orfs@.service ~/.config/systemd/user/",
                 "systemctl --user enable --now orfs@openrouter",
                 "journalctl --user -u orfs@openrouter", "loginctl enable-linger"):
        assert text in OPS, text


def test_troubleshooting_covers_the_usual_errors() -> None:
    trouble = OPS.split("## 7. Troubleshooting", 1)[1]
    for text in ("Transport endpoint is not connected", "fusermount3 -u -z",
                 "user_allow_other", "Permission denied", "Operation not supported",
                 "File too large", "100 MiB"):
        assert text in trouble, text


def test_readme_links_here() -> None:
    assert "docs/OPERATIONS.md" in (ROOT / "README.md").read_text()
