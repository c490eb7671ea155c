"""Settings of one mount, and the one declaration of each mount option.

Each `MountConfig` field that a user can set carries an `Option`: its flag, its help, its
`-o` spelling and how to parse it. `orfs mount`, `-o name=value` (fstab, mount(8)),
`mount.orfs` and `python -m orfs.fuse` are all built from these declarations, so an
option exists everywhere or nowhere, with one default.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from orfs.units import parse_seconds, parse_size

DEFAULT_API_BASE = "https://openrouter.ai/api/v1"
DEFAULT_CACHE_MAX_SIZE = 10 * 1024**3
DEFAULT_DIR_CACHE_TTL = 10.0
MAX_FILE_SIZE = 100 * 1024 * 1024  # the API's upload limit (104,857,600 bytes)
STATUS_XATTR = "user.orfs.status"  # the mount root's status JSON (orfs status reads it)


def _path(text: str) -> Path:
    return Path(text).expanduser().absolute()


def _count(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


# The groups `orfs mount --help` shows, in order, with their blurbs.
GROUPS = {
    "access": "Which workspace to mount and who may use it. The API key is read from "
              "OPENROUTER_API_KEY or --api-key-file, never from the command line.",
    "cache": "Where bytes and listings are kept, and for how long.",
    "uploads": "When close() returns, and how uploads are sent (what close() returning "
               "0 promises in each mode: docs/SEMANTICS.md).",
    "logging": "What orfs says and where.",
    "api": "How long orfs waits for an API that does not answer (tests shorten these).",
}


@dataclasses.dataclass(frozen=True)
class Option:
    """How a user sets one `MountConfig` field.

    ``parse`` is None for a switch: the flag (or the bare `-o` name) stores ``switch``.
    The `-o` name is the first long flag without its dashes, dashes read as underscores;
    ``also`` lists other `-o` spellings (``ro``, ``noxattr``).
    """

    flags: tuple[str, ...]
    help: str
    group: str
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    switch: bool = True
    choices: tuple[str, ...] | None = None
    also: tuple[str, ...] = ()
    path: Literal["file", "dir"] | None = None  # for shell completion

    @property
    def o_name(self) -> str:
        long = next(f for f in self.flags if f.startswith("--"))
        return long[2:].replace("-", "_")


def _opt(default: Any, *flags: str, **kw: Any) -> Any:
    return dataclasses.field(default=default, metadata={"option": Option(flags, **kw)})


def _env_api_base() -> str:
    return os.environ.get("OPENROUTER_BASE_URL", DEFAULT_API_BASE)


@dataclasses.dataclass(frozen=True)
class MountConfig:
    mountpoint: Path
    api_base: str = _opt(
        DEFAULT_API_BASE, "--api-base", group="access", parse=str, metavar="URL",
        help="API base URL (default: $OPENROUTER_BASE_URL or %(default)s)")
    workspace: str | None = _opt(
        None, "--workspace", group="access", parse=str, metavar="ID",
        help="workspace id (default: the key's)")
    # None (OpenRouter storage) | "openai" | "anthropic"
    provider: str | None = _opt(
        None, "--provider", group="access", parse=str, choices=("openai", "anthropic"),
        help="store files with that provider (BYOK) instead of OpenRouter storage")
    api_key_file: Path | None = _opt(
        None, "--api-key-file", group="access", parse=_path, metavar="FILE", path="file",
        help="read the API key from FILE (must not be readable by group or others)")
    read_only: bool = _opt(
        False, "--read-only", group="access", also=("ro",),
        help="refuse every write (EROFS)")
    allow_other: bool = _opt(
        False, "--allow-other", group="access",
        help="let other users use the mount (needs user_allow_other in /etc/fuse.conf)")
    cache_dir: Path | None = _opt(  # None: derived by cache_root()
        None, "--cache-dir", group="cache", parse=_path, metavar="DIR", path="dir",
        help="cache directory (default: ~/.cache/orfs/<hash of api base, workspace, "
             "provider>)")
    cache_max_size: int = _opt(
        DEFAULT_CACHE_MAX_SIZE, "--cache-max-size", group="cache", parse=parse_size,
        metavar="SIZE",
        help="evict cached file contents above SIZE, e.g. 512M or 10G (default: 10G)")
    download_streams: int = _opt(
        4, "--download-streams", group="cache", parse=_count, metavar="N",
        help="ranged requests at once for one file read in sequence (default: "
             "%(default)s; 1: one stream per file); the mount uses at most 4×N at once")
    dir_cache_ttl: float = _opt(
        DEFAULT_DIR_CACHE_TTL, "--dir-cache-ttl", group="cache", parse=parse_seconds,
        metavar="SECONDS",
        help="seconds a listing is trusted before the workspace is listed again "
             "(default: %(default)s); outside changes show within this window")
    kernel_ttl: float = _opt(
        1.0, "--kernel-ttl", group="cache", parse=parse_seconds, metavar="SECONDS",
        help="seconds the kernel may keep names and attributes before asking orfs again "
             "(default: %(default)s)")
    temp_grace: float = _opt(
        2.0, "--temp-grace", group="cache", parse=parse_seconds, metavar="SECONDS",
        help="how long a closed file with a temporary-looking name (rsync's .name.XXXXXX, "
             "x.tmp, sedXXXXXX) waits for a rename before it is uploaded under its own "
             "name (default: %(default)s)")
    # False: stream an upload only at close, never while a sequential writer writes.
    chunked_upload: bool = _opt(
        True, "--no-chunked-upload", group="cache", switch=False,
        help="never stream an upload while the file is still being written "
             "(for deployments that refuse chunked request bodies)")
    # False: getxattr/listxattr answer ENOSYS, so the kernel stops sending them (ls -l
    # asks two per file); the status is then read from <mnt>/.orfs-status.
    xattrs: bool = _opt(
        True, "--no-xattr", group="cache", switch=False, also=("noxattr",),
        help="no extended attributes (user.openrouter.*, user.orfs.*): the kernel then "
             "stops sending xattr requests, a round trip fewer per file for tools that "
             "list every file's xattrs (cp -a or rsync -X out of the mount); orfs status "
             "reads MOUNTPOINT/.orfs-status instead")
    uploads: str = _opt(
        "sync", "--uploads", group="uploads", parse=str, choices=("sync", "async"),
        metavar="sync|async",
        help="sync (default): close() waits for the upload and returns the service's "
             "answer; async: close() returns once the bytes are durable on local disk and "
             "the upload runs in the background (errors in xattrs, orfs status, the log "
             "and orfs sync; fsync waits for the upload)")
    upload_streams: int = _opt(
        8, "--upload-streams", group="uploads", parse=_count, metavar="N",
        help="with --uploads async, how many queued files upload at once, oldest first "
             "(default: %(default)s)")
    retry_budget: float = _opt(
        20.0, "--retry-budget", group="api", parse=parse_seconds, metavar="SECONDS",
        help="how long an upload is retried; lists, retrieves, deletes and download "
             "opens retry for half of it and give up after all of it "
             "(default: %(default)s)")
    api_down_window: float = _opt(
        5.0, "--api-down-window", group="api", parse=parse_seconds, metavar="SECONDS",
        help="after the API failed, how long what needs it fails at once instead of "
             "waiting out its retries again; the first request that succeeds ends it "
             "(default: %(default)s)")
    foreground: bool = _opt(
        False, "-f", "--foreground", group="logging",
        help="stay in the foreground and log to stderr (default: return once mounted)")
    debug: bool = _opt(
        False, "-d", "--debug", group="logging",
        help="log one line per FUSE call and per API request (never the key)")
    log_file: Path | None = _opt(
        None, "--log-file", group="logging", parse=_path, metavar="FILE", path="file",
        help="log here when in the background (default: syslog)")

    def cache_root(self) -> Path:
        """The cache directory of this API base + workspace + provider."""
        if self.cache_dir is not None:
            return self.cache_dir
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orfs"
        key = f"{self.api_base}|{self.workspace or ''}|{self.provider or ''}"
        return base / hashlib.sha256(key.encode()).hexdigest()[:16]


def options() -> Iterator[tuple[str, Option, Any]]:
    """(field name, its Option, its default) for every settable mount option, in order."""
    for f in dataclasses.fields(MountConfig):
        opt = f.metadata.get("option")
        if opt is not None:
            yield f.name, opt, f.default


# -o options that mount(8), mount.fuse3, fstab and systemd pass and that mean nothing to
# orfs. Measured on Debian 12 (util-linux 2.38): mount(8) adds `rw` and passes `_netdev`,
# `nofail`; mount.fuse3 adds `dev,suid` as root; a user mount adds `user=NAME`.
_IGNORED_OPTIONS = {
    "rw", "_netdev", "noauto", "auto", "user", "users", "nouser", "nofail", "defaults",
    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "sync", "atime",
    "noatime", "relatime", "strictatime", "nodiratime", "owner", "group", "loop",
}
_IGNORED_PREFIXES = ("x-systemd.", "x-", "comment=", "fsname=", "subtype=", "user=")


def add_mount_arguments(
    p: argparse.ArgumentParser,
    complete: Callable[[argparse.Action, Literal["file", "dir"]], None] | None = None,
) -> argparse.Action:
    """Add MOUNTPOINT, every option's flag, and `-o`, to ``p``; returns MOUNTPOINT's action.

    ``complete`` is told of each path-valued action (the CLI hangs shell completion on it).
    """
    mountpoint = p.add_argument(
        "mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    groups = {name: p.add_argument_group(name, blurb) for name, blurb in GROUPS.items()}
    for name, opt, default in options():
        group = groups[opt.group]
        if name == "api_base":
            default = _env_api_base()
        if opt.parse is None:
            action = group.add_argument(
                *opt.flags, dest=name, default=default, help=opt.help,
                action="store_true" if opt.switch else "store_false")
        else:
            action = group.add_argument(
                *opt.flags, dest=name, default=default, help=opt.help, type=opt.parse,
                metavar=opt.metavar, choices=opt.choices)
        if opt.path is not None and complete is not None:
            complete(action, opt.path)
    p.add_argument(
        "-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
        help="mount options, as in fstab: any flag above as name[=value] "
        "(api_base=URL, api_key_file=FILE, workspace=ID, ro, allow_other, cache_dir=DIR, ...)",
    )
    return mountpoint


def apply_mount_options(
    args: argparse.Namespace, groups: Sequence[str], *, sloppy: bool = False
) -> None:
    """Fold `-o a=b,c` options into the parsed flags (fstab and mount(8) style).

    An unknown option is an error (SystemExit with the reason), unless ``sloppy``
    (`mount -s`) asked to ignore them.
    """
    by_name: dict[str, tuple[str, Option]] = {}
    for name, opt, _ in options():
        for spelling in (opt.o_name, *opt.also):
            by_name[spelling] = (name, opt)
    for group in groups:
        for raw in group.split(","):
            text = raw.strip()
            if not text or text in _IGNORED_OPTIONS or text.startswith(_IGNORED_PREFIXES):
                continue
            key, has_value, value = text.partition("=")
            key = key.replace("-", "_")
            if key == "api_key":
                raise SystemExit(
                    "orfs: the API key is never taken from options (they show in ps and "
                    "/proc/mounts); use api_key_file=FILE or OPENROUTER_API_KEY")
            found = by_name.get(key)
            if found is None or (found[1].parse is None) == bool(has_value):
                if sloppy:
                    print(f"orfs: ignoring unknown mount option {text!r} (sloppy)",
                          file=sys.stderr)
                    continue
                if found is not None:
                    need = "takes no value" if has_value else "needs a value (name=value)"
                    raise SystemExit(f"orfs: mount option {key!r} {need}")
                raise SystemExit(f"orfs: unknown mount option {text!r}")
            name, opt = found
            if opt.parse is None:
                setattr(args, name, opt.switch)
                continue
            if opt.choices is not None and value not in opt.choices:
                raise SystemExit(
                    f"orfs: -o {key} must be {' or '.join(opt.choices)}, not {value!r}")
            try:
                setattr(args, name, opt.parse(value))
            except ValueError as e:
                raise SystemExit(f"orfs: -o {key}: {e}") from None


def config_from_args(args: argparse.Namespace, *, sloppy: bool = False) -> MountConfig:
    """The MountConfig of parsed `add_mount_arguments` flags, after their `-o` options."""
    apply_mount_options(args, args.options, sloppy=sloppy)
    values = {name: getattr(args, name) for name, _, _ in options()}
    return MountConfig(mountpoint=_path(args.mountpoint), **values)
