"""``python -m orfs.fuse MOUNTPOINT [options]``: the mount without the rest of the CLI.

Handy for tests and debugging; `orfs mount` is the user's command. It takes the same
flags and `-o` options, built from the same declarations (orfs.config).
"""

from __future__ import annotations

import argparse

from orfs.config import add_mount_arguments, config_from_args
from orfs.fuse.mount import run_mount


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orfs.fuse")
    add_mount_arguments(p)
    return run_mount(config_from_args(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
