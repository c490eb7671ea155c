"""The filesystem core: one async method per operation, in plain Python types.

Knows nothing of the kernel: the FUSE adapter (`orfs.fuse.ops`) converts `Attributes`
and maps `orfs.core.errors` to errnos. The contract is docs/SEMANTICS.md.

`Filesystem` is the one entry point. Each operation starts here, finds what its inode,
name or handle is, and either answers from the parts or hands over to one of them:

    tables.py    the shared tables (inodes, handles, local files) and the queries over
                 them: what a name or inode is, its attributes
    local.py     the records of local files and their table (`LocalFile`, `LocalTable`)
    writes.py    the write side: local files staged, written, uploaded exactly once,
                 journaled and resumed after a crash (`LocalFiles`, the table's only
                 writer)
    streaming.py uploads streamed while a sequential writer writes (`UploadStreams`);
                 upload_stream.py the record of one
    closing.py   what flush, fsync and release do (`Closer`)
    upload_policy.py  when a closed file uploads: now, or held for a rename
                 (`HeldUploads`, `looks_temporary`)
    upload_queue.py   --uploads async: closed files made durable and uploaded in the
                 background, oldest first, N at once (`UploadQueue`)
    replace.py   rename, rewrites and truncates of uploaded files (`Replacer`)
    status.py    xattrs, statfs and the mount's status
    namespace.py the listing index and the local overlay; inodes.py the inode table

Concurrency invariants (one trio thread, many handler tasks):
- Everything between two awaits is atomic. Resolving a name and acting on the result
  happen without an await between them, except where an API request is the action;
  each such request is followed by re-checking what it may have raced with.
- A local file uploads under its own lock, so two flushes never upload it twice; the
  second finds it clean and returns (`LocalFiles.upload`).
- Inode numbers are only ever rebound, never reused (see inodes.py).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import trio

from orfs.api.errors import Unreachable
from orfs.core import status
from orfs.core.cache import ContentCache, ContentUnavailable
from orfs.core.closing import Closer
from orfs.core.errors import (
    AccessDenied,
    Exists,
    InvalidArgument,
    IOFailure,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NoEntry,
    NotADirectory,
    NotEmpty,
    NotPermitted,
    ReadOnly,
)
from orfs.core.inodes import ByIdKey, DirKey, FileHandle, FileKey, Inode, LocalKey
from orfs.core.local import INTERRUPTED, LocalFile
from orfs.core.names import NAME_MAX
from orfs.core.namespace import API_DOWN_BACKOFF, Namespace
from orfs.core.replace import RENAME_EXCHANGE, RENAME_NOREPLACE, Replacer
from orfs.core.state import State
from orfs.core.streaming import UploadStreams
from orfs.core.tables import (
    Attributes,
    DirHandle,
    FilesApi,
    FsStats,
    LocalHandle,
    ReadHandle,
    Tables,
    api_errors,
    check_name,
    content_error,
)
from orfs.core.upload_policy import HeldUploads
from orfs.core.upload_queue import DEFAULT_STREAMS, UploadQueue
from orfs.core.writes import LocalFiles

# Re-exported: the FUSE adapter, the mount and the tests take these from here.
__all__ = ["INTERRUPTED", "RENAME_EXCHANGE", "RENAME_NOREPLACE", "Attributes", "FilesApi",
           "Filesystem", "FsStats"]


class Filesystem:
    """The mount's state and operations; see docs/SEMANTICS.md."""

    def __init__(self, client: FilesApi, content: ContentCache, state: State, *,
                 staging_dir: Path, dir_cache_ttl: float = 10.0, read_only: bool = False,
                 info: Mapping[str, object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stream_uploads: bool = True, temp_grace: float = 2.0,
                 api_down_window: float = API_DOWN_BACKOFF,
                 async_uploads: bool = False,
                 upload_streams: int = DEFAULT_STREAMS) -> None:
        self.read_only = read_only
        self._info = dict(info or {})
        self.ns = Namespace(client, ttl=dir_cache_ttl, clock=clock,
                            on_gone=content.deleted_elsewhere,
                            down_window=api_down_window,
                            created_names=state.created_names,
                            ages=state.ages, drop_ages=state.drop_ages)
        client.on_success = self.ns.api_answered  # any success ends an "API down" window
        self._t = Tables(client, content, state, self.ns)
        self.inodes = self._t.inodes
        # Streamed uploads of sequential writers; run by `streams.run`.
        self.streams = UploadStreams(lambda name, body: client.upload(name, body),
                                     LocalFile.upload_name,
                                     # async: a closed file uploads later, from staging
                                     enabled=stream_uploads and not async_uploads,
                                     allowed=lambda lf: (self._held.may_stream(lf)
                                                         and self._files.may_stream(lf)))
        self._files = LocalFiles(self._t, self.streams, staging_dir)
        # --uploads async: closed files upload in the background (off: at their flush).
        self.queue = UploadQueue(self._t, self._files, enabled=async_uploads,
                                 streams=upload_streams)
        self._t.queue_stats = self.queue_stats
        # A closed file with a temporary-looking name waits temp_grace seconds for a
        # rename before it uploads under its own name (while `run` runs).
        self._held = HeldUploads(self._t, self._files, temp_grace, self.queue)
        self._close = Closer(self._t, self._files, self._held, self.queue)
        self._replace = Replacer(self._t, self._files, self._held, self.queue)
        # What tests look into.
        self._state = state
        self._content = content
        self._locals = self._t.locals.by_serial
        self._staging = self._files.staging

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnly("read-only mount")

    # ---- names and folders ---------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Attributes:
        """The entry name in parent; adds one kernel reference to its inode."""
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            # No name here is longer (longer remote names are shown shortened), and the
            # kernel looks a name up before create, mkdir, rename, symlink, link and
            # mknod: so each of them answers ENAMETOOLONG, as on a local filesystem.
            raise NameTooLong(name[:40] + "...")
        if name == ".":
            key = self._t.key(parent)
        elif name == "..":
            pkey = self._t.key(parent)
            key = DirKey(pkey.path[:-1]) if isinstance(pkey, DirKey) else DirKey(())
        else:
            found = await self._t.resolve(parent, name)
            if found is None:
                raise NoEntry(name)
            key = found
        ino = self.inodes.inode_for(key)
        attrs = await self._t.attrs(ino, key)
        self.inodes.remember(ino)
        return attrs

    async def getattr(self, ino: int) -> Attributes:
        return await self._t.attrs(Inode(ino), self._t.key(ino))

    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            key = self.inodes.forget(ino, n)
            if isinstance(key, FileKey):
                self._t.gone.pop(key.id, None)

    def remember(self, ino: Inode) -> None:
        self.inodes.remember(ino)

    async def opendir(self, ino: int) -> FileHandle:
        key = self._t.key(ino)
        if isinstance(key, ByIdKey):
            return self._t.new_fh(DirHandle([]))  # documented: lists nothing
        if not isinstance(key, DirKey):
            raise NotADirectory(f"inode {ino}")
        with api_errors("list"):
            await self.ns.ensure_fresh()
        # A sorted snapshot taken now: readdir offsets index into it, so entries are
        # neither skipped nor repeated if the folder changes between readdir calls.
        entries = self.ns.children(key.path)
        if entries is None:
            if key.path:
                raise NoEntry("/".join(key.path))
            entries = []
        return self._t.new_fh(DirHandle(entries))

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Attributes]]:
        """(next offset, name, attributes) from offset start; lazy, from memory only.

        The caller calls `remember(attrs.ino)` for each entry the kernel took.
        """
        handle = self._t.handles.get(fh)
        if not isinstance(handle, DirHandle):
            return
        for i in range(start, len(handle.entries)):
            name, key = handle.entries[i]
            ino = self.inodes.inode_for(key)
            yield i + 1, name, self._t.entry_attrs(ino, key)

    def releasedir(self, fh: int) -> None:
        self._t.handles.pop(fh, None)

    async def mkdir(self, parent: int, name: str, mode: int) -> Attributes:
        """A local folder (no request: the API has no folders); its mode is kept for the
        mount's life."""
        self._writable()
        folder = self._t.folder(parent)
        check_name(name)
        if await self._t.resolve(parent, name) is not None:
            raise Exists(name)
        path = (*folder, name)
        self.ns.add_local_folder(path)
        self._t.folders.pop(path, None)  # a folder removed before under this name
        self._t.folder_meta(path).mode = stat.S_IMODE(mode)
        self._t.folder_changed(path)
        self._t.folder_changed(folder)
        key = DirKey(path)
        ino = self.inodes.inode_for(key)
        self.inodes.remember(ino)
        return self._t.dir_attrs(ino, key)

    async def rmdir(self, parent: int, name: str) -> None:
        self._writable()
        self._t.folder(parent)
        key = await self._t.resolve(parent, name)
        if key is None:
            raise NoEntry(name)
        if not isinstance(key, DirKey):
            raise NotADirectory(name)
        if self.ns.children(key.path):
            raise NotEmpty(name)
        self.ns.remove_local_folder(key.path)
        self.inodes.unbind(key)
        self._t.folders.pop(key.path, None)
        self._t.folder_changed(key.path[:-1])

    async def unlink(self, parent: int, name: str) -> None:
        self._writable()
        if not isinstance(self._t.key(parent), ByIdKey):  # .by-id/<id>: unlink by id
            self._t.folder(parent)
        key = await self._t.resolve(parent, name)
        if key is None:
            raise NoEntry(name)
        if isinstance(key, (DirKey, ByIdKey)):
            raise IsADirectory(name)
        if isinstance(key, LocalKey):
            local = self._t.locals[key.serial]
            if local.state == "uploading":
                # Its upload is in flight: let it end, then remove what it became (the
                # new remote file, or the local file if it failed).
                async with local.lock:
                    pass
                await self.unlink(parent, name)
                return
            self._keep_folder(local.path)
            self._t.folder_changed(local.path[:-1])
            replaces = local.replaces
            self._files.drop(local)
            if replaces is not None:
                await self._t.delete_remote(replaces)
            return
        self._files.detach(key.id)
        path = self.ns.display_path(key.id)
        if path is not None:
            self._keep_folder(path)
        await self._t.delete_remote(key.id)
        if path is not None:
            self._t.folder_changed(path[:-1])

    def _keep_folder(self, path: tuple[str, ...]) -> None:
        """A folder the user saw stays (as local) when its last file goes, so `rm -r`
        can rmdir it."""
        if len(path) > 1:
            self.ns.add_local_folder(path[:-1])

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int) -> None:
        self._writable()
        old_folder, new_folder = self._t.folder(old_parent), self._t.folder(new_parent)
        await self._replace.rename(old_parent, old_name, new_parent, new_name, flags)
        # As after unlink: the folder it left stays, even if that emptied it (`mv d/f .`
        # leaves d, as on any filesystem; a folder made of filenames would vanish).
        self._keep_folder((*old_folder, old_name))
        # The renamed entry's ctime and both folders' mtime and ctime change, as on a
        # local filesystem (a file renamed by re-upload has a new id: its ctime is new).
        moved = self.ns.child(new_folder, new_name)
        if isinstance(moved, LocalKey):
            local = self._t.locals.get(moved.serial)
            if local is not None:
                local.changed_ns = time.time_ns()
        elif isinstance(moved, DirKey):
            self._t.folder_meta(moved.path).ctime_ns = time.time_ns()
        self._t.folder_changed(old_folder)
        self._t.folder_changed(new_folder)

    async def refuse_special(self, parent: int, name: str, what: str) -> NoReturn:
        """symlink, link, and mknod of anything but a regular file: EPERM, after what
        Linux checks first (the name's length, then whether it exists: EEXIST)."""
        self._t.folder(parent)
        check_name(name)
        if await self._t.resolve(parent, name) is not None:
            raise Exists(name)
        self._writable()
        raise NotPermitted(f"{what} {name!r}: the service stores regular files only")

    # ---- files ---------------------------------------------------------------------------

    async def create(self, parent: int, name: str, mode: int, flags: int
                     ) -> tuple[FileHandle, Attributes]:
        """A new local file, visible at once; adds one kernel reference."""
        self._writable()
        folder = self._t.folder(parent)
        check_name(name)
        existing = await self._t.resolve(parent, name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise Exists(name)
            ino = self.inodes.inode_for(existing)
            fh = await self.open(ino, flags)
            attrs = await self.getattr(self.inodes.existing(existing) or ino)
            self.inodes.remember(attrs.ino)
            return fh, attrs
        local = self._files.new((*folder, name), mode, replaces=None)
        self._t.folder_changed(folder)
        ino = self.inodes.inode_for(LocalKey(local.serial))
        fh = self._files.open_handle(local, flags)
        self.inodes.remember(ino)
        return fh, self._t.local_attrs(ino, local)

    async def open(self, ino: int, flags: int) -> FileHandle:
        inode = Inode(ino)
        key = self._t.key(ino)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable:
            self._writable()
        if isinstance(key, (DirKey, ByIdKey)):
            raise IsADirectory(f"inode {ino}")
        local = self._t.local_of(key)
        if local is not None and not local.unlinked:
            return self._files.open_handle(local, flags)
        if isinstance(key, LocalKey):
            raise NoEntry(f"inode {ino}")
        rf = await self._t.fresh_remote(key.id)
        if writable:
            if not flags & os.O_TRUNC:  # >>, r+, in place
                fh = await self._replace.open_rewrite(inode, rf, flags)
                if fh is None:
                    return await self.open(inode, flags)  # it changed meanwhile
                return fh
            path = self.ns.display_path(rf.id)
            if path is None:
                raise NotPermitted("write through .by-id")
            local = self._files.new_replacing(rf, path)
            self.inodes.rebind(inode, LocalKey(local.serial))
            return self._files.open_handle(local, flags)
        if not self._t.readable(rf):
            raise AccessDenied(f"{rf.filename}: the API does not serve uploaded files")
        if self.ns.api_down() and not self._t.content.is_cached(rf.id):
            # Known down (docs/RELIABILITY.md): fail now, not after a download's retries
            # (unless a probe finds the API back).
            try:
                await self.ns.raise_if_down()
            except Unreachable:
                raise IOFailure(f"{rf.filename}: the API is not answering and its bytes "
                                "are not cached") from None
        try:
            cache = await self._t.content.open(rf)
        except ContentUnavailable as exc:
            raise content_error(exc) from exc
        return self._t.new_fh(ReadHandle(cache, rf))

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._t.handles.get(fh)
        if isinstance(handle, ReadHandle):
            try:
                return await handle.cache.read(offset, size)
            except ContentUnavailable as exc:
                raise content_error(exc) from exc
        if isinstance(handle, LocalHandle):
            await trio.lowlevel.checkpoint()
            return os.pread(handle.local.ensure_fd(), size, offset)
        raise InvalidArgument(f"bad file handle {fh}")

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._t.handles.get(fh)
        if not isinstance(handle, LocalHandle) or not handle.writable:
            raise InvalidArgument(f"file handle {fh} is not open for writing")
        return await self._files.write(handle.local, offset, data)

    async def flush(self, fh: int) -> None:
        """close(): upload a changed, non-empty file and wait (closing.py)."""
        await self._close.flush(self._t.handles.get(fh))

    async def fsync(self, fh: int) -> None:
        await self._close.fsync(self._t.handles.get(fh))

    async def release(self, fh: int) -> None:
        self._close.release(self._t.handles.pop(fh, None))
        await trio.lowlevel.checkpoint()

    async def setattr(self, ino: int, *, size: int | None = None, mode: int | None = None,
                      atime_ns: int | None = None, mtime_ns: int | None = None,
                      fh: int | None = None) -> Attributes:
        inode = Inode(ino)
        key = self._t.key(ino)
        if size is not None or mode is not None or atime_ns is not None or mtime_ns is not None:
            self._writable()
        changes = mode is not None or mtime_ns is not None or atime_ns is not None
        if isinstance(key, (DirKey, ByIdKey)):
            if size is not None:
                raise IsADirectory(f"inode {ino}")
            if isinstance(key, DirKey) and changes:
                # Kept in memory for the mount's life (the API has no folders).
                meta = self._t.folder_meta(key.path)
                if mode is not None:
                    meta.mode = mode & 0o7777
                if mtime_ns is not None:
                    meta.mtime_ns = mtime_ns
                if atime_ns is not None:
                    meta.atime_ns = atime_ns
                meta.ctime_ns = time.time_ns()
            elif changes:
                raise NotPermitted(".by-id has no attributes to change")
            return self._t.dir_attrs(inode, key)
        perm = None if mode is None else mode & 0o7777
        local = self._t.local_of(key)
        if local is not None and not local.unlinked:
            if size is not None and size != local.size:
                self._files.resize(local, size)  # a change of the bytes: mtime and ctime
                if local.handles == 0 and local.remote is None and local.stream is None:
                    local.close_fd()  # `truncate -s` with no handle: keep no descriptor
            if changes:
                local.changed_ns = time.time_ns()
            if perm is not None:
                local.mode = perm
                local.mode_set = True
            if mtime_ns is not None:
                local.mtime_set = mtime_ns
            if atime_ns is not None:
                local.atime_set = atime_ns
            if isinstance(key, FileKey) and (mode is not None or mtime_ns is not None
                                             or atime_ns is not None):
                self._t.state.set_override(key.id, mode=perm, mtime_ns=mtime_ns,
                                           atime_ns=atime_ns)
            return await self._t.attrs(inode, self._t.key(ino))
        if isinstance(key, LocalKey):
            raise NoEntry(f"inode {ino}")
        rf = await self._t.fresh_remote(key.id)
        if size is not None and size != rf.size:
            await self._replace.truncate_remote(inode, rf, size)  # a rewrite
            return await self.setattr(ino, mode=mode, atime_ns=atime_ns, mtime_ns=mtime_ns,
                                      fh=fh)
        if changes:
            self._t.ctimes[rf.id] = time.time_ns()
            self._t.state.set_override(rf.id, mode=perm, mtime_ns=mtime_ns, atime_ns=atime_ns)
        return self._t.file_attrs(inode, rf)

    # ---- xattrs, statfs, status ----------------------------------------------------------

    async def getxattr(self, ino: int, name: str) -> bytes:
        value = (await status.xattrs(self._t, ino, self._info)).get(name)
        if value is None:
            raise NoAttribute(name)
        return value

    async def listxattr(self, ino: int) -> list[str]:
        return list(await status.xattrs(self._t, ino, self._info))

    def statfs(self) -> FsStats:
        return status.fs_stats(self._t)

    def status(self) -> dict[str, object]:
        """The root's user.orfs.status (never the key)."""
        return status.mount_status(self._t, self._info)

    def drop_listing(self) -> None:
        self.ns.invalidate()

    # ---- uploads: background, unmount, the next mount -------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run the core's background work until cancelled (at unmount): the content
        cache's downloads, the streamed uploads, the held uploads of temporary names.
        Without it (unit tests of single operations) nothing downloads ahead, streams or
        is held: every flush uploads at once."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._t.content.run)
            await nursery.start(self.streams.run)
            await nursery.start(self._held.run)
            await nursery.start(self.queue.run)
            task_status.started()

    async def upload_held(self) -> None:
        """Upload every held file now (before unmounting); errors are logged."""
        await self._held.upload_held()

    def uploads_in_flight(self) -> int:
        return self._files.in_flight()

    async def wait_uploads(self, timeout: float = 120.0) -> None:
        """Until no upload is in flight (unmount, SIGTERM); bounded."""
        await self._files.wait_uploads(timeout)

    def restore_journal(self) -> list[LocalFile]:
        """Bring back the local files of a previous mount (`LocalFiles.restore_journal`)."""
        return self._files.restore_journal()

    async def resume_uploads(self, todo: list[LocalFile]) -> None:
        """Upload what a previous mount left: one at a time (sync), or queued (async)."""
        if self.queue.enabled:
            self.queue.restore(todo)
            return
        await self._files.resume_uploads(todo)

    def retry_failed(self) -> int:
        """Upload every failed file again, in the background, oldest first (SIGUSR1,
        `orfs sync --retry`; in both modes). Returns how many."""
        return self.queue.retry_failed()

    def stop_queue(self) -> None:
        """Unmounted: start no new background upload (what waits stays journaled)."""
        self.queue.stop()

    async def drain_queue(self, timeout: float = 120.0) -> None:
        """Until the background queue is empty (SIGTERM); bounded."""
        await self.queue.drain(timeout)

    def queue_stats(self) -> dict[str, object]:
        return {"mode": "async" if self.queue.enabled else "sync",
                "uploaded_files": self.queue.uploaded_files,
                "uploaded_bytes": self.queue.uploaded_bytes,
                "retry_requests": self.queue.retry_requests,
                "upload_streams": self.queue.streams if self.queue.enabled else 1}
