"""Kernel-side tuning of a mount that pyfuse3 cannot set through mount options.

pyfuse3 rejects ``max_read``/``max_readahead`` and does not expose the connection
settings (docs/FUSE.md, "Reading"), so buffered reads arrive as 128 KiB requests: one
Python round trip per 128 KiB. The mount's own backing device has a read-ahead knob,
``/sys/class/bdi/<major:minor>/read_ahead_kb``; raised to 1024 the kernel sends 1 MiB
read requests (the FUSE maximum), an eighth of the round trips. Writing it needs root
(or a writable sysfs); anything else is logged at DEBUG and the mount works as before.

It must be written after the kernel took the answer to FUSE_INIT (that answer caps
read-ahead at what the kernel offered, 128 KiB), hence `tune_after_init`.

The device number comes from /proc/self/mountinfo, never from stat() of the
mountpoint: the mount process itself would wait on its own, not yet served, getattr.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import trio

from orfs.mountinfo import MOUNTINFO, entry_of

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024  # 1 MiB read requests: the largest a FUSE connection takes


def device_of(mountpoint: Path, mountinfo: str = MOUNTINFO) -> str | None:
    """``major:minor`` of the newest mount on ``mountpoint``, or None."""
    entry = entry_of(mountpoint, mountinfo)
    return entry.device if entry is not None else None


def raise_read_ahead(mountpoint: Path, kb: int = READ_AHEAD_KB,
                     sysfs: str = "/sys/class/bdi") -> bool:
    """Set the mount's read-ahead to ``kb`` KiB; True if it was set."""
    dev = device_of(mountpoint)
    if dev is None:
        log.debug("read-ahead: %s not found in mountinfo", mountpoint)
        return False
    path = os.path.join(sysfs, dev, "read_ahead_kb")
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(str(kb))
    except OSError as exc:
        log.debug("read-ahead of %s left as is (%s: %s)", mountpoint, path, exc.strerror)
        return False
    log.debug("read-ahead of %s set to %d KiB (%s)", mountpoint, kb, path)
    return True


async def tune_after_init(initialized: trio.Event, mountpoint: Path) -> None:
    """Once FUSE_INIT is answered (`Operations.init`), raise the read-ahead."""
    await initialized.wait()
    await trio.lowlevel.checkpoint()
    raise_read_ahead(mountpoint)


# httpcore reads a socket 64 KiB at a time, and each read costs a cancel scope (its
# timeout), an h11 event and two copies in Python: at loopback speed a download spent
# more of the mount's one CPU on that than on its bytes (py-spy, docs/PERFORMANCE.md).
# A read returns what has arrived and never waits to fill its buffer, so larger reads
# only mean fewer rounds when data is plentiful; but h11 copies each read's bytes twice
# before a chunk reaches the cache, so a read of up to 1 MiB held the first read of a
# file ~1.3 ms longer (time to first byte 7.2 vs 5.9 ms, median of 9 cold reads; the
# throughput of 256 KiB reads was the same within the noise: docs/PERFORMANCE.md).
HTTP_READ_BYTES = 256 * 1024


def tune_http_reads(read_bytes: int = HTTP_READ_BYTES) -> bool:
    """Raise httpcore's socket read size for this process (the mount's); True if set.
    httpcore has no public setting for it; a version without the attribute is left
    alone."""
    try:
        from httpcore._async.http11 import AsyncHTTP11Connection
    except ImportError:
        return False
    if not isinstance(getattr(AsyncHTTP11Connection, "READ_NUM_BYTES", None), int):
        return False
    AsyncHTTP11Connection.READ_NUM_BYTES = read_bytes
    return True

