"""What the mount reports about itself and its files: xattrs, statfs, the status.

A remote file's ``user.openrouter.*`` xattrs are its API record; a local file's
``user.orfs.state`` (and ``user.orfs.error`` when failed) say where its upload is; the
root's ``user.orfs.status`` is `mount_status` as JSON (`orfs status` reads it; never
the key), cut to fit an xattr (`xattr_status`); the root's ``.orfs-status`` file holds it
whole. Read-only: the FUSE adapter answers xattr writes itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from orfs.config import STATUS_XATTR
from orfs.core import names
from orfs.core.inodes import DirKey, FileKey, LocalKey
from orfs.core.local import LocalFile
from orfs.core.tables import FsStats, Tables

QUOTA = 10 * 1024**3            # the workspace quota (docs/API.md)
BLOCK = 4096
_XATTR_PREFIX = "user.openrouter."
# The kernel refuses an xattr value over 64 KiB (XATTR_SIZE_MAX) with E2BIG; the status
# xattr stays below it with room to spare (docs/SEMANTICS.md, "Namespace").
STATUS_XATTR_MAX = 60 * 1024
# Lists the xattr keeps at most, newest last, before it is measured.
_XATTR_LIST_MAX = 100
_LISTS = ("failed", "waiting", "errors_last_hour")


async def xattrs(tables: Tables, ino: int, info: Mapping[str, object]) -> dict[str, bytes]:
    key = tables.key(ino)
    if key == DirKey(()):
        return {STATUS_XATTR: xattr_status(mount_status(tables, info))}
    local = tables.locals.get(key.serial) if isinstance(key, LocalKey) else None
    if local is not None:
        out = {"user.orfs.state": local.state.encode()}
        if local.state == "failed" and local.error is not None:
            out["user.orfs.error"] = local.error.encode()
        return out
    if isinstance(key, FileKey):
        rf = await tables.fresh_remote(key.id)
        return {
            _XATTR_PREFIX + "id": rf.id.encode(),
            _XATTR_PREFIX + "filename": rf.filename.encode("utf-8", "surrogatepass"),
            _XATTR_PREFIX + "mime_type": rf.mime_type.encode(),
            _XATTR_PREFIX + "created_at": rf.created_at.isoformat().encode(),
            _XATTR_PREFIX + "downloadable": b"true" if rf.downloadable else b"false",
        }
    return {}


def fs_stats(tables: Tables) -> FsStats:
    """statfs: the quota as the size, what is uploaded or waiting to be as used."""
    waiting = [lf for lf in tables.locals if lf.remote is None]
    used = tables.ns.used_bytes() + sum(lf.size for lf in waiting)
    free = max(0, QUOTA - used)
    count = len(tables.ns) + len(waiting)
    return FsStats(bsize=BLOCK, frsize=BLOCK, blocks=QUOTA // BLOCK, bfree=free // BLOCK,
                   bavail=free // BLOCK, files=count, ffree=1_000_000, namemax=names.NAME_MAX)


def mount_status(tables: Tables, info: Mapping[str, object]) -> dict[str, object]:
    """The root's user.orfs.status (never the key)."""
    live = [lf for lf in tables.locals if not lf.unlinked and lf.remote is None]
    used, limit = tables.content.usage()
    failed: list[dict[str, object]] = []
    for lf in live:
        if lf.state == "failed":
            entry: dict[str, object] = {"path": "/".join(lf.path), "error": lf.error or ""}
            if lf.next_try is not None:
                entry["next_try"] = lf.next_try  # a transient failure, tried again then
            failed.append(entry)
    # Closed files not uploaded yet: held for a rename (a temporary name), queued for
    # the background, or uploading now; oldest first (orfs sync waits for these).
    waiting = [{"path": "/".join(lf.path), "size": lf.size,
                "state": "held" if lf.state == "pending" else lf.state}
               for lf in live if _waiting(tables, lf)]
    errors = [{"time": t, "message": m} for t, m in tables.state.recent_errors(3600)]
    return {
        "pending": sum(1 for lf in live if lf.state == "pending" and lf.size > 0),
        "uploading": sum(1 for lf in live if lf.state == "uploading"),
        "queued": sum(1 for lf in live if lf.state == "queued"),
        "waiting_bytes": sum(lf.size for lf in live if _waiting(tables, lf)),
        "waiting": waiting,
        "waiting_count": len(waiting),
        "uploads": tables.queue_stats(),
        "failed": failed,
        "failed_count": len(failed),
        "local": len(live),
        "cache": {"used": used, "limit": limit, **tables.content.fetch_counts()},
        "requests": tables.client.stats(),
        "errors_last_hour": errors,
        "errors_count": len(errors),
        "truncated": False,
        **info,
    }


def _waiting(tables: Tables, lf: LocalFile) -> bool:
    return lf.state in ("queued", "uploading") or (
        lf.state == "pending" and lf.serial in tables.held)


def xattr_status(full: Mapping[str, object]) -> bytes:
    """`full` as the root's xattr: every count, and as many of the newest entries of
    each list as fit in `STATUS_XATTR_MAX`; ``truncated`` says whether any were left
    out (the ``.orfs-status`` file has them all)."""
    raw = json.dumps(full).encode()
    if len(raw) <= STATUS_XATTR_MAX:
        return raw
    keep = _XATTR_LIST_MAX
    while True:
        cut = dict(full, truncated=True)
        for name in _LISTS:
            entries = full.get(name)
            if isinstance(entries, list):
                cut[name] = entries[len(entries) - keep:] if keep else []
        raw = json.dumps(cut).encode()
        if len(raw) <= STATUS_XATTR_MAX or keep == 0:
            return raw  # with no entries left, the counts alone are far below the limit
        keep //= 2
