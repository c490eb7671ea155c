"""Memory per file of a mount's index: the namespace (records, freshness, layout, tree)
plus the inode table after `ls -l` handed every entry to the kernel.

The figure in docs/PERFORMANCE.md ("Memory per file") comes from
``.venv/bin/python -m tests.core.test_memory`` (100,000 files); the test checks a
bound on a smaller workspace so it stays quick.
"""

from __future__ import annotations

import gc
import json
import secrets
import tracemalloc
from collections.abc import Callable

import trio

from orfs.api.models import RemoteFile
from orfs.api.shapes import page_from_json
from orfs.core.inodes import InodeTable
from orfs.core.namespace import Namespace

# Generous: measured ~1 KiB per file (docs/PERFORMANCE.md); fails on a regression
# that keeps, say, a copy of every page or a per-file object graph.
BOUND_PER_FILE = 2048


class Pages:
    """Listing pages as the API sends them, parsed like the client does."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def list_all(self, add: Callable[[list[RemoteFile]], object],
                       limit: int = 1000) -> None:
        for start in range(0, self.n, limit):
            data = [{
                "id": "or_file_" + secrets.token_urlsafe(18)[:24],
                "filename": f"reports/{i % 50:02d}/run-{i:06d}-summary.csv",
                "size_bytes": 1000 + i, "mime_type": "text/csv",
                "created_at": 1_760_000_000 + i, "downloadable": True,
            } for i in range(start, min(self.n, start + limit))]
            text = json.dumps({"data": data, "has_more": False})
            add(page_from_json(json.loads(text)).files)
            await trio.lowlevel.checkpoint()

    async def retrieve(self, file_id: str) -> RemoteFile:
        raise AssertionError("no retrieve while listing")


async def bytes_per_file(n: int) -> tuple[float, int]:
    """(bytes per file, peak bytes) for an index of n files after an `ls -l` of all."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ns = Namespace(Pages(n), ttl=60.0)
        inodes = InodeTable()
        await ns.ensure_fresh()
        for folder, kids in ns.tree().items():
            for _name, key in sorted(kids.items()):  # readdir's sorted snapshot
                inodes.remember(inodes.inode_for(key))
            del folder
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        assert len(ns) == n
        del ns, inodes
        return (current - base) / n, peak - base
    finally:
        tracemalloc.stop()


async def test_index_memory_per_file_is_small() -> None:
    per_file, _ = await bytes_per_file(20_000)
    assert per_file < BOUND_PER_FILE, per_file


if __name__ == "__main__":
    per, peak = trio.run(bytes_per_file, 100_000)
    print(f"100,000 files: {per:.0f} bytes per file, {per * 100_000 / 2**20:.1f} MiB held, "
          f"peak {peak / 2**20:.1f} MiB while listing")
