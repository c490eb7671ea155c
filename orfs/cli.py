"""The `orfs` command line: mount, unmount, status, refresh, emulator, completion.

Every `orfs mount` flag is also a `-o name=value` option (with dashes or
underscores), which is what `mount -t fuse.orfs` and /etc/fstab pass through the
`mount.orfs` helper.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import shtab

from orfs import __version__
from orfs.config import (
    DEFAULT_API_BASE,
    DEFAULT_CACHE_MAX_SIZE,
    DEFAULT_DIR_CACHE_TTL,
    STATUS_XATTR,
    MountConfig,
    parse_size,
)

STATUS_FILE = ".orfs-status"  # the same JSON as a file in the root (--no-xattr mounts)

# -o options that mount(8), mount.fuse3, fstab and systemd pass and that mean nothing to
# orfs. Measured on Debian 12 (util-linux 2.38): mount(8) adds `rw` and passes `_netdev`,
# `nofail`; mount.fuse3 adds `dev,suid` as root; a user mount adds `user=NAME`.
_IGNORED_OPTIONS = {
    "rw", "_netdev", "noauto", "auto", "user", "users", "nouser", "nofail", "defaults",
    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "sync", "atime",
    "noatime", "relatime", "strictatime", "nodiratime", "owner", "group", "loop",
}
_IGNORED_PREFIXES = ("x-systemd.", "x-", "comment=", "fsname=", "subtype=", "user=")


# --------------------------------------------------------------------------- mount


def _add_mount_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory"
    ).complete = (  # type: ignore[attr-defined]
        shtab.DIRECTORY
    )
    access = p.add_argument_group(
        "access",
        "Which workspace to mount and who may use it. The API key is read from "
        "OPENROUTER_API_KEY or --api-key-file, never from the command line.",
    )
    access.add_argument(
        "--api-base", metavar="URL",
        default=os.environ.get("OPENROUTER_BASE_URL", DEFAULT_API_BASE),
        help="API base URL (default: $OPENROUTER_BASE_URL or %(default)s)",
    )
    access.add_argument("--workspace", metavar="ID", help="workspace id (default: the key's)")
    access.add_argument(
        "--provider", choices=["openai", "anthropic"],
        help="store files with that provider (BYOK) instead of OpenRouter storage",
    )
    access.add_argument(
        "--api-key-file", metavar="FILE", type=Path,
        help="read the API key from FILE (must not be readable by group or others)",
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    access.add_argument("--read-only", action="store_true", help="refuse every write (EROFS)")
    access.add_argument(
        "--allow-other", action="store_true",
        help="let other users use the mount (needs user_allow_other in /etc/fuse.conf)",
    )

    cache = p.add_argument_group("cache", "Where bytes and listings are kept, and for how long.")
    cache.add_argument(
        "--cache-dir", metavar="DIR", type=Path,
        help="cache directory (default: ~/.cache/orfs/<hash of api base, workspace, provider>)",
    ).complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    cache.add_argument(
        "--cache-max-size", metavar="SIZE", type=parse_size, default=DEFAULT_CACHE_MAX_SIZE,
        help="evict cached file contents above SIZE, e.g. 512M or 10G (default: 10G)",
    )
    cache.add_argument(
        "--dir-cache-ttl", metavar="SECONDS", type=float, default=DEFAULT_DIR_CACHE_TTL,
        help="seconds a listing is trusted before the workspace is listed again "
        "(default: %(default)s); outside changes show within this window",
    )
    cache.add_argument(
        "--temp-grace", metavar="SECONDS", type=float, default=2.0,
        help="how long a closed file with a temporary-looking name (rsync's .name.XXXXXX, "
        "x.tmp, sedXXXXXX) waits for a rename before it is uploaded under its own name "
        "(default: %(default)s)",
    )
    cache.add_argument(
        "--no-chunked-upload", dest="chunked_upload", action="store_false",
        help="never stream an upload while the file is still being written "
        "(for deployments that refuse chunked request bodies)",
    )
    cache.add_argument(
        "--no-xattr", dest="xattrs", action="store_false",
        help="no extended attributes (user.openrouter.*, user.orfs.*): the kernel then "
        "stops sending xattr requests, a round trip fewer per file for tools that list "
        "every file's xattrs (cp -a or rsync -X out of the mount); orfs status reads "
        "MOUNTPOINT/.orfs-status instead",
    )

    logging_ = p.add_argument_group("logging", "What orfs says and where.")
    logging_.add_argument(
        "-f", "--foreground", action="store_true",
        help="stay in the foreground and log to stderr (default: return once mounted)",
    )
    logging_.add_argument(
        "--debug", action="store_true",
        help="log one line per FUSE call and per API request (never the key)",
    )
    logging_.add_argument(
        "--log-file", metavar="FILE", type=Path,
        help="log here when in the background (default: syslog)",
    ).complete = shtab.FILE  # type: ignore[attr-defined]

    p.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
        help="mount options, as in fstab: any flag above as name[=value] "
        "(api_base=URL, api_key_file=FILE, workspace=ID, ro, allow_other, cache_dir=DIR, ...)",
    )


_MOUNT_EPILOG = """\
examples:
  export OPENROUTER_API_KEY=...        # or --api-key-file ~/.config/orfs/key (chmod 600)
  orfs mount ~/openrouter               # returns once mounted
  ls -l ~/openrouter; cp report.pdf ~/openrouter/
  orfs status ~/openrouter
  orfs unmount ~/openrouter             # waits for uploads in flight

fstab:
  orfs /mnt/openrouter fuse.orfs _netdev,api_key_file=/etc/orfs/key 0 0
  (needs: ln -s "$(command -v mount.orfs)" /sbin/mount.fuse.orfs)

environment:
  OPENROUTER_API_KEY   the API key, when --api-key-file is not given
  OPENROUTER_BASE_URL  the default of --api-base
  XDG_CACHE_HOME       where the default cache directory goes (~/.cache)
  NOTIFY_SOCKET        set by systemd: with -f, orfs sends READY=1 once mounted

signals:
  SIGHUP               drop the listing cache now (what orfs refresh sends)
  SIGTERM, SIGINT      finish uploads in flight, then unmount and exit

See docs/SEMANTICS.md for what each call does and docs/OPERATIONS.md for running it
(fstab, systemd, logs, the cache, troubleshooting).
"""


class _ManFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs to the terminal, keeps indented blocks (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        out = []
        for para in paragraphs:
            lines = para.splitlines()
            if any(line[:1].isspace() for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)


def _apply_options(args: argparse.Namespace, options: Sequence[str]) -> None:
    """Fold `-o a=b,c` options into the parsed flags (fstab and mount(8) style).

    An unknown option is an error, unless `mount -s` (sloppy) asked to ignore them.
    """
    for group in options:
        for raw in group.split(","):
            opt = raw.strip()
            if not opt or opt in _IGNORED_OPTIONS or opt.startswith(_IGNORED_PREFIXES):
                continue
            name, has_value, value = opt.partition("=")
            name = name.replace("-", "_")
            if name == "ro":
                args.read_only = True
            elif name in ("read_only", "allow_other", "debug", "foreground"):
                setattr(args, name, True)
            elif name == "no_chunked_upload":
                args.chunked_upload = False
            elif name in ("no_xattr", "noxattr"):
                args.xattrs = False
            elif name in ("api_base", "workspace", "provider") and has_value:
                if name == "provider" and value not in ("openai", "anthropic"):
                    raise SystemExit(
                        f"orfs: -o provider must be openai or anthropic, not {value!r}")
                setattr(args, name, value)
            elif name in ("api_key_file", "cache_dir", "log_file") and has_value:
                setattr(args, name, Path(value))
            elif name == "cache_max_size" and has_value:
                args.cache_max_size = parse_size(value)
            elif name == "dir_cache_ttl" and has_value:
                args.dir_cache_ttl = float(value)
            elif name == "temp_grace" and has_value:
                args.temp_grace = float(value)
            elif name == "api_key":
                raise SystemExit(
                    "orfs: the API key is never taken from options (they show in ps and "
                    "/proc/mounts); use api_key_file=FILE or OPENROUTER_API_KEY"
                )
            elif getattr(args, "sloppy", False):
                print(f"orfs: ignoring unknown mount option {opt!r} (sloppy)", file=sys.stderr)
            else:
                raise SystemExit(f"orfs: unknown mount option {opt!r}")


def _mount_config(args: argparse.Namespace) -> MountConfig:
    _apply_options(args, args.options)
    return MountConfig(
        mountpoint=Path(args.mountpoint).expanduser().absolute(),
        api_base=args.api_base,
        workspace=args.workspace,
        provider=args.provider,
        read_only=args.read_only,
        allow_other=args.allow_other,
        cache_dir=args.cache_dir.expanduser().absolute() if args.cache_dir else None,
        cache_max_size=args.cache_max_size,
        dir_cache_ttl=args.dir_cache_ttl,
        foreground=args.foreground,
        debug=args.debug,
        log_file=args.log_file.expanduser().absolute() if args.log_file else None,
        api_key_file=args.api_key_file.expanduser().absolute() if args.api_key_file else None,
        chunked_upload=args.chunked_upload,
        temp_grace=args.temp_grace,
        xattrs=args.xattrs,
    )


def _cmd_mount(args: argparse.Namespace) -> int:
    config = _mount_config(args)
    from orfs.fuse.mount import run_mount  # imports pyfuse3: only when mounting

    return run_mount(config)


# ----------------------------------------------------------------- status & friends


def read_status(mountpoint: Path) -> dict[str, Any]:
    """The JSON of the mount root's `user.orfs.status` xattr, or of its `.orfs-status`
    file (the same JSON, for mounts made with --no-xattr)."""
    try:
        raw = os.getxattr(mountpoint, STATUS_XATTR)
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise SystemExit(
                f"orfs: cannot read the status of {mountpoint}: {e.strerror}") from None
        raw = _status_file(mountpoint)
    status: dict[str, Any] = json.loads(raw)
    return status


def _status_file(mountpoint: Path) -> bytes:
    if os.path.ismount(mountpoint):
        try:
            return (mountpoint / STATUS_FILE).read_bytes()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise SystemExit(
                f"orfs: cannot read the status of {mountpoint}: {e.strerror}") from None
    raise SystemExit(f"orfs: {mountpoint} is not an orfs mount")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _cmd_status(args: argparse.Namespace) -> int:
    status = read_status(Path(args.mountpoint))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    cache = status.get("cache", {})
    failed = status.get("failed", [])
    errors = status.get("errors_last_hour", [])
    print(f"mountpoint:  {status.get('mountpoint', args.mountpoint)}")
    print(f"api base:    {status.get('api_base', '?')}")
    if status.get("workspace"):
        print(f"workspace:   {status['workspace']}")
    if status.get("provider"):
        print(f"provider:    {status['provider']}")
    print(f"uploads:     {status.get('pending', 0)} pending, "
          f"{status.get('uploading', 0)} uploading, {len(failed)} failed")
    for f in failed:
        print(f"  failed: {f.get('path')}: {f.get('error')}")
    print(f"cache:       {_human(cache.get('used', 0))} of {_human(cache.get('limit', 0))}")
    requests = status.get("requests", {})
    if requests:
        print("requests:    " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items())))
    print(f"errors:      {len(errors)} in the last hour")
    for e in errors[-5:]:
        print(f"  {_error_line(e)}")
    return 1 if failed else 0


def _error_line(e: Any) -> str:
    """One entry of errors_last_hour, {"time": unix seconds, "message": ...}, as a line."""
    if isinstance(e, dict) and "message" in e:
        when = e.get("time")
        stamp = time.strftime("%H:%M:%S", time.localtime(when)) if isinstance(
            when, (int, float)) else "?"
        return f"{stamp} {e['message']}"
    return str(e)


def _cmd_refresh(args: argparse.Namespace) -> int:
    status = read_status(Path(args.mountpoint))
    pid = status.get("pid")
    if not isinstance(pid, int):
        raise SystemExit("orfs: this mount does not say which process serves it")
    os.kill(pid, signal.SIGHUP)
    return 0


def _cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = Path(args.mountpoint).expanduser().absolute()
    deadline = time.monotonic() + args.timeout
    pid: int | None = None
    while True:
        try:
            status = read_status(mountpoint)
        except SystemExit:
            break  # not (or no longer) a live orfs mount: just unmount
        pid = status.get("pid") if isinstance(status.get("pid"), int) else None
        busy = int(status.get("pending", 0)) + int(status.get("uploading", 0))
        if busy == 0:
            break
        if time.monotonic() > deadline:
            print(f"orfs: {busy} upload(s) still in flight after {args.timeout:.0f} s; "
                  "unmounting anyway (they stay journaled and resume at the next mount)",
                  file=sys.stderr)
            break
        time.sleep(0.2)
    fusermount = shutil.which("fusermount3") or "fusermount3"
    cmd = [fusermount, "-u"] + (["-z"] if args.lazy else []) + [str(mountpoint)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"orfs: {result.stderr.strip() or 'fusermount3 failed'}", file=sys.stderr)
        return 1
    # The serving process finishes what it holds, then exits; wait for it briefly.
    if pid is not None:
        end = time.monotonic() + args.timeout
        while time.monotonic() < end and _running(pid):
            time.sleep(0.1)
    return 0


def _running(pid: int) -> bool:
    """True while `pid` runs. A zombie has finished: its parent (a shell, a test
    harness, `orfs mount -f` under a supervisor) just has not reaped it yet."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _cmd_completion(args: argparse.Namespace) -> int:
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _cmd_emulator(args: argparse.Namespace) -> int:
    from orfs.emulator.server import run

    return run(args)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orfs",
        description="Mount an OpenRouter Files workspace as a directory.",
        formatter_class=_ManFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "mount", help="mount a workspace", description=(
            "Mount an OpenRouter Files workspace at MOUNTPOINT.\n\n"
            "Returns once the mount is live and keeps serving in the background (-f "
            "stays in the foreground). The key is checked with one request first: a bad "
            "key or an unreachable API is a clear message and a non-zero exit, with "
            "nothing mounted."),
        epilog=_MOUNT_EPILOG, formatter_class=_ManFormatter,
    )
    _add_mount_arguments(p)
    p.set_defaults(func=_cmd_mount)

    p = sub.add_parser("unmount", aliases=["umount"],
                       help="finish uploads in flight, then unmount")
    p.add_argument("mountpoint").complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="longest wait for uploads (default: %(default)s)")
    p.add_argument("-z", "--lazy", action="store_true", help="lazy unmount (fusermount3 -z)")
    p.set_defaults(func=_cmd_unmount)

    p = sub.add_parser("status", help="uploads, cache and requests of a mount")
    p.add_argument("mountpoint").complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    p.add_argument("--json", action="store_true", help="print the raw JSON, for scripts")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("refresh", help="drop the listing cache of a mount now")
    p.add_argument("mountpoint").complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    p.set_defaults(func=_cmd_refresh)

    p = sub.add_parser(
        "emulator", help="run a local emulator of the OpenRouter Files API",
        description="Serve the OpenRouter Files API wire contract locally (see docs/EMULATOR.md).",
    )
    try:
        from orfs.emulator.server import add_arguments
    except ImportError:  # the emulator extra is not installed
        p.set_defaults(func=lambda _a: _missing_extra())
    else:
        add_arguments(p)
        p.set_defaults(func=_cmd_emulator)

    p = sub.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=_cmd_completion)
    return parser


def _missing_extra() -> int:
    print("orfs: the emulator needs the 'emulator' extra: pip install 'orfs[emulator]'",
          file=sys.stderr)
    return 2


_COMMANDS = {"mount", "unmount", "umount", "status", "refresh", "emulator", "completion"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in _COMMANDS and not argv[0].startswith("-") and "-o" in argv:
        # `orfs SOURCE MOUNTPOINT -o OPTS`: how mount.fuse3 runs a `fuse.orfs` fstab
        # entry when there is no /sbin/mount.fuse.orfs (it runs the subtype by name, and
        # always passes -o). A mistyped command has no -o and still gets argparse's error.
        return mount_helper_main(argv)
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


def mount_helper_main(argv: Sequence[str] | None = None) -> int:
    """`mount.orfs SOURCE MOUNTPOINT [-o OPTIONS] [-f] [-n] [-s] [-v]`, as mount(8) calls it.

    SOURCE is a label (fstab's first field, e.g. `orfs`) and is otherwise ignored.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="mount.orfs", description=mount_helper_main.__doc__)
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("-o", dest="options", action="append", default=[])
    p.add_argument("-f", dest="fake", action="store_true", help="fake: do everything but mount")
    p.add_argument("-n", dest="nomtab", action="store_true", help="ignored (no mtab)")
    p.add_argument("-s", dest="sloppy", action="store_true", help="ignored")
    p.add_argument("-v", dest="verbose", action="store_true", help="ignored")
    h = p.parse_args(argv)
    if h.fake:
        return 0
    mount_argv = ["mount", h.mountpoint]
    for o in h.options:
        mount_argv += ["-o", o]
    args = build_parser().parse_args(mount_argv)
    args.sloppy = h.sloppy
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
