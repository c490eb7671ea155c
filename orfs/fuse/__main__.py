"""``python -m orfs.fuse MOUNTPOINT [options]``: the mount without the rest of the CLI.

Handy for tests and debugging; `orfs mount` is the user's command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orfs.config import DEFAULT_API_BASE, MountConfig, parse_size
from orfs.fuse.mount import run_mount


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orfs.fuse")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--api-base", default=DEFAULT_API_BASE)
    p.add_argument("--workspace")
    p.add_argument("--provider", choices=("openai", "anthropic"))
    p.add_argument("--api-key-file", type=Path)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--cache-max-size", type=parse_size, default=None)
    p.add_argument("--dir-cache-ttl", type=float, default=None)
    p.add_argument("--kernel-ttl", type=float, default=None)
    p.add_argument("--temp-grace", type=float, default=None)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--allow-other", action="store_true")
    p.add_argument("--no-chunked-upload", action="store_true")
    p.add_argument("--no-xattr", action="store_true")
    p.add_argument("-f", "--foreground", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")
    p.add_argument("--log-file", type=Path)
    a = p.parse_args(argv)
    extra = {k: v for k, v in (("cache_max_size", a.cache_max_size),
                                ("dir_cache_ttl", a.dir_cache_ttl),
                                ("kernel_ttl", a.kernel_ttl),
                                ("temp_grace", a.temp_grace)) if v is not None}
    config = MountConfig(
        mountpoint=a.mountpoint, api_base=a.api_base, workspace=a.workspace,
        provider=a.provider, read_only=a.read_only, allow_other=a.allow_other,
        cache_dir=a.cache_dir, foreground=a.foreground, debug=a.debug, log_file=a.log_file,
        api_key_file=a.api_key_file, chunked_upload=not a.no_chunked_upload,
        xattrs=not a.no_xattr, **extra)
    return run_mount(config)


if __name__ == "__main__":
    raise SystemExit(main())
