"""Settings of one mount, gathered from the command line, -o options and the environment."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

DEFAULT_API_BASE = "https://openrouter.ai/api/v1"
DEFAULT_CACHE_MAX_SIZE = 10 * 1024**3
DEFAULT_DIR_CACHE_TTL = 10.0
MAX_FILE_SIZE = 100 * 1024 * 1024  # the API's upload limit (104,857,600 bytes)
STATUS_XATTR = "user.orfs.status"  # the mount root's status JSON (orfs status reads it)


@dataclasses.dataclass(frozen=True)
class MountConfig:
    mountpoint: Path
    api_base: str = DEFAULT_API_BASE
    workspace: str | None = None
    provider: str | None = None  # None (OpenRouter storage) | "openai" | "anthropic"
    read_only: bool = False
    allow_other: bool = False
    cache_dir: Path | None = None  # None: derived by cache_root()
    cache_max_size: int = DEFAULT_CACHE_MAX_SIZE
    dir_cache_ttl: float = DEFAULT_DIR_CACHE_TTL
    foreground: bool = False
    debug: bool = False
    log_file: Path | None = None
    api_key_file: Path | None = None
    chunked_upload: bool = True  # stream uploads while a sequential writer writes
    # Seconds the kernel may keep entries and attributes before asking again.
    kernel_ttl: float = 1.0
    # Seconds an upload of a temporary-looking name waits for a rename (issue 4).
    temp_grace: float = 2.0
    # False (--no-xattr): getxattr/listxattr answer ENOSYS, so the kernel stops sending
    # them (ls -l asks two per file); the status is then read from <mnt>/.orfs-status.
    xattrs: bool = True

    def cache_root(self) -> Path:
        """The cache directory of this API base + workspace + provider."""
        if self.cache_dir is not None:
            return self.cache_dir
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orfs"
        key = f"{self.api_base}|{self.workspace or ''}|{self.provider or ''}"
        return base / hashlib.sha256(key.encode()).hexdigest()[:16]


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
