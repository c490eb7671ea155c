"""``python -m orfs.emulator``: the emulator without the rest of the CLI."""

from __future__ import annotations

import argparse

from orfs.emulator.server import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orfs emulator",
        description="Serve an emulator of the OpenRouter Files API under /api/v1.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
