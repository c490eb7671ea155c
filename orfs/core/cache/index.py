"""The on-disk index at start-up: what a new mount may serve from ``content/``.

The index (`orfs.core.state.State`, table ``content``) says which ids are complete, their
size, last access and class. A cached file is used only if the index says complete AND
its size on disk equals the recorded size; everything else, and every leftover partial
download, is removed. (Partial downloads are not resumed across mounts.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from orfs.core.cache.disk import disk_name, unlink_quietly
from orfs.core.cache.entry import Entry
from orfs.core.cache.ranges import RangeSet
from orfs.core.state import State

log = logging.getLogger(__name__)


def reconcile(state: State, content_dir: Path, partial_dir: Path
              ) -> tuple[dict[str, Entry], int, int]:
    """Keep only intact entries, complete or with present ranges: (entries by id, their
    bytes, how many were discarded as damaged)."""
    entries: dict[str, Entry] = {}
    used = discarded = 0
    for leftover in os.scandir(partial_dir):
        unlink_quietly(Path(leftover.path))
    on_disk: dict[str, int] = {}
    for item in os.scandir(content_dir):
        try:
            on_disk[item.name] = item.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    kept: set[str] = set()
    for rec in state.content_records():
        name = disk_name(rec.file_id)
        if rec.complete and on_disk.get(name) == rec.size:
            entries[rec.file_id] = Entry(
                rec.file_id, name, rec.size, complete=True, atime=rec.atime,
                adopted=rec.adopted,
            )
            used += rec.size
            kept.add(name)
        elif not rec.complete and on_disk.get(name) == rec.size and (
                present := RangeSet.loads(rec.ranges)):
            present.clip(rec.size)
            entries[rec.file_id] = Entry(
                rec.file_id, name, rec.size, complete=False, atime=rec.atime,
                adopted=rec.adopted, present=present,
            )
            used += present.total
            kept.add(name)
        else:
            if rec.complete:
                log.warning("cache entry %s is damaged (size on disk %s, recorded %d); "
                            "discarding it", rec.file_id, on_disk.get(name), rec.size)
                discarded += 1
            state.content_remove(rec.file_id)
    for name in on_disk.keys() - kept:
        unlink_quietly(content_dir / name)
    log.debug("content cache: %d entries, %d bytes", len(entries), used)
    return entries, used, discarded
