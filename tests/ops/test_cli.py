"""The command line without a mount: --version, man-page help, and how `mount.orfs` (and
`orfs SOURCE MNT -o ...`, as mount.fuse3 runs it) turn what mount(8) passes into a
MountConfig. The argv shapes below are the ones measured on Debian 12 (util-linux 2.38.1,
fuse3 3.14) with a logging stand-in for the helper; docs/OPERATIONS.md lists them.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from orfs import __version__, cli, units
from orfs.config import MountConfig

from .conftest import ORFS, run

Captured = list[MountConfig]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Captured:
    """Replace the real mount with one that records the MountConfig it would mount."""
    seen: Captured = []

    def fake_mount(args: argparse.Namespace) -> int:
        seen.append(cli._mount_config(args))
        return 0

    monkeypatch.setattr(cli, "_cmd_mount", fake_mount)
    return seen


# ------------------------------------------------------------------ version and help


def test_version() -> None:
    r = run([str(ORFS), "--version"])
    assert r.returncode == 0
    assert r.stdout.strip() == f"orfs {__version__}"


def _help(*argv: str, columns: int = 80) -> str:
    r = run([str(ORFS), *argv, "--help"], env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_mount_help_has_the_option_groups_in_order() -> None:
    text = _help("mount")
    headings = [line[:-1] for line in text.splitlines() if re.fullmatch(r"[a-z]+:", line)]
    for group in ("access", "cache", "logging", "examples", "fstab", "environment", "signals"):
        assert group in headings, f"no '{group}:' section in orfs mount --help"
    order = [headings.index(g) for g in ("access", "cache", "logging")]
    assert order == sorted(order)


def _section(text: str, heading: str) -> str:
    m = re.search(rf"^{heading}:\n(.*?)(?=^\S|\Z)", text, re.S | re.M)
    assert m, heading
    return m.group(1)


@pytest.mark.parametrize("group, flags", [
    ("access", ["--api-base", "--workspace", "--provider", "--api-key-file", "--read-only",
                "--allow-other"]),
    ("cache", ["--cache-dir", "--cache-max-size", "--dir-cache-ttl", "--no-chunked-upload"]),
    ("logging", ["--foreground", "--debug", "--log-file"]),
])
def test_each_flag_is_in_its_group(group: str, flags: list[str]) -> None:
    section = _section(_help("mount"), group)
    for flag in flags:
        assert re.search(rf"^\s+(-\w, )?{flag}\b", section, re.M), f"{flag} not under {group}:"


def test_mount_help_prose_is_wrapped_to_the_terminal() -> None:
    for columns in (60, 100):
        text = _help("mount", columns=columns)
        prose = text.split("\nexamples:")[0]  # the examples are kept as written
        too_long = [line for line in prose.splitlines() if len(line) > columns]
        assert not too_long, too_long


def test_mount_help_says_where_the_key_comes_from() -> None:
    text = _help("mount")
    assert "OPENROUTER_API_KEY" in text
    assert "never from the command line" in text
    assert "docs/OPERATIONS.md" in text


def test_top_level_help_lists_the_commands() -> None:
    text = _help()
    for cmd in ("mount", "unmount", "status", "refresh", "completion"):
        assert re.search(rf"^\s+{cmd}\s", text, re.M), cmd


# --------------------------------------------------- every flag is also a -o option


def _mount_actions() -> list[argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    mount = sub.choices["mount"]
    return [a for a in mount._actions
            if a.option_strings and a.dest not in ("help", "options")]


def _sample(action: argparse.Action) -> str:
    if action.choices:
        return str(list(action.choices)[-1])
    if action.type is units.parse_size:
        return "64M"
    if action.type is units.parse_seconds:
        return "2.5"
    if action.metavar in ("FILE", "DIR"):
        return "/srv/orfs/x"
    if action.metavar == "N":
        return "3"
    return "sample-value"


@pytest.mark.parametrize("action", _mount_actions(), ids=lambda a: a.option_strings[-1])
def test_every_mount_flag_is_also_a_dash_o_option(
    action: argparse.Action, captured: Captured
) -> None:
    flag = action.option_strings[-1]
    name = flag.lstrip("-").replace("-", "_")
    if action.nargs == 0:
        flag_argv, opt = [flag], name
    else:
        value = _sample(action)
        flag_argv, opt = [flag, value], f"{name}={value}"
    assert cli.main(["mount", "/mnt/x", *flag_argv]) == 0
    assert cli.main(["mount", "/mnt/x", "-o", opt]) == 0
    by_flag, by_option = captured
    assert by_flag == by_option, f"-o {opt} does not do what {flag} does"
    assert by_flag != MountConfig(mountpoint=Path("/mnt/x")), f"{flag} changed nothing"


def test_dashes_work_in_option_names_too(captured: Captured) -> None:
    cli.main(["mount", "/mnt/x", "-o", "cache-max-size=1G,dir-cache-ttl=3"])
    assert captured[0].cache_max_size == 1024**3 and captured[0].dir_cache_ttl == 3.0


def test_the_key_is_never_an_option(captured: Captured) -> None:
    with pytest.raises(SystemExit, match="api_key_file"):
        cli.main(["mount", "/mnt/x", "-o", "api_key=sk-or-v1-secret"])
    assert not captured


def test_an_unknown_option_is_an_error(captured: Captured) -> None:
    with pytest.raises(SystemExit, match="unknown mount option 'colour=blue'"):
        cli.main(["mount", "/mnt/x", "-o", "colour=blue"])


# ------------------------------------------------------ what mount(8) passes the helper

HelperCall = Callable[..., MountConfig]


@pytest.fixture
def helper(captured: Captured) -> HelperCall:
    def call(*argv: str, entry: Callable[[list[str]], int] = cli.mount_helper_main) -> MountConfig:
        assert entry(list(argv)) == 0
        assert len(captured) == 1
        return captured.pop()
    return call


def test_helper_as_mount_8_calls_it(helper: HelperCall) -> None:
    # mount -t fuse.orfs orfs /mnt/x -o api_base=...,api_key_file=...,cache_dir=...
    c = helper("orfs", "/mnt/x", "-o",
               "rw,api_base=http://127.0.0.1:9/api/v1,api_key_file=/etc/orfs/key,"
               "cache_dir=/var/cache/orfs")
    assert c.mountpoint == Path("/mnt/x")
    assert c.api_base == "http://127.0.0.1:9/api/v1"
    assert c.api_key_file == Path("/etc/orfs/key")
    assert c.cache_dir == Path("/var/cache/orfs")
    assert not c.foreground and not c.read_only


def test_helper_ignores_what_fstab_and_systemd_add(helper: HelperCall) -> None:
    # An fstab line's options as mount(8) forwards them (it drops noauto and x-*, but a
    # helper run by hand or by an older mount may still see them).
    c = helper("/some/canonicalised/orfs", "/mnt/x", "-o",
               "rw,workspace=ws-1,_netdev,nofail,noauto,auto,defaults,user,users,nouser,"
               "user=alice,exec,suid,dev,nosuid,nodev,relatime,noatime,"
               "x-systemd.automount,x-systemd.mount-timeout=30,x-systemd.idle-timeout=1min,"
               "x-gvfs-show,comment=systemd.automount")
    assert c.workspace == "ws-1"
    assert c == MountConfig(mountpoint=Path("/mnt/x"), workspace="ws-1")


def test_helper_takes_ro_and_flags_as_options(helper: HelperCall) -> None:
    c = helper("orfs", "/mnt/x", "-o", "ro,allow_other,debug,dir_cache_ttl=60,cache_max_size=2G")
    assert c.read_only and c.allow_other and c.debug
    assert c.dir_cache_ttl == 60.0 and c.cache_max_size == 2 * 1024**3


def test_helper_accepts_dash_o_anywhere_and_repeated(helper: HelperCall) -> None:
    a = helper("-o", "workspace=w", "orfs", "/mnt/x", "-o", "ro")
    b = helper("orfs", "-o", "workspace=w", "/mnt/x", "-o", "ro")
    c = helper("orfs", "/mnt/x", "-o", "workspace=w,ro")
    assert a == b == c and a.read_only and a.workspace == "w"


def test_helper_accepts_mounts_own_flags(helper: HelperCall) -> None:
    # mount -v -s passes `-s -v`; mount -n passes `-n` (measured).
    c = helper("orfs", "/mnt/x", "-s", "-v", "-n", "-o", "rw,workspace=w")
    assert c.workspace == "w"


def test_sloppy_ignores_unknown_options(helper: HelperCall, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    c = helper("orfs", "/mnt/x", "-s", "-o", "rw,colour=blue,workspace=w")
    assert c.workspace == "w"
    assert "colour=blue" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="colour=blue"):
        cli.mount_helper_main(["orfs", "/mnt/x", "-o", "colour=blue"])


def test_fake_mount_does_nothing(captured: Captured) -> None:
    # mount -f (fake) passes -f to the helper: everything but the mount.
    assert cli.mount_helper_main(["orfs", "/mnt/x", "-f", "-o", "rw"]) == 0
    assert not captured


def test_orfs_runs_as_mount_fuse3_calls_it(helper: HelperCall) -> None:
    # With no /sbin/mount.fuse.orfs, mount.fuse3 runs the subtype by name:
    #   sh -c "'orfs' 'orfs' '/mnt/x' '-o' 'rw,...,dev,suid'"
    c = helper("orfs", "/mnt/x", "-o", "rw,api_base=http://127.0.0.1:9/api/v1,dev,suid",
               entry=cli.main)
    assert c.api_base == "http://127.0.0.1:9/api/v1"


def test_a_mistyped_command_is_not_taken_for_a_mount(captured: Captured) -> None:
    with pytest.raises(SystemExit):
        cli.main(["stauts", "/mnt/x"])
    assert not captured


def test_no_home_no_path(captured: Captured, monkeypatch: pytest.MonkeyPatch) -> None:
    # mount(8) runs helpers with HOME and PATH removed (measured); the default cache
    # directory must still be the user's.
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("PATH", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cli.mount_helper_main(["orfs", "/mnt/x", "-o", "rw"]) == 0
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert str(captured[0].cache_root()).startswith(f"{home}/.cache/orfs/")


def test_mount_orfs_console_script_exists() -> None:
    from .conftest import MOUNT_ORFS

    r = run([str(MOUNT_ORFS), "--help"])
    assert r.returncode == 0
    assert "SOURCE" in r.stdout.upper() and "-o" in r.stdout


def test_the_mount_fuse3_form_knows_every_command() -> None:
    # main() tells `orfs SOURCE MNT -o ...` from a command by this set: keep it whole.
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert cli._COMMANDS == set(sub.choices)


# ------------------------------------------- one declaration, every place that takes it

def test_python_m_orfs_fuse_takes_the_same_options() -> None:
    """The test and debug entry point parses exactly what `orfs mount` parses."""
    from orfs.fuse import __main__ as fuse_main

    argv = ["/mnt/x", "--cache-max-size", "1G", "--kernel-ttl", "0", "--no-xattr",
            "-o", "ro,temp_grace=0.5,provider=openai"]
    seen: list[MountConfig] = []

    def fake_run(c: MountConfig) -> int:
        seen.append(c)
        return 0

    mp = pytest.MonkeyPatch()
    mp.setattr(fuse_main, "run_mount", fake_run)
    try:
        assert fuse_main.main(argv) == 0
    finally:
        mp.undo()
    by_cli = cli._mount_config(cli.build_parser().parse_args(["mount", *argv]))
    assert seen == [by_cli]
    assert by_cli.read_only and not by_cli.xattrs and by_cli.kernel_ttl == 0
    assert by_cli.temp_grace == 0.5 and by_cli.cache_max_size == 1024**3


def test_a_switch_given_a_value_or_a_value_option_without_one_is_refused() -> None:
    with pytest.raises(SystemExit, match="'read_only' takes no value"):
        cli.main(["mount", "/mnt/x", "-o", "read_only=yes"])
    with pytest.raises(SystemExit, match="'cache_max_size' needs a value"):
        cli.main(["mount", "/mnt/x", "-o", "cache_max_size"])
    with pytest.raises(SystemExit, match="not a size"):
        cli.main(["mount", "/mnt/x", "-o", "cache_max_size=lots"])
