"""contrib/orfs@.service: a user unit that systemd accepts, whose commands orfs accepts.

`systemd-analyze --user verify` needs no running user manager when it is given a
runtime directory; HOME points at a temporary home whose ~/.local/bin/orfs is this
virtualenv's, so the unit is checked unchanged, including that ExecStart= exists.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from orfs import cli

from .conftest import ORFS

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "orfs@.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's ini dialect: sections, repeatable keys, '#'/';' comments, '\\' continuation."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def _expand(value: str, home: str = "/home/u", instance: str = "openrouter") -> list[str]:
    return shlex.split(value.replace("%h", home).replace("%i", instance))


def test_unit_shape() -> None:
    unit = _unit()
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service.get("NotifyAccess", ["main"]) == ["main"]
    assert len(service["ExecStart"]) == 1 and len(service["ExecStop"]) == 1
    assert unit["Install"]["WantedBy"] == ["default.target"]  # a user unit's target


def test_execstart_is_a_foreground_mount_orfs_accepts() -> None:
    argv = _expand(_unit()["Service"]["ExecStart"][0])
    assert Path(argv[0]).name == "orfs"
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "mount"
    # Type=notify needs the process systemd started to be the mount (no daemonizing).
    assert args.foreground
    assert args.mountpoint == "/home/u/openrouter"
    assert args.api_key_file == Path("/home/u/.config/orfs/key")


def test_execstop_unmounts_after_uploads_within_the_stop_timeout() -> None:
    service = _unit()["Service"]
    argv = _expand(service["ExecStop"][0])
    assert Path(argv[0]).name == "orfs"
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command in ("unmount", "umount")
    assert args.mountpoint == "/home/u/openrouter"
    assert not args.lazy  # a lazy unmount would not wait for open files
    # orfs unmount waits up to --timeout for uploads; systemd must give it that long.
    stop_timeout = float(service["TimeoutStopSec"][0].removesuffix("s"))
    assert stop_timeout > args.timeout


def test_the_mountpoint_is_created_first() -> None:
    pre = [_expand(v) for v in _unit()["Service"].get("ExecStartPre", [])]
    assert ["/usr/bin/mkdir", "-p", "/home/u/openrouter"] in pre


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: run ./scripts/setup"
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "orfs").symlink_to(ORFS)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "SYSTEMD_LOG_COLOR": "0"}
    env.pop("XDG_CONFIG_HOME", None)
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(UNIT, units / UNIT.name)
    # The template as installed, and an instance of it.
    shutil.copy(UNIT, units / "orfs@openrouter.service")
    for name in (UNIT.name, "orfs@openrouter.service"):
        r = subprocess.run([analyze, "--user", "verify", str(units / name)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        # verify exits 0 on warnings (unknown keys, bad values): none allowed.
        assert r.stderr.strip() == "", r.stderr
