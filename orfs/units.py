"""Sizes and durations as people type them (`512M`, `1.5GiB`, `2.5`): shared by the mount's
options and the emulator's flags, which must not depend on each other."""

from __future__ import annotations


def parse_size(text: str) -> int:
    """'10G', '512M', '1.5GiB', '1000' -> bytes (binary multiples)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = 1
    for suffix, m in (("K", 1024), ("M", 1024**2), ("G", 1024**3), ("T", 1024**4)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 512M or 10G)") from None
    if value < 0:
        raise ValueError(f"not a size: {text!r}")
    return int(value * mult)


def parse_seconds(text: str) -> float:
    """'2', '0.5' -> seconds; negative is refused."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise ValueError(f"not a number of seconds: {text!r}")
    return value
