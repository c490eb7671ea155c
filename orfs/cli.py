"""The `orfs` command line: mount, unmount, sync, status, refresh, emulator, completion.

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
from typing import Any, Literal

import shtab

from orfs import __version__
from orfs.config import STATUS_XATTR, MountConfig, add_mount_arguments, config_from_args

STATUS_FILE = ".orfs-status"  # the same JSON as a file in the root (--no-xattr mounts)

# --------------------------------------------------------------------------- mount


def _complete(action: argparse.Action, kind: Literal["file", "dir"]) -> None:
    action.complete = shtab.FILE if kind == "file" else shtab.DIRECTORY  # type: ignore[attr-defined]


def _add_mount_arguments(p: argparse.ArgumentParser) -> None:
    mountpoint = add_mount_arguments(p, complete=_complete)
    mountpoint.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


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


def _mount_config(args: argparse.Namespace) -> MountConfig:
    return config_from_args(args, sloppy=getattr(args, "sloppy", False))


def _cmd_mount(args: argparse.Namespace) -> int:
    config = _mount_config(args)
    from orfs.fuse.mount import run_mount  # imports pyfuse3: only when mounting

    return run_mount(config)


# ----------------------------------------------------------------- status & friends


class StatusUnreadable(SystemExit):
    """The mount is there but its status could not be read (not: not an orfs mount)."""


def read_status(mountpoint: Path, *, full: bool = True) -> dict[str, Any]:
    """The mount's status: the root's `user.orfs.status` xattr, or its `.orfs-status`
    file (the same JSON, whole) for mounts made with --no-xattr, for an xattr too large
    to read (E2BIG, ERANGE), and, when `full`, for an xattr that says it left entries
    out (``truncated``). Counts and the pid are always whole in the xattr."""
    try:
        raw = os.getxattr(mountpoint, STATUS_XATTR)
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.E2BIG, errno.ERANGE):
            raise StatusUnreadable(
                f"orfs: cannot read the status of {mountpoint}: {e.strerror}") from None
        return _parse(_status_file(mountpoint), mountpoint)
    status = _parse(raw, mountpoint)
    if full and status.get("truncated") is True:
        return _parse(_status_file(mountpoint), mountpoint)
    return status


def _parse(raw: bytes, mountpoint: Path) -> dict[str, Any]:
    try:
        status = json.loads(raw)
    except ValueError:
        raise StatusUnreadable(f"orfs: the status of {mountpoint} is not JSON") from None
    if not isinstance(status, dict):
        raise StatusUnreadable(f"orfs: the status of {mountpoint} is not a JSON object")
    return status


def _status_file(mountpoint: Path) -> bytes:
    if os.path.ismount(mountpoint):
        try:
            return (mountpoint / STATUS_FILE).read_bytes()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StatusUnreadable(
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
    uploads = status.get("uploads")
    queued = (f", {status.get('queued', 0)} queued (async)"
              if isinstance(uploads, dict) and uploads.get("mode") == "async" else "")
    print(f"uploads:     {status.get('pending', 0)} pending, "
          f"{status.get('uploading', 0)} uploading, "
          f"{status.get('failed_count', len(failed))} failed{queued}")
    if status.get("waiting_bytes"):
        print(f"  waiting:   {_human(status['waiting_bytes'])} to upload")
    for f in failed:
        when = f.get("next_try")
        again = (f" (next try in {max(0, when - time.time()):.0f} s)"
                 if isinstance(when, (int, float)) else "")
        print(f"  failed: {f.get('path')}: {f.get('error')}{again}")
    print(f"cache:       {_human(cache.get('used', 0))} of {_human(cache.get('limit', 0))}")
    requests = status.get("requests", {})
    if requests:
        print("requests:    " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items())))
    print(f"errors:      {status.get('errors_count', len(errors))} in the last hour")
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
    status = read_status(Path(args.mountpoint), full=False)
    pid = status.get("pid")
    if not isinstance(pid, int):
        raise SystemExit("orfs: this mount does not say which process serves it")
    os.kill(pid, signal.SIGHUP)
    return 0


def _cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = Path(args.mountpoint).expanduser().absolute()
    deadline = time.monotonic() + args.timeout
    pid: int | None = None
    progress = _Progress(quiet=args.quiet)
    while True:
        try:
            status = read_status(mountpoint, full=False)
        except StatusUnreadable as e:
            # The mount is there but says nothing: its uploads may be in flight. Ask
            # again until the timeout, then refuse (never unmount blind).
            if _serving_process_gone(mountpoint):
                break  # nothing serves it (ENOTCONN): no upload can be in flight
            if time.monotonic() > deadline:
                print(f"{e.code}\norfs: not unmounting {mountpoint}: its uploads cannot "
                      f"be checked after {args.timeout:.0f} s (fusermount3 -u unmounts "
                      "anyway; journaled uploads resume at the next mount)", file=sys.stderr)
                return 1
            time.sleep(0.2)
            continue
        except SystemExit:
            break  # not (or no longer) an orfs mount: just unmount
        pid = status.get("pid") if isinstance(status.get("pid"), int) else None
        busy = (_count(status.get("pending")) + _count(status.get("queued"))
                + _count(status.get("uploading")))
        progress.show(busy, _count(status.get("waiting_bytes")), status)
        if busy == 0:
            progress.done()
            break
        if time.monotonic() > deadline:
            progress.done()
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


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


class _Progress:
    """One line on a terminal (stderr), rewritten in place: files and bytes left and the
    upload rate. Silent when stderr is not a terminal, or with --quiet."""

    def __init__(self, *, quiet: bool) -> None:
        self.on = not quiet and sys.stderr.isatty()
        self._first: tuple[float, int] | None = None
        self._shown = False

    def show(self, files: int, left: int, status: dict[str, Any]) -> None:
        if not self.on:
            return
        uploads = status.get("uploads")
        sent = _count(uploads.get("uploaded_bytes")) if isinstance(uploads, dict) else 0
        now = time.monotonic()
        if self._first is None:
            self._first = (now, sent)
        start, sent0 = self._first
        rate = (sent - sent0) / (now - start) if now - start > 0.5 else None
        line = f"orfs: {files} file(s), {_human(left)} left"
        if rate is not None:
            line += f", {_human(rate)}/s"
        print(f"\r\x1b[K{line}", end="", file=sys.stderr, flush=True)
        self._shown = True

    def done(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)
            self._shown = False


def _under(path: str, prefixes: list[str]) -> bool:
    return not prefixes or any(p == "" or path == p or path.startswith(p + "/")
                               for p in prefixes)


def _cmd_sync(args: argparse.Namespace) -> int:
    """Wait for the uploads queued by closes (--uploads async), or those under PATHs;
    exit 1 naming each failure (see docs/OPERATIONS.md, "orfs sync")."""
    mountpoint = Path(args.mountpoint).expanduser().absolute()
    prefixes: list[str] = []
    for raw in args.paths:
        path = Path(raw).expanduser().absolute()
        try:
            rel = path.relative_to(mountpoint)
        except ValueError:
            raise SystemExit(f"orfs: {raw} is not under {mountpoint}") from None
        prefixes.append("" if str(rel) == "." else str(rel))
    status = read_status(mountpoint, full=bool(prefixes))
    if args.retry:
        pid = status.get("pid")
        if not isinstance(pid, int):
            raise SystemExit("orfs: this mount does not say which process serves it")
        before = _retries(status)
        os.kill(pid, signal.SIGUSR1)
        end = time.monotonic() + 10
        while _retries(status) == before:  # until the mount has queued them again
            if time.monotonic() > end:
                raise SystemExit("orfs: the mount did not take the retry request")
            time.sleep(0.05)
            status = read_status(mountpoint, full=bool(prefixes))
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    progress = _Progress(quiet=args.quiet)
    while True:
        waiting = [w for w in status.get("waiting", []) if isinstance(w, dict)
                   and _under(str(w.get("path", "")), prefixes)]
        if prefixes:
            files, left = len(waiting), sum(_count(w.get("size")) for w in waiting)
        else:
            files, left = _count(status.get("waiting_count")), _count(
                status.get("waiting_bytes"))
        progress.show(files, left, status)
        if files == 0:
            break
        if deadline is not None and time.monotonic() > deadline:
            progress.done()
            print(f"orfs: {files} upload(s) still waiting after {args.timeout:.0f} s",
                  file=sys.stderr)
            return 1
        time.sleep(0.05)
        status = read_status(mountpoint, full=bool(prefixes))
    progress.done()
    if not prefixes and status.get("truncated"):
        status = read_status(mountpoint, full=True)  # every failure, not only the newest
    failed = [f for f in status.get("failed", []) if isinstance(f, dict)
              and _under(str(f.get("path", "")), prefixes)]
    for f in failed:
        when = f.get("next_try")
        again = (f"; next try in {max(0, when - time.time()):.0f} s"
                 if isinstance(when, (int, float)) else "")
        print(f"orfs: upload of {mountpoint / str(f.get('path'))} failed: "
              f"{f.get('error')}{again}", file=sys.stderr)
    return 1 if failed else 0


def _retries(status: dict[str, Any]) -> int:
    uploads = status.get("uploads")
    return _count(uploads.get("retry_requests")) if isinstance(uploads, dict) else 0


def _serving_process_gone(mountpoint: Path) -> bool:
    """A FUSE mount whose process died answers ENOTCONN to everything."""
    try:
        os.stat(mountpoint)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


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


def build_parser(*, emulator: bool = True) -> argparse.ArgumentParser:
    """The whole command line. ``emulator=False`` leaves out the emulator's own
    arguments (importing it costs a tenth of a second, which `orfs sync` after every
    copy should not pay); main() asks for them only when they can be needed."""
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
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress line while waiting (none either when not a terminal)")
    p.set_defaults(func=_cmd_unmount)

    p = sub.add_parser(
        "sync", help="wait for queued uploads; exit 1 naming each failure",
        description=(
            "Wait until every upload queued by a close (--uploads async) has landed, or "
            "those under PATHs, then print each failed upload (under PATHs) with its "
            "error on stderr and exit 1 if there is any. A terminal shows progress "
            "(files and bytes left, the rate)."))
    p.add_argument("mountpoint").complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files or folders under MOUNTPOINT (default: all)")
    p.add_argument("--retry", action="store_true",
                   help="first try every failed upload of the mount again")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up (exit 1) after this long (default: wait)")
    p.set_defaults(func=_cmd_sync)

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
    if emulator:
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


_COMMANDS = {"mount", "unmount", "umount", "sync", "status", "refresh", "emulator",
             "completion"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in _COMMANDS and not argv[0].startswith("-") and "-o" in argv:
        # `orfs SOURCE MOUNTPOINT -o OPTS`: how mount.fuse3 runs a `fuse.orfs` fstab
        # entry when there is no /sbin/mount.fuse.orfs (it runs the subtype by name, and
        # always passes -o). A mistyped command has no -o and still gets argparse's error.
        return mount_helper_main(argv)
    # Only a command line that may name the emulator, or ask for completion or help of
    # everything, needs its arguments.
    others = _COMMANDS - {"emulator", "completion"}
    args = build_parser(emulator=not argv or argv[0] not in others).parse_args(argv)
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
