"""Rename, rewrites and temporary names: every way one file's bytes take a name.

The API has no rename and no partial write: a file's bytes and name are fixed at
upload. So a rename of an uploaded file uploads its bytes under the new name and
deletes the old file (`Replacer.rename`); opening one for writing without O_TRUNC
copies its bytes into staging first (`Replacer.open_rewrite`); a truncate to another
size does the same and uploads at once. A file not uploaded yet is renamed for free.

A rename within a held file's grace period (upload_policy.py) uploads it once, under
the new name, so write-temp-then-rename (rsync, editors, ``sed -i``, Python's
atomic-write idiom) costs one upload.

`copy_cached` and `copy_fd` copy a file's bytes into a staging file in bounded chunks
(never the whole file in memory), for rename of a remote file and for opening one for
writing without O_TRUNC.
"""

from __future__ import annotations

import logging
import os

import trio

from orfs.api.models import RemoteFile
from orfs.config import MAX_FILE_SIZE
from orfs.core.cache import CacheHandle, ContentUnavailable
from orfs.core.errors import (
    CoreError,
    Exists,
    FileTooBig,
    InvalidArgument,
    IsADirectory,
    NoEntry,
    NotADirectory,
    NotEmpty,
    NotPermitted,
)
from orfs.core.inodes import ByIdKey, DirKey, FileHandle, FileKey, Inode, Key, LocalKey
from orfs.core.local import LocalFile
from orfs.core.tables import (
    Tables,
    api_errors,
    check_name,
    content_error,
    ns_time,
)
from orfs.core.upload_policy import HeldUploads
from orfs.core.upload_queue import UploadQueue
from orfs.core.writes import LocalFiles

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1            # linux/fs.h
RENAME_EXCHANGE = 2

# One chunk of a staging copy: bounded memory, few enough event-loop turns.
COPY_CHUNK = 1024 * 1024

async def copy_cached(handle: CacheHandle, fd: int) -> int:
    """Copy every byte behind ``handle`` (waiting for its download as needed) into ``fd``
    from offset 0; returns the number of bytes copied. Raises ContentUnavailable."""
    offset = 0
    while True:
        data = await handle.read(offset, COPY_CHUNK)
        if not data:
            return offset
        _pwrite_all(fd, data, offset)
        offset += len(data)


async def copy_fd(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes of ``src`` into ``dst`` from offset 0 (a staged local file)."""
    offset = 0
    while offset < size:
        data = os.pread(src, min(COPY_CHUNK, size - offset), offset)
        if not data:
            break
        _pwrite_all(dst, data, offset)
        offset += len(data)
        await trio.lowlevel.checkpoint()
    return offset


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class Replacer:
    """rename, and the rewrites of uploaded files (module doc)."""

    def __init__(self, tables: Tables, files: LocalFiles, held: HeldUploads,
                 queue: UploadQueue) -> None:
        self._t = tables
        self._files = files
        self._held = held
        self._queue = queue

    # ---- rename ------------------------------------------------------------------------

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int) -> None:
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("RENAME_EXCHANGE is not supported")
        old_folder = self._t.folder(old_parent)
        new_folder = self._t.folder(new_parent)
        check_name(new_name)
        while True:
            src = await self._t.resolve(old_parent, old_name)
            if src is None:
                raise NoEntry(old_name)
            dst = await self._t.resolve(new_parent, new_name)
            if dst is not None and flags & RENAME_NOREPLACE:
                raise Exists(new_name)
            local = self._t.locals.get(src.serial) if isinstance(src, LocalKey) else None
            if local is None or local.state != "uploading":
                break
            # An upload is in flight: let it end, then look again (the file is then
            # remote and renamed by re-upload, or failed and renamed for free).
            async with local.lock:
                pass
        if dst == src:
            return
        new_path = (*new_folder, new_name)
        old_path = (*old_folder, old_name)
        # Async: a closed file not uploaded yet (queued, or a temporary name in its
        # grace period) is renamed for free and stays (or goes) in the queue: the
        # upload happens once, in the background, under the final name.
        queue_it = (local is not None and self._queue.enabled and local.replaces is None
                    and (local.state == "queued" or self._upload_due(local)))
        if local is not None and self._upload_due(local) and not queue_it:
            # Closed with bytes not uploaded (a temporary name in its grace period):
            # uploaded now, under the new name, so rename reports its errors.
            if isinstance(dst, (DirKey, ByIdKey)):
                raise IsADirectory(new_name)
            await self._rename_by_upload(local, dst, new_path)
            return
        if local is not None and local.replaces is None:
            # A file not uploaded yet: renamed for free, in memory and in the journal.
            if isinstance(dst, (DirKey, ByIdKey)):
                raise IsADirectory(new_name)
            local.remote_name = self._name_at(dst)
            if isinstance(dst, LocalKey):
                victim = self._t.locals[dst.serial]
                local.replaces = victim.replaces
                self._files.drop(victim)
            elif isinstance(dst, FileKey):
                local.replaces = dst.id
            self._t.ns.remove_local_file(local.path, local.serial)
            local.path = new_path
            self._t.ns.add_local_file(new_path, local.serial)
            self._t.state.journal_update(local.journal_key, filename=local.upload_name(),
                                         replaces=local.replaces)
            if queue_it:
                self._held.cancel(local)
                await self._queue.submit(local)  # already queued: stays, renamed
            return
        if isinstance(src, DirKey):
            # What Linux checks before the move itself: a folder replaces only an
            # empty folder.
            if isinstance(dst, (FileKey, LocalKey)):
                raise NotADirectory(new_name)
            if isinstance(dst, DirKey) and self._t.ns.children(dst.path):
                raise NotEmpty(new_name)
            if isinstance(dst, ByIdKey):
                raise NotPermitted(".by-id cannot be replaced")
        if (isinstance(src, DirKey) and self._t.ns.is_local_folder(src.path)
                and not self._t.ns.children(src.path)
                and (dst is None or (isinstance(dst, DirKey)
                                     and self._t.ns.is_local_folder(dst.path)))):
            if isinstance(dst, DirKey):  # an empty local folder: replaced
                self._t.ns.remove_local_folder(dst.path)
                self._t.inodes.unbind(dst)
                self._t.folders.pop(dst.path, None)
            self._t.ns.remove_local_folder(src.path)
            self._t.ns.add_local_folder(new_path)
            meta = self._t.folders.pop(src.path, None)
            if meta is not None:
                self._t.folders[new_path] = meta
            ino = self._t.inodes.existing(src)
            if ino is not None:
                self._t.inodes.rebind(ino, DirKey(new_path))
            return
        if isinstance(src, FileKey):
            await self._rename_remote(src.id, dst, old_path, new_path)
            return
        if isinstance(src, DirKey):
            why = ("the API has no rename: renaming a folder would mean re-uploading every"
                   " file under it (only an empty local folder can be renamed)")
        else:
            why = ("it is rewriting an uploaded file and has not uploaded yet (empty,"
                   " failed, or still open for writing)")
        log.info("rename %s -> %s: EPERM: %s", "/".join(old_path), "/".join(new_path), why)
        raise NotPermitted(why)

    def _name_at(self, dst: Key | None) -> str | None:
        """The real remote filename a file renamed onto ``dst`` uploads as: the name of
        what it replaces there (its display name may be an id form or shortened). None:
        nothing there, the new path is the name."""
        if isinstance(dst, FileKey):
            rf = self._t.ns.record(dst.id)
            return rf.filename if rf is not None else None
        if isinstance(dst, LocalKey):
            victim = self._t.locals.get(dst.serial)
            return victim.remote_name if victim is not None else None
        return None

    def _upload_due(self, local: LocalFile) -> bool:
        """Closed (for writing) with bytes no upload has sent: a rename must upload it."""
        return (local.dirty and local.size > 0 and not local.unlinked and local.remote is None
                and not self._t.open_for_writing(local))

    async def _rename_by_upload(self, local: LocalFile, dst: Key | None,
                                new_path: tuple[str, ...]) -> None:
        """Upload a closed local file under its new name, then let go of what it replaced.
        If the upload fails nothing moves: the file stays at its old name (failed)."""
        old_path, old_replaces, old_name = local.path, local.replaces, local.remote_name
        target = self._replaced_at(dst)
        if local.replaces is None:
            local.replaces = target  # deleted by the upload, as an O_TRUNC replace would be
        self._held.cancel(local)
        local.path, local.remote_name = new_path, self._name_at(dst)
        try:
            await self._files.upload(local)
        except CoreError:
            if local.path == new_path:
                local.path, local.replaces = old_path, old_replaces
                local.remote_name = old_name
                self._t.state.journal_update(local.journal_key,
                                             filename=local.upload_name(),
                                             replaces=old_replaces)
            raise
        self._t.ns.remove_local_file(old_path, local.serial)
        if local.remote is None and not local.unlinked:
            self._t.ns.add_local_file(new_path, local.serial)  # written meanwhile: local still
        if local.remote is not None and target is not None:
            self._t.inherit_age(local.remote.id, target)  # a save over a duplicate
        await self._discard_target(dst, done=target if old_replaces is None else None)

    async def _rename_remote(self, src_id: str, dst: Key | None, old_path: tuple[str, ...],
                             new_path: tuple[str, ...]) -> None:
        """An uploaded file: its bytes (held here, or downloaded through the cache) are
        uploaded under the new name, then the old file and the target are deleted. The
        inode stays. If the upload fails, nothing changes."""
        with api_errors("retrieve"):
            rf = await self._t.ns.fresh_record(src_id)
        if rf is None:
            raise NoEntry("/".join(old_path))
        if isinstance(dst, (DirKey, ByIdKey)):
            raise IsADirectory(new_path[-1])
        if not self._t.readable(rf):
            raise _not_held(f"rename {'/'.join(old_path)} ->", new_path)
        ov = self._t.state.get_override(rf.id)
        local = await self._stage_copy(rf, new_path)
        local.remote_name = self._name_at(dst)
        self._t.state.journal_update(local.journal_key, filename=local.upload_name())
        self._files.seal(local)  # final bytes: after a crash the next mount finishes the rename
        try:
            await self._files.upload(local)
        except CoreError:
            self._files.drop(local)
            raise
        new = local.remote
        if new is not None:
            ino = self._t.inodes.existing(FileKey(src_id))
            if ino is not None:
                self._t.inodes.rebind(ino, FileKey(new.id))
            if ov is None or ov.mtime_ns is None:  # mv keeps the modification time
                self._t.state.set_override(new.id, mtime_ns=ns_time(rf.created_at))
            target = self._replaced_at(dst)
            if target is not None:  # it takes the place of what it replaces at the path
                self._t.inherit_age(new.id, target)
        await self._discard_target(dst, done=None)

    def _replaced_at(self, dst: Key | None) -> str | None:
        """The remote file a rename onto ``dst`` replaces (None: none)."""
        if isinstance(dst, FileKey):
            return dst.id
        if isinstance(dst, LocalKey):
            victim = self._t.locals.get(dst.serial)
            return victim.replaces if victim is not None else None
        return None

    async def _discard_target(self, dst: Key | None, *, done: str | None) -> None:
        """What a rename replaced goes: a local file is dropped (with the remote file it
        was replacing), a remote file deleted (``done``: already deleted). A failed
        delete is logged, not raised: the rename itself has happened."""
        doomed: list[str] = []
        if isinstance(dst, LocalKey):
            victim = self._t.locals.get(dst.serial)
            if victim is not None and not victim.unlinked:
                if victim.replaces is not None:
                    doomed.append(victim.replaces)
                self._files.drop(victim)
        elif isinstance(dst, FileKey):
            self._files.detach(dst.id)
            doomed.append(dst.id)
        for file_id in doomed:
            if file_id == done:
                continue
            try:
                await self._t.delete_remote(file_id)
            except CoreError as exc:
                log.warning("renamed over %s but could not delete it: %s", file_id,
                            exc.message)
                self._t.state.record_error(f"delete of replaced {file_id}: {exc.message}")

    # ---- rewrites of uploaded files ------------------------------------------------------

    async def _stage_copy(self, rf: RemoteFile, path: tuple[str, ...]) -> LocalFile:
        """A new local file replacing rf, not yet visible, holding a copy of rf's bytes:
        from its staged file if it is still open after its upload, else through the
        content cache (downloading it if needed), streamed in bounded chunks."""
        local = self._files.new_replacing(rf, path, visible=False)
        attached = self._t.locals.attached(rf.id)
        try:
            if attached is not None and attached.fd >= 0:
                size = await copy_fd(attached.fd, local.fd, attached.size)
            else:
                try:
                    cache = await self._t.content.open(rf)
                    try:
                        size = await copy_cached(cache, local.fd)
                    finally:
                        cache.close()
                except ContentUnavailable as exc:
                    raise content_error(exc) from exc
        except BaseException:
            self._files.drop(local)
            raise
        local.size = size
        self._files.touch(local)
        # Not a sequential writer: uploads from staging.
        self._files.streams.resized(local, size)
        return local

    async def open_rewrite(self, inode: Inode, rf: RemoteFile, flags: int
                           ) -> FileHandle | None:
        """Open an uploaded file for writing without O_TRUNC (``>>``, ``r+``, in-place
        edits): its bytes are copied into staging, the writes land there, and the flush
        uploads it and deletes the old file. Never written: dropped at the last close
        (closing.py). None: another operation won the race; open it again."""
        path = self._t.ns.display_path(rf.id)
        if path is None:
            raise NotPermitted("write through .by-id")
        if not self._t.readable(rf):
            raise _not_held("open for writing", path)
        local = await self._stage_copy(rf, path)
        if (self._t.inodes.key_of(inode) != FileKey(rf.id) or self._t.ns.record(rf.id) is None
                or self._t.ns.display_path(rf.id) != path):
            # Another open, a rename or an unlink won while we copied: decide again.
            self._files.drop(local)
            return None
        local.dirty = False  # a copy: nothing to upload until something is written
        local.pristine = (rf.id, local.generation)  # dropped unwritten: closing.py
        self._t.ns.add_local_file(path, local.serial)
        self._t.inodes.rebind(inode, LocalKey(local.serial))
        return self._files.open_handle(local, flags)

    async def truncate_remote(self, inode: Inode, rf: RemoteFile, size: int) -> None:
        """truncate of an uploaded file: to 0, a new empty local file takes its place
        (like O_TRUNC, no request); otherwise a copy is resized and uploaded now, and
        the old file deleted. Unreadable bytes: EPERM."""
        path = self._t.ns.display_path(rf.id)
        if path is None:
            raise NotPermitted("truncate through .by-id")
        if size > MAX_FILE_SIZE:
            raise FileTooBig(f"{size} bytes is past the upload limit")
        if size == 0:
            local = self._files.new_replacing(rf, path)
            self._t.inodes.rebind(inode, LocalKey(local.serial))
            return
        if not self._t.readable(rf):
            raise _not_held("truncate", path)
        local = await self._stage_copy(rf, path)
        self._files.resize(local, size)
        self._files.seal(local)
        try:
            await self._files.upload(local)
        except CoreError:
            self._files.drop(local)
            raise
        if local.remote is not None:
            self._t.inodes.rebind(inode, FileKey(local.remote.id))


def _not_held(what: str, path: tuple[str, ...]) -> NotPermitted:
    why = "its bytes are not held here and the API does not serve them"
    log.info("%s %s: EPERM: %s", what, "/".join(path), why)
    return NotPermitted(why)
