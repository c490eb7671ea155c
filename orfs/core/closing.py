"""What happens when a file is closed: the one place flush, fsync and release lead to.

`close()` reaches the filesystem as a flush (whose error is what close returns), and the
last close of a handle as a release (whose error reaches nobody; docs/FUSE.md, "Close:
flush and release"). So:

    flush    a writer's close seals the staged bytes (after a crash they upload); then
             the close-time checks run (`UploadQueue.check`: what the service would
             refuse for certain is refused, admission.py, no request); then the file
             uploads now and close waits for it (--uploads sync), or it is made durable
             and queued for a background upload (--uploads async, upload_queue.py);
             unless its name looks temporary and it is held for a rename
             (upload_policy.py)
    fsync    the same, except that a held file is only made durable here, and that in
             async mode fsync waits for the file's own upload and returns its result
    release  the last handle of a local file: a rewrite copy never written is dropped
             (the remote file shows again, no request); an unlinked file's staging goes;
             an uploaded one's staged bytes become the content cache's; one still local
             (queued, failed, empty) lets go of its descriptor

Uploading itself (exactly once, journaled) is `LocalFiles.upload` in writes.py.
"""

from __future__ import annotations

import os

import trio

from orfs.core.inodes import FileKey, LocalKey
from orfs.core.local import LocalFile
from orfs.core.tables import Handle, LocalHandle, ReadHandle, Tables
from orfs.core.upload_policy import HeldUploads
from orfs.core.upload_queue import UploadQueue
from orfs.core.writes import LocalFiles


class Closer:
    """flush, fsync and release of any open handle (module doc)."""

    def __init__(self, tables: Tables, files: LocalFiles, held: HeldUploads,
                 queue: UploadQueue) -> None:
        self._t = tables
        self._files = files
        self._held = held
        self._queue = queue

    async def flush(self, handle: Handle | None) -> None:
        """close(): upload a changed, non-empty file and wait, so errors reach close()
        (sync); or make it durable and queue it (async)."""
        if not isinstance(handle, LocalHandle):
            return
        local = handle.local
        if handle.writable:
            self._files.seal(local)  # after a crash, closed files upload
        await self._files.admit(local)  # what the service would refuse: refused now
        if self._held.hold(local):
            return  # a temporary name: held for a rename
        # Uploads now (sync, checked again before sending) or queues (async).
        await self._queue.submit(local, admitted=True)

    async def fsync(self, handle: Handle | None) -> None:
        if isinstance(handle, LocalHandle) and self._held.hold(handle.local):
            # A temporary name: durable here (staged + journaled), uploaded after a rename.
            await trio.to_thread.run_sync(os.fsync, handle.local.ensure_fd())
            return
        if not self._queue.enabled or not isinstance(handle, LocalHandle):
            await self.flush(handle)
            return
        # Async: fsync is the call that asks for the truth, so it waits for this
        # file's upload (started now if it is still waiting its turn).
        local = handle.local
        if handle.writable:
            self._files.seal(local)
        await self._queue.wait_for(local)

    def release(self, handle: Handle | None) -> None:
        """The kernel let go of a handle (once per open, after its last close)."""
        if isinstance(handle, ReadHandle):
            handle.cache.close()
            return
        if not isinstance(handle, LocalHandle):
            return
        local = handle.local
        local.handles -= 1
        if local.handles > 0:
            return
        if self._revert_pristine(local):
            return  # opened for writing, never written: the remote file stays
        if local.unlinked:
            self._files.close(local)
        elif local.remote is not None:
            self._files.retire(local)
        elif local.stream is None:
            local.close_fd()  # still local: no descriptor held while it waits

    def _revert_pristine(self, local: LocalFile) -> bool:
        """At the last close of a rewrite copy that was never written: drop the copy and
        show the remote file again (no request)."""
        entry, local.pristine = local.pristine, None
        if entry is None:
            return False
        file_id, gen = entry
        if (local.generation != gen or local.dirty or local.unlinked
                or local.remote is not None or local.state != "pending"):
            return False
        ino = self._t.inodes.existing(LocalKey(local.serial))
        self._files.drop(local)
        if ino is not None and self._t.ns.record(file_id) is not None:
            self._t.inodes.rebind(ino, FileKey(file_id))
        return True
