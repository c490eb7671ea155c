"""The filesystem core: one async method per operation, in plain Python types.

Knows nothing of the kernel: the FUSE adapter (`orfs.fuse.ops`) converts `Attributes`
and maps `orfs.core.errors` to errnos. The contract is docs/SEMANTICS.md.

Concurrency invariants (one trio thread, many handler tasks):
- Everything between two awaits is atomic. Resolving a name and acting on the result
  happen without an await between them, except where an API request is the action;
  each such request is followed by re-checking what it may have raced with.
- A local file uploads under its own lock, so two flushes never upload it twice; the
  second finds it clean and returns.
- Inode numbers are only ever rebound, never reused (see inodes.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

import trio
from cachetools import TTLCache

from orfs.api.errors import ApiError, Forbidden, NotFound, Unauthorized
from orfs.api.models import RemoteFile
from orfs.api.retry import upload_may_have_applied
from orfs.api.upload import UploadBody, UploadSizeMismatch
from orfs.config import MAX_FILE_SIZE
from orfs.core import names
from orfs.core.content import CacheHandle, ContentCache, ContentUnavailable
from orfs.core.errors import (
    AccessDenied,
    CoreError,
    Exists,
    FileTooBig,
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
from orfs.core.inodes import (
    ByIdKey,
    DirKey,
    FileHandle,
    FileKey,
    Inode,
    InodeTable,
    Key,
    LocalKey,
)
from orfs.core.landed import MAX_ROUNDS, ROUNDS_TIME, Attempt, find_landed
from orfs.core.namespace import Namespace
from orfs.core.replace import copy_cached, copy_fd, looks_temporary
from orfs.core.state import JournalEntry, State, make_private_dir
from orfs.core.streaming import UploadStreams
from orfs.core.writes import LocalFile, LocalState, upload_error

log = logging.getLogger(__name__)

BY_ID = ".by-id"
NAME_MAX = 255
QUOTA = 10 * 1024**3            # the workspace quota (files-api.md)
BLOCK = 4096
RENAME_NOREPLACE = 1            # linux/fs.h
RENAME_EXCHANGE = 2
_XATTR_PREFIX = "user.openrouter."
STATUS_XATTR = "user.orfs.status"
INTERRUPTED = ("the mount stopped while this file was being written; its bytes are kept "
               "here but not uploaded (write and close it again to upload it)")


class FilesApi(Protocol):
    """The part of `orfs.api.client.FilesClient` the core uses (a test seam)."""

    def list_pages(self, limit: int = 1000) -> AsyncIterator[list[RemoteFile]]: ...

    async def retrieve(self, file_id: str) -> RemoteFile: ...

    async def upload(self, filename: str, body: UploadBody) -> RemoteFile: ...

    async def delete(self, file_id: str) -> None: ...

    def stats(self) -> dict[str, int]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    ino: Inode
    mode: int           # type and permission bits
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int

    @property
    def blocks(self) -> int:
        return -(-self.size // 512)


@dataclasses.dataclass(frozen=True, slots=True)
class FsStats:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namemax: int


@dataclasses.dataclass(eq=False)
class _ReadHandle:
    ino: Inode
    cache: CacheHandle


@dataclasses.dataclass(eq=False)
class _LocalHandle:
    ino: Inode
    local: LocalFile
    writable: bool


@dataclasses.dataclass(eq=False)
class _DirHandle:
    ino: Inode
    entries: list[tuple[str, Key]]


def _ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _check_name(name: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise NameTooLong(name[:40] + "...")
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"not a valid name: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"not UTF-8: {name!r}") from None


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """API errors outside uploads -> core errors (uploads use writes.upload_error)."""
    try:
        yield
    except NotFound as exc:
        raise NoEntry(f"{what}: {exc.message}") from exc
    except (Unauthorized, Forbidden) as exc:
        raise AccessDenied(f"{what}: {exc}") from exc
    except ApiError as exc:
        raise IOFailure(f"{what}: {exc}") from exc


class Filesystem:
    """The mount's state and operations; see docs/SEMANTICS.md."""

    def __init__(self, client: FilesApi, content: ContentCache, state: State, *,
                 staging_dir: Path, dir_cache_ttl: float = 10.0, read_only: bool = False,
                 info: Mapping[str, object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stream_uploads: bool = True, temp_grace: float = 2.0) -> None:
        self._client = client
        self._content = content
        self._state = state
        self._staging = Path(staging_dir)
        make_private_dir(self._staging)
        self.read_only = read_only
        self._info = dict(info or {})
        self.ns = Namespace(client, ttl=dir_cache_ttl, clock=clock)
        # Streamed uploads of sequential writers (issue 5); run by `streams.run`.
        self.streams = UploadStreams(lambda name, body: self._client.upload(name, body),
                                     lambda lf: self._raw(lf.path), enabled=stream_uploads,
                                     allowed=self._may_stream)
        self.inodes = InodeTable()
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._started_ns = time.time_ns()
        self._locals: dict[int, LocalFile] = {}
        self._attached: dict[str, LocalFile] = {}  # uploaded, still open: id -> local
        self._gone: dict[str, RemoteFile] = {}     # deleted here, inode maybe still held
        self._handles: dict[int, _ReadHandle | _LocalHandle | _DirHandle] = {}
        self._next_fh = 1
        self._next_serial = 1
        # Issue 6 (exactly-once uploads, crash recovery; see orfs/core/landed.py):
        self._sealed: set[int] = set()           # serials whose journal row says closed
        self._resume_since: dict[str, float] = {}  # journal key -> a crashed upload's start
        self._own_ids: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=3600)
        # Issue 4: a closed file with a temporary-looking name waits this long for a
        # rename before it uploads under its own name (run by `run`; without it, none).
        self._temp_grace = temp_grace
        self._nursery: trio.Nursery | None = None
        self._deferred: dict[int, float] = {}      # serial -> upload-not-before (clock)
        self._pristine: dict[int, tuple[str, int]] = {}  # serial -> (copied id, generation)

    # ---- helpers -----------------------------------------------------------------------

    def _key(self, ino: int) -> Key:
        key = self.inodes.key_of(ino)
        if key is None:
            raise NoEntry(f"inode {ino}")
        return key

    def _folder(self, ino: int) -> tuple[str, ...]:
        key = self._key(ino)
        if isinstance(key, DirKey):
            return key.path
        if isinstance(key, ByIdKey):
            raise NotPermitted(".by-id holds existing files only")
        raise NotADirectory(f"inode {ino}")

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnly("read-only mount")

    def _new_fh(self, handle: _ReadHandle | _LocalHandle | _DirHandle) -> FileHandle:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return FileHandle(fh)

    def _local_of(self, key: Key) -> LocalFile | None:
        if isinstance(key, LocalKey):
            return self._locals.get(key.serial)
        if isinstance(key, FileKey):
            return self._attached.get(key.id)
        return None

    def _readable(self, rf: RemoteFile) -> bool:
        return rf.downloadable or rf.id in self._attached or self._content.is_cached(rf.id)

    def _dir_attrs(self, ino: Inode) -> Attributes:
        t = self._started_ns
        return Attributes(ino, stat.S_IFDIR | 0o755, 2, self._uid, self._gid, 0, t, t, t)

    def _local_attrs(self, ino: Inode, local: LocalFile) -> Attributes:
        mtime = local.mtime_set if local.mtime_set is not None else local.modified_ns
        atime = local.atime_set if local.atime_set is not None else mtime
        return Attributes(ino, stat.S_IFREG | (local.mode & 0o7777), 1, self._uid, self._gid,
                          local.size, atime, mtime, local.created_ns)

    def _file_attrs(self, ino: Inode, rf: RemoteFile, nlink: int = 1) -> Attributes:
        created = _ns(rf.created_at)
        ov = self._state.get_override(rf.id)
        readable = self._readable(rf)
        perm = 0o644 if readable else 0o200
        mtime = atime = created
        if ov is not None:
            if ov.mode is not None:
                perm = ov.mode & 0o7777
            mtime = ov.mtime_ns if ov.mtime_ns is not None else created
            atime = ov.atime_ns if ov.atime_ns is not None else mtime
        if not readable:
            perm &= ~0o444  # the API will not serve it: never claim it can be read
        return Attributes(ino, stat.S_IFREG | perm, nlink, self._uid, self._gid, rf.size,
                          atime, mtime, created)

    async def _attrs(self, ino: Inode, key: Key) -> Attributes:
        if isinstance(key, (DirKey, ByIdKey)):
            return self._dir_attrs(ino)
        if isinstance(key, LocalKey):
            local = self._locals.get(key.serial)
            if local is None:
                raise NoEntry(f"local file {key.serial}")
            return self._local_attrs(ino, local)
        with _api_errors("retrieve"):
            rf = await self.ns.fresh_record(key.id)
        if rf is None:
            gone = self._gone.get(key.id)
            if gone is None:
                raise NoEntry(key.id)
            return self._file_attrs(ino, gone, nlink=0)
        return self._file_attrs(ino, rf)

    def _entry_attrs(self, ino: Inode, key: Key) -> Attributes:
        """Attributes from memory only (readdir: the listing is fresh)."""
        if isinstance(key, FileKey):
            rf = self.ns.record(key.id)
            if rf is not None:
                return self._file_attrs(ino, rf)
            return self._dir_attrs(ino)  # unreachable in practice; never raise in readdir
        if isinstance(key, LocalKey):
            local = self._locals.get(key.serial)
            if local is not None:
                return self._local_attrs(ino, local)
        return self._dir_attrs(ino)

    async def _resolve(self, parent: int, name: str) -> Key | None:
        pkey = self._key(parent)
        if isinstance(pkey, ByIdKey):
            with _api_errors("retrieve"):
                rf = await self.ns.fresh_record(name)
            return None if rf is None else FileKey(rf.id)
        if not isinstance(pkey, DirKey):
            raise NotADirectory(f"inode {parent}")
        if pkey.path == () and name == BY_ID:
            return ByIdKey()
        with _api_errors("list"):
            return await self.ns.lookup(pkey.path, name)

    # ---- namespace operations ------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Attributes:
        """The entry name in parent; adds one kernel reference to its inode."""
        if name == ".":
            key = self._key(parent)
        elif name == "..":
            pkey = self._key(parent)
            key = DirKey(pkey.path[:-1]) if isinstance(pkey, DirKey) else DirKey(())
        else:
            found = await self._resolve(parent, name)
            if found is None:
                raise NoEntry(name)
            key = found
        ino = self.inodes.inode_for(key)
        attrs = await self._attrs(ino, key)
        self.inodes.remember(ino)
        return attrs

    async def getattr(self, ino: int) -> Attributes:
        return await self._attrs(Inode(ino), self._key(ino))

    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            key = self.inodes.forget(ino, n)
            if isinstance(key, FileKey):
                self._gone.pop(key.id, None)

    def remember(self, ino: Inode) -> None:
        self.inodes.remember(ino)

    async def opendir(self, ino: int) -> FileHandle:
        key = self._key(ino)
        if isinstance(key, ByIdKey):
            return self._new_fh(_DirHandle(Inode(ino), []))  # documented: lists nothing
        if not isinstance(key, DirKey):
            raise NotADirectory(f"inode {ino}")
        with _api_errors("list"):
            await self.ns.ensure_fresh()
        # A sorted snapshot taken now: readdir offsets index into it, so entries are
        # neither skipped nor repeated if the folder changes between readdir calls.
        entries = self.ns.children(key.path)
        if entries is None:
            if key.path:
                raise NoEntry("/".join(key.path))
            entries = []
        return self._new_fh(_DirHandle(Inode(ino), entries))

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Attributes]]:
        """(next offset, name, attributes) from offset start; lazy, from memory only.

        The caller calls `remember(attrs.ino)` for each entry the kernel took.
        """
        handle = self._handles.get(fh)
        if not isinstance(handle, _DirHandle):
            return
        for i in range(start, len(handle.entries)):
            name, key = handle.entries[i]
            ino = self.inodes.inode_for(key)
            yield i + 1, name, self._entry_attrs(ino, key)

    def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def mkdir(self, parent: int, name: str, mode: int) -> Attributes:
        self._writable()
        folder = self._folder(parent)
        _check_name(name)
        if await self._resolve(parent, name) is not None:
            raise Exists(name)
        path = (*folder, name)
        self.ns.add_local_folder(path)
        ino = self.inodes.inode_for(DirKey(path))
        self.inodes.remember(ino)
        return self._dir_attrs(ino)

    async def rmdir(self, parent: int, name: str) -> None:
        self._writable()
        self._folder(parent)
        key = await self._resolve(parent, name)
        if key is None:
            raise NoEntry(name)
        if not isinstance(key, DirKey):
            raise NotADirectory(name)
        if self.ns.children(key.path):
            raise NotEmpty(name)
        self.ns.remove_local_folder(key.path)
        self.inodes.unbind(key)

    async def unlink(self, parent: int, name: str) -> None:
        self._writable()
        if not isinstance(self._key(parent), ByIdKey):  # .by-id/<id>: unlink by id
            self._folder(parent)
        key = await self._resolve(parent, name)
        if key is None:
            raise NoEntry(name)
        if isinstance(key, (DirKey, ByIdKey)):
            raise IsADirectory(name)
        if isinstance(key, LocalKey):
            local = self._locals[key.serial]
            self._keep_folder(local.path)
            replaces = local.replaces
            self._drop_local(local)
            if replaces is not None:
                await self._delete_remote(replaces)
            return
        attached = self._attached.pop(key.id, None)
        if attached is not None:
            attached.unlinked = True
            _unlink_quietly(attached.staged)
        path = self.ns.display_path(key.id)
        if path is not None:
            self._keep_folder(path)
        await self._delete_remote(key.id)

    def _keep_folder(self, path: tuple[str, ...]) -> None:
        """A folder the user saw stays (as local) when its last file goes, so `rm -r`
        can rmdir it."""
        if len(path) > 1:
            self.ns.add_local_folder(path[:-1])

    async def _delete_remote(self, file_id: str) -> None:
        with _api_errors("delete"), contextlib.suppress(NotFound):
            await self._client.delete(file_id)
        rf = self.ns.remove(file_id)
        if rf is not None:
            self._gone[file_id] = rf
        self._content.drop(file_id)
        self._state.drop_override(file_id)

    def _drop_local(self, local: LocalFile) -> None:
        local.unlinked = True
        self.ns.remove_local_file(local.path, local.serial)
        self._state.journal_remove(local.journal_key)
        _unlink_quietly(local.staged)
        if local.handles == 0:
            local.close_fd()
            self._locals.pop(local.serial, None)

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int) -> None:
        self._writable()
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("RENAME_EXCHANGE is not supported")
        old_folder = self._folder(old_parent)
        new_folder = self._folder(new_parent)
        _check_name(new_name)
        while True:
            src = await self._resolve(old_parent, old_name)
            if src is None:
                raise NoEntry(old_name)
            dst = await self._resolve(new_parent, new_name)
            if dst is not None and flags & RENAME_NOREPLACE:
                raise Exists(new_name)
            local = self._locals.get(src.serial) if isinstance(src, LocalKey) else None
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
        if local is not None and self._upload_due(local):
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
            if isinstance(dst, LocalKey):
                victim = self._locals[dst.serial]
                local.replaces = victim.replaces
                self._drop_local(victim)
            elif isinstance(dst, FileKey):
                local.replaces = dst.id
            self.ns.remove_local_file(local.path, local.serial)
            local.path = new_path
            self.ns.add_local_file(new_path, local.serial)
            self._state.journal_update(local.journal_key, filename=self._raw(new_path),
                                       replaces=local.replaces)
            return
        if (isinstance(src, DirKey) and self.ns.is_local_folder(src.path)
                and not self.ns.children(src.path) and dst is None):
            self.ns.remove_local_folder(src.path)
            self.ns.add_local_folder(new_path)
            ino = self.inodes.existing(src)
            if ino is not None:
                self.inodes.rebind(ino, DirKey(new_path))
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

    # ---- rename by re-upload, rewrites, temporary names (issue 4) ------------------------

    def _may_stream(self, local: LocalFile) -> bool:
        """A temporary name is not streamed: it is held for a rename and uploaded once,
        under the final name (a stream under the temporary name would be cancelled)."""
        return self._nursery is None or not looks_temporary(local.path[-1])

    def _open_for_writing(self, local: LocalFile) -> bool:
        return any(isinstance(h, _LocalHandle) and h.local is local and h.writable
                   for h in self._handles.values())

    def _upload_due(self, local: LocalFile) -> bool:
        """Closed (for writing) with bytes no upload has sent: a rename must upload it."""
        return (local.dirty and local.size > 0 and not local.unlinked and local.remote is None
                and not self._open_for_writing(local))

    def _not_held(self, what: str, path: tuple[str, ...]) -> NotPermitted:
        why = "its bytes are not held here and the API does not serve them"
        log.info("%s %s: EPERM: %s", what, "/".join(path), why)
        return NotPermitted(why)

    async def _rename_by_upload(self, local: LocalFile, dst: Key | None,
                                new_path: tuple[str, ...]) -> None:
        """Upload a closed local file under its new name, then let go of what it replaced.
        If the upload fails nothing moves: the file stays at its old name (failed)."""
        old_path, old_replaces = local.path, local.replaces
        victim = self._locals.get(dst.serial) if isinstance(dst, LocalKey) else None
        target = dst.id if isinstance(dst, FileKey) else (
            victim.replaces if victim is not None else None)
        if local.replaces is None:
            local.replaces = target  # deleted by the upload, as an O_TRUNC replace would be
        self._deferred.pop(local.serial, None)
        local.path = new_path
        try:
            await self.upload(local)
        except CoreError:
            if local.path == new_path:
                local.path, local.replaces = old_path, old_replaces
                self._state.journal_update(local.journal_key, filename=self._raw(old_path),
                                           replaces=old_replaces)
            raise
        self.ns.remove_local_file(old_path, local.serial)
        if local.remote is None and not local.unlinked:
            self.ns.add_local_file(new_path, local.serial)  # written meanwhile: local still
        await self._discard_target(dst, done=target if old_replaces is None else None)

    async def _rename_remote(self, src_id: str, dst: Key | None, old_path: tuple[str, ...],
                             new_path: tuple[str, ...]) -> None:
        """An uploaded file: its bytes (held here, or downloaded through the cache) are
        uploaded under the new name, then the old file and the target are deleted. The
        inode stays. If the upload fails, nothing changes."""
        with _api_errors("retrieve"):
            rf = await self.ns.fresh_record(src_id)
        if rf is None:
            raise NoEntry("/".join(old_path))
        if isinstance(dst, (DirKey, ByIdKey)):
            raise IsADirectory(new_path[-1])
        if not self._readable(rf):
            raise self._not_held(f"rename {'/'.join(old_path)} ->", new_path)
        ov = self._state.get_override(rf.id)
        local = await self._stage_copy(rf, new_path, replaces=rf.id)
        self._seal(local)  # final bytes: after a crash the next mount finishes the rename
        try:
            await self.upload(local)
        except CoreError:
            self._drop_local(local)
            raise
        new = local.remote
        if new is not None:
            ino = self.inodes.existing(FileKey(src_id))
            if ino is not None:
                self.inodes.rebind(ino, FileKey(new.id))
            if ov is None or ov.mtime_ns is None:  # mv keeps the modification time
                self._state.set_override(new.id, mtime_ns=_ns(rf.created_at))
        await self._discard_target(dst, done=None)

    async def _discard_target(self, dst: Key | None, *, done: str | None) -> None:
        """What a rename replaced goes: a local file is dropped (with the remote file it
        was replacing), a remote file deleted (``done``: already deleted). A failed
        delete is logged, not raised: the rename itself has happened."""
        doomed: list[str] = []
        if isinstance(dst, LocalKey):
            victim = self._locals.get(dst.serial)
            if victim is not None and not victim.unlinked:
                if victim.replaces is not None:
                    doomed.append(victim.replaces)
                self._drop_local(victim)
        elif isinstance(dst, FileKey):
            attached = self._attached.pop(dst.id, None)
            if attached is not None:
                attached.unlinked = True
                _unlink_quietly(attached.staged)
            doomed.append(dst.id)
        for file_id in doomed:
            if file_id == done:
                continue
            try:
                await self._delete_remote(file_id)
            except CoreError as exc:
                log.warning("renamed over %s but could not delete it: %s", file_id,
                            exc.message)
                self._state.record_error(f"delete of replaced {file_id}: {exc.message}")

    async def _stage_copy(self, rf: RemoteFile, path: tuple[str, ...],
                          replaces: str | None) -> LocalFile:
        """A new local file, not yet visible, holding a copy of rf's bytes: from its
        staged file if it is still open after its upload, else through the content cache
        (downloading it if needed), streamed in bounded chunks."""
        ov = self._state.get_override(rf.id)
        mode = ov.mode if ov is not None and ov.mode is not None else 0o644
        local = self._new_local(path, mode, replaces=replaces, visible=False)
        local.mode_set = False  # rf's override moves to the new id at upload
        attached = self._attached.get(rf.id)
        try:
            if attached is not None and attached.fd >= 0:
                size = await copy_fd(attached.fd, local.fd, attached.size)
            else:
                try:
                    cache = await self._content.open(rf)
                    try:
                        size = await copy_cached(cache, local.fd)
                    finally:
                        cache.close()
                except ContentUnavailable as exc:
                    raise (AccessDenied if exc.not_downloadable else IOFailure)(
                        exc.reason) from exc
        except BaseException:
            self._drop_local(local)
            raise
        local.size = size
        self._touch(local)
        self.streams.resized(local, size)  # not a sequential writer: uploads from staging
        return local

    async def _open_rewrite(self, inode: Inode, rf: RemoteFile, flags: int) -> FileHandle:
        """Open an uploaded file for writing without O_TRUNC (``>>``, ``r+``, in-place
        edits): its bytes are copied into staging, the writes land there, and the flush
        uploads it and deletes the old file. Never written: dropped at the last close."""
        path = self.ns.display_path(rf.id)
        if path is None:
            raise NotPermitted("write through .by-id")
        if not self._readable(rf):
            raise self._not_held("open for writing", path)
        local = await self._stage_copy(rf, path, replaces=rf.id)
        if (self.inodes.key_of(inode) != FileKey(rf.id) or self.ns.record(rf.id) is None
                or self.ns.display_path(rf.id) != path):
            # Another open, a rename or an unlink won while we copied: decide again.
            self._drop_local(local)
            return await self.open(inode, flags)
        local.dirty = False  # a copy: nothing to upload until something is written
        self._pristine[local.serial] = (rf.id, local.generation)
        self.ns.add_local_file(path, local.serial)
        self.inodes.rebind(inode, LocalKey(local.serial))
        return self._open_local(inode, local, flags)

    def _revert_pristine(self, local: LocalFile) -> bool:
        """At the last close of a rewrite copy that was never written: drop the copy and
        show the remote file again (no request)."""
        entry = self._pristine.pop(local.serial, None)
        if entry is None:
            return False
        file_id, gen = entry
        if (local.generation != gen or local.dirty or local.unlinked
                or local.remote is not None or local.state != "pending"):
            return False
        ino = self.inodes.existing(LocalKey(local.serial))
        self._drop_local(local)
        if ino is not None and self.ns.record(file_id) is not None:
            self.inodes.rebind(ino, FileKey(file_id))
        return True

    async def _truncate_remote(self, inode: Inode, rf: RemoteFile, size: int) -> None:
        """truncate of an uploaded file: to 0, a new empty local file takes its place
        (like O_TRUNC, no request); otherwise a copy is resized and uploaded now, and
        the old file deleted. Unreadable bytes: EPERM."""
        path = self.ns.display_path(rf.id)
        if path is None:
            raise NotPermitted("truncate through .by-id")
        if size > MAX_FILE_SIZE:
            raise FileTooBig(f"{size} bytes is past the upload limit")
        if size == 0:
            ov = self._state.get_override(rf.id)
            mode = ov.mode if ov is not None and ov.mode is not None else 0o644
            local = self._new_local(path, mode, replaces=rf.id)
            local.mode_set = False
            self.inodes.rebind(inode, LocalKey(local.serial))
            return
        if not self._readable(rf):
            raise self._not_held("truncate", path)
        local = await self._stage_copy(rf, path, replaces=rf.id)
        self._resize(local, size)
        self._seal(local)
        try:
            await self.upload(local)
        except CoreError:
            self._drop_local(local)
            raise
        if local.remote is not None:
            self.inodes.rebind(inode, FileKey(local.remote.id))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the held uploads of temporary names until cancelled. Without it running,
        nothing is held: every flush uploads. At unmount, held files stay journaled and
        the next mount uploads them (SIGTERM uploads them first: `upload_held`)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def _defer(self, local: LocalFile) -> bool:
        """At flush/fsync: hold the upload of a temporary-looking name for temp_grace
        seconds, so a rename in that time uploads it once, under the final name."""
        if (self._nursery is None or self._temp_grace <= 0 or not local.dirty
                or local.size == 0 or local.unlinked or local.remote is not None
                or not looks_temporary(local.path[-1])):
            return False
        first = local.serial not in self._deferred
        self._deferred[local.serial] = trio.current_time() + self._temp_grace
        if first:
            self._nursery.start_soon(self._upload_later, local)
        return True

    async def _upload_later(self, local: LocalFile) -> None:
        """The grace period of a held file ran out: upload it under its own name (errors
        go to the log, the xattrs and the status, as nobody waits for them)."""
        try:
            while True:
                due = self._deferred.get(local.serial)
                if due is None:
                    return  # renamed (and so uploaded), or uploaded by upload_held
                if trio.current_time() >= due:
                    break
                await trio.sleep_until(due)
            del self._deferred[local.serial]
            if local.unlinked or self._open_for_writing(local):
                return  # removed; or written again: its next flush decides
            log.info("%s was not renamed within %.1f s: uploading it under its own name",
                     "/".join(local.path), self._temp_grace)
            await self.upload(local)
        except CoreError as exc:
            log.warning("held upload of %s failed: %s", "/".join(local.path), exc.message)
        except Exception:
            log.exception("held upload of %s failed unexpectedly", "/".join(local.path))

    async def upload_held(self) -> None:
        """Upload every held file now (before unmounting); errors are logged."""
        while self._deferred:
            serial = next(iter(self._deferred))
            del self._deferred[serial]
            local = self._locals.get(serial)
            if local is None:
                continue
            try:
                await self.upload(local)
            except CoreError as exc:
                log.warning("held upload of %s failed: %s", "/".join(local.path),
                            exc.message)

    # ---- files -------------------------------------------------------------------------

    @staticmethod
    def _raw(path: tuple[str, ...]) -> str:
        return names.raw_filename(path[:-1], path[-1])

    def _new_local(self, path: tuple[str, ...], mode: int, replaces: str | None,
                   *, visible: bool = True) -> LocalFile:
        serial = self._next_serial
        self._next_serial += 1
        staged = self._staging / f"{serial}-{secrets.token_hex(8)}"
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        now = time.time_ns()
        perm = mode & 0o7777
        local = LocalFile(serial=serial, path=path, staged=staged, fd=fd,
                          journal_key=staged.name, created_ns=now, modified_ns=now,
                          mode=perm, mode_set=perm != 0o644, replaces=replaces)
        self._state.journal_add(JournalEntry(
            key=local.journal_key, filename=self._raw(path), staged=str(staged),
            state="pending", replaces=replaces, created=time.time(),
            mode=perm if local.mode_set else None))
        self._locals[serial] = local
        if visible:  # invisible: a staging copy shown only once its upload succeeded
            self.ns.add_local_file(path, serial)
        local.write_mode = "fresh"  # created empty: a sequential writer may stream it
        return local

    def _open_local(self, ino: Inode, local: LocalFile, flags: int) -> FileHandle:
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable and flags & os.O_TRUNC and local.size:
            self._resize(local, 0)
        local.handles += 1
        return self._new_fh(_LocalHandle(ino, local, writable))

    async def create(self, parent: int, name: str, mode: int, flags: int
                     ) -> tuple[FileHandle, Attributes]:
        """A new local file, visible at once; adds one kernel reference."""
        self._writable()
        folder = self._folder(parent)
        _check_name(name)
        existing = await self._resolve(parent, name)
        if existing is not None:
            if flags & os.O_EXCL:
                raise Exists(name)
            ino = self.inodes.inode_for(existing)
            fh = await self.open(ino, flags)
            attrs = await self.getattr(self.inodes.existing(existing) or ino)
            self.inodes.remember(attrs.ino)
            return fh, attrs
        local = self._new_local((*folder, name), mode, replaces=None)
        ino = self.inodes.inode_for(LocalKey(local.serial))
        fh = self._open_local(ino, local, flags)
        self.inodes.remember(ino)
        return fh, self._local_attrs(ino, local)

    async def open(self, ino: int, flags: int) -> FileHandle:
        inode = Inode(ino)
        key = self._key(ino)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable:
            self._writable()
        if isinstance(key, (DirKey, ByIdKey)):
            raise IsADirectory(f"inode {ino}")
        local = self._local_of(key)
        if local is not None and not local.unlinked:
            return self._open_local(inode, local, flags)
        if isinstance(key, LocalKey):
            raise NoEntry(f"inode {ino}")
        with _api_errors("retrieve"):
            rf = await self.ns.fresh_record(key.id)
        if rf is None:
            raise NoEntry(key.id)
        if writable:
            if not flags & os.O_TRUNC:
                return await self._open_rewrite(inode, rf, flags)  # >>, r+, in place
            path = self.ns.display_path(rf.id)
            if path is None:
                raise NotPermitted("write through .by-id")
            ov = self._state.get_override(rf.id)
            mode = ov.mode if ov is not None and ov.mode is not None else 0o644
            local = self._new_local(path, mode, replaces=rf.id)
            local.mode_set = False  # the replaced file's override moves over at upload
            self.inodes.rebind(inode, LocalKey(local.serial))
            return self._open_local(inode, local, flags)
        if not self._readable(rf):
            raise AccessDenied(f"{rf.filename}: the API does not serve uploaded files")
        if self.ns.api_down() and not self._content.is_cached(rf.id):
            # Known down (docs/RELIABILITY.md): fail now, not after a download's retries.
            raise IOFailure(f"{rf.filename}: the API is not answering and its bytes are "
                            "not cached")
        try:
            cache = await self._content.open(rf)
        except ContentUnavailable as exc:
            raise (AccessDenied if exc.not_downloadable else IOFailure)(exc.reason) from exc
        return self._new_fh(_ReadHandle(inode, cache))

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handles.get(fh)
        if isinstance(handle, _ReadHandle):
            try:
                return await handle.cache.read(offset, size)
            except ContentUnavailable as exc:
                raise (AccessDenied if exc.not_downloadable else IOFailure)(
                    exc.reason) from exc
        if isinstance(handle, _LocalHandle):
            await trio.lowlevel.checkpoint()
            return os.pread(handle.local.fd, size, offset)
        raise InvalidArgument(f"bad file handle {fh}")

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handles.get(fh)
        if not isinstance(handle, _LocalHandle) or not handle.writable:
            raise InvalidArgument(f"file handle {fh} is not open for writing")
        local = handle.local
        end = offset + len(data)
        if end > MAX_FILE_SIZE:
            # The writer has failed: do not upload what it left (a truncated file).
            message = f"a write past the {MAX_FILE_SIZE} byte upload limit"
            self.streams.abandon(local, "a write past the upload limit")
            if local.remote is None:
                local.dirty = False
                local.state = "failed"
                local.error = message
                self._state.journal_update(local.journal_key, state="failed", error=message)
            raise FileTooBig(message)
        await trio.lowlevel.checkpoint()
        if local.remote is not None:
            self._reopen(local)
        os.pwrite(local.fd, data, offset)
        local.size = max(local.size, end)
        self._touch(local)
        self.streams.wrote(local, offset, end)
        return len(data)

    def _touch(self, local: LocalFile) -> None:
        local.dirty = True
        local.generation += 1
        local.modified_ns = time.time_ns()
        if local.serial in self._sealed:  # written after a close: not final any more
            self._sealed.discard(local.serial)
            self._state.journal_update(local.journal_key, closed=None)
        if local.state == "failed":
            local.state = "pending"
            local.error = None
            self._state.journal_update(local.journal_key, state="pending", error=None)

    def _resize(self, local: LocalFile, size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise FileTooBig(f"{size} bytes is past the upload limit")
        if local.remote is not None:
            self._reopen(local)
        os.ftruncate(local.fd, size)
        local.size = size
        self._touch(local)
        self.streams.resized(local, size)

    def _reopen(self, local: LocalFile) -> None:
        """A write after an upload on a still-open file: local again, replacing it."""
        rf = local.remote
        assert rf is not None
        local.remote = None
        self._attached.pop(rf.id, None)
        local.path = self.ns.display_path(rf.id) or local.path
        local.replaces = rf.id
        local.state = "pending"
        self._state.journal_add(JournalEntry(
            key=local.journal_key, filename=self._raw(local.path), staged=str(local.staged),
            state="pending", replaces=rf.id, created=time.time()))
        self.ns.add_local_file(local.path, local.serial)
        ino = self.inodes.existing(FileKey(rf.id))
        if ino is not None:
            self.inodes.rebind(ino, LocalKey(local.serial))

    async def flush(self, fh: int) -> None:
        """close(): upload a changed, non-empty file and wait, so errors reach close()."""
        handle = self._handles.get(fh)
        if isinstance(handle, _LocalHandle):
            if handle.writable:
                self._seal(handle.local)  # issue 6: after a crash, closed files upload
            if self._defer(handle.local):
                return  # a temporary name: held for a rename (issue 4)
            await self.upload(handle.local)

    async def fsync(self, fh: int) -> None:
        handle = self._handles.get(fh)
        if isinstance(handle, _LocalHandle) and self._defer(handle.local):
            # A temporary name: durable here (staged + journaled), uploaded after a rename.
            await trio.to_thread.run_sync(os.fsync, handle.local.fd)
            return
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if isinstance(handle, _ReadHandle):
            handle.cache.close()
        elif isinstance(handle, _LocalHandle):
            local = handle.local
            local.handles -= 1
            if local.handles <= 0:
                if self._revert_pristine(local):
                    pass  # opened for writing, never written: the remote file stays
                elif local.unlinked:
                    local.close_fd()
                    self._locals.pop(local.serial, None)
                elif local.remote is not None:
                    self._retire(local)
        await trio.lowlevel.checkpoint()

    async def upload(self, local: LocalFile) -> None:
        """Upload local if it changed and is not empty; raises the mapped core error."""
        if not local.dirty or local.unlinked or local.size == 0:
            return
        async with local.lock:
            if not local.dirty or local.unlinked or local.size == 0:
                return  # another flush uploaded it while we waited
            gen = local.generation
            raw = self._raw(local.path)
            local.state = "uploading"
            self._state.journal_update(local.journal_key, state="uploading", filename=raw,
                                       replaces=local.replaces)
            body = UploadBody.from_path(local.staged, size=local.size)
            try:
                rf = await self._upload_exactly_once(local, raw, body)
            except (ApiError, UploadSizeMismatch) as exc:
                message = exc.message if isinstance(exc, ApiError) else str(exc)
                local.state = "failed"
                local.error = message
                if local.generation == gen:
                    local.dirty = False  # retried by the next write-and-close, not by any flush
                self._state.journal_update(local.journal_key, state="failed", error=message)
                log.warning("upload of %s failed: %s", raw, message)
                self._state.record_error(f"upload of {raw}: {message}")
                raise (upload_error(exc) if isinstance(exc, ApiError)
                       else IOFailure(message)) from exc
            old = local.replaces
            self._uploaded(local, rf, raw, gen)
            if old is not None:
                try:
                    await self._delete_remote(old)
                except CoreError as exc:
                    log.warning("uploaded %s but could not delete the file it replaces (%s):"
                                " %s", raw, old, exc.message)
                    self._state.record_error(f"delete of replaced {old}: {exc.message}")

    async def _send_upload(self, local: LocalFile, raw: str, body: UploadBody) -> RemoteFile:
        """The upload request: the answer to the file's streamed upload when one carries
        exactly its bytes under this name (sealed now), else `body` sent now. Raises
        what `client.upload` raises."""
        stream = self.streams.take(local, raw)
        if stream is not None:
            rf = await stream.outcome()
            if rf is not None:
                return rf
            log.info("streamed upload of %s failed before its end; uploading it again", raw)
        return await self._client.upload(raw, body)

    # ---- exactly-once uploads and crash recovery (issue 6) -----------------------------

    def _seal(self, local: LocalFile) -> None:
        """A writer closed (flushed) the file: its staged bytes are final until the next
        write, so after a crash they may be uploaded (journal ``closed``)."""
        if local.serial not in self._sealed and not local.unlinked:
            self._sealed.add(local.serial)
            self._state.journal_update(local.journal_key, closed=time.time())

    async def _upload_exactly_once(self, local: LocalFile, raw: str,
                                   body: UploadBody) -> RemoteFile:
        """Send the upload; after a failure that may have been applied (500, timeout,
        unreadable answer), look for the file it made before sending again, and adopt
        it if there (orfs/core/landed.py). Bounded: MAX_ROUNDS rounds, none started
        after ROUNDS_TIME seconds. Raises the first round's error when it gives up."""
        size = local.size
        resumed = self._resume_since.pop(local.journal_key, None)
        if resumed is not None:
            # A previous mount died during this upload: it may have landed.
            attempt = Attempt(raw, size, resumed)
        else:
            # A stream started at the first writes, before this flush.
            since = local.created_ns / 1e9 if local.stream is not None else time.time()
            attempt = Attempt(raw, size, since, frozenset(
                rf.id for rf in self.ns.records() if rf.filename == raw and rf.size == size))
        self._state.journal_update(local.journal_key, attempted=attempt.since)
        if resumed is not None:
            found = await find_landed(self._client, attempt, self._not_ours(local))
            if found is not None:
                log.warning("the upload of %s interrupted by the last stop had landed as %s; "
                            "adopting it (not sending it again)", raw, found.id)
                self._own_ids[found.id] = True
                return found
            log.info("the upload of %s interrupted by the last stop had not landed; "
                     "sending it", raw)
        started = time.monotonic()
        first: ApiError | None = None
        for round_ in range(1, MAX_ROUNDS + 1):
            try:
                if round_ == 1:
                    rf = await self._send_upload(local, raw, body)
                else:
                    rf = await self._client.upload(raw, body)
            except ApiError as exc:
                if not upload_may_have_applied(exc):
                    raise
                first = first or exc
                log.warning("upload of %s may have been applied (%s): looking for it before "
                            "sending it again (round %d)", raw, exc, round_)
            else:
                self._own_ids[rf.id] = True
                return rf
            try:
                found = await find_landed(self._client, attempt, self._not_ours(local))
            except ApiError as exc:
                log.warning("cannot tell whether the upload of %s landed (listing failed: %s);"
                            " not sending it again", raw, exc)
                raise first from None
            if found is not None:
                log.warning("upload of %s had landed as %s despite the error; adopting it",
                            raw, found.id)
                self._own_ids[found.id] = True
                return found
            if round_ == MAX_ROUNDS or time.monotonic() - started > ROUNDS_TIME:
                break
            log.info("upload of %s did not land; sending it again", raw)
        assert first is not None
        log.warning("upload of %s: giving up after %d rounds in %.0f s", raw, round_,
                    time.monotonic() - started)
        raise first

    def _not_ours(self, local: LocalFile) -> set[str]:
        """Ids an upload of `local` cannot have made: the file it replaces, and the
        results of this mount's other uploads (taken at each check)."""
        out: set[str] = set(self._own_ids.keys())
        if local.replaces is not None:
            out.add(local.replaces)
        return out

    def _uploaded(self, local: LocalFile, rf: RemoteFile, raw: str, gen: int) -> None:
        """Bind the local file to its new id. Synchronous: one atomic step."""
        if rf.filename != raw:
            log.warning("the service stored %r as %r; it is shown where the service put it",
                        raw, rf.filename)
        old = local.replaces
        if old is not None:
            self.ns.remove(old)
            self._state.move_override(old, rf.id)
        self.ns.insert(rf)
        if local.mode_set or local.mtime_set is not None:
            self._state.set_override(rf.id, mode=local.mode if local.mode_set else None,
                                     mtime_ns=local.mtime_set, atime_ns=local.atime_set)
        self._state.journal_remove(local.journal_key)
        local.replaces = None
        local.error = None
        if local.generation != gen:
            # Written during the upload: stays local and dirty, and replaces what we sent.
            local.replaces = rf.id
            local.state = "pending"
            self._state.journal_add(JournalEntry(
                key=local.journal_key, filename=raw, staged=str(local.staged),
                state="pending", replaces=rf.id, created=time.time()))
            return
        local.dirty = False
        local.state = "uploaded"
        local.remote = rf
        self.ns.remove_local_file(local.path, local.serial)
        ino = self.inodes.existing(LocalKey(local.serial))
        if ino is not None:
            self.inodes.rebind(ino, FileKey(rf.id))
        self._attached[rf.id] = local
        if local.handles <= 0:
            self._retire(local)

    def _retire(self, local: LocalFile) -> None:
        """The last handle of an uploaded file closed: its bytes become the cache's."""
        rf = local.remote
        assert rf is not None
        local.close_fd()
        self._attached.pop(rf.id, None)
        self._locals.pop(local.serial, None)
        try:
            self._content.adopt(rf.id, local.staged, local.size)
        except OSError as exc:
            log.warning("could not keep the bytes of %s in the cache: %s", rf.filename, exc)
            _unlink_quietly(local.staged)

    async def setattr(self, ino: int, *, size: int | None = None, mode: int | None = None,
                      atime_ns: int | None = None, mtime_ns: int | None = None,
                      fh: int | None = None) -> Attributes:
        inode = Inode(ino)
        key = self._key(ino)
        if size is not None or mode is not None or atime_ns is not None or mtime_ns is not None:
            self._writable()
        if isinstance(key, (DirKey, ByIdKey)):
            if size is not None:
                raise IsADirectory(f"inode {ino}")
            return self._dir_attrs(inode)  # folders have no stored attributes: accepted
        local = self._local_of(key)
        if local is not None and not local.unlinked:
            if size is not None and size != local.size:
                self._resize(local, size)
            if mode is not None:
                local.mode = mode & 0o7777
                local.mode_set = True
            if mtime_ns is not None:
                local.mtime_set = mtime_ns
            if atime_ns is not None:
                local.atime_set = atime_ns
            if isinstance(key, FileKey) and (mode is not None or mtime_ns is not None
                                             or atime_ns is not None):
                self._state.set_override(key.id, mode=None if mode is None else mode & 0o7777,
                                         mtime_ns=mtime_ns, atime_ns=atime_ns)
            return await self._attrs(inode, self._key(ino))
        if isinstance(key, LocalKey):
            raise NoEntry(f"inode {ino}")
        with _api_errors("retrieve"):
            rf = await self.ns.fresh_record(key.id)
        if rf is None:
            raise NoEntry(key.id)
        if size is not None and size != rf.size:
            await self._truncate_remote(inode, rf, size)  # a rewrite (issue 4)
            return await self.setattr(ino, mode=mode, atime_ns=atime_ns, mtime_ns=mtime_ns,
                                      fh=fh)
        if mode is not None or mtime_ns is not None or atime_ns is not None:
            self._state.set_override(rf.id, mode=None if mode is None else mode & 0o7777,
                                     mtime_ns=mtime_ns, atime_ns=atime_ns)
        return self._file_attrs(inode, rf)

    # ---- xattrs, statfs, status ------------------------------------------------------------

    async def _xattrs(self, ino: int) -> dict[str, bytes]:
        key = self._key(ino)
        if key == DirKey(()):
            return {STATUS_XATTR: json.dumps(self.status()).encode()}
        local = self._locals.get(key.serial) if isinstance(key, LocalKey) else None
        if local is not None:
            out = {"user.orfs.state": local.state.encode()}
            if local.state == "failed" and local.error is not None:
                out["user.orfs.error"] = local.error.encode()
            return out
        if isinstance(key, FileKey):
            with _api_errors("retrieve"):
                rf = await self.ns.fresh_record(key.id)
            if rf is None:
                raise NoEntry(key.id)
            return {
                _XATTR_PREFIX + "id": rf.id.encode(),
                _XATTR_PREFIX + "filename": rf.filename.encode("utf-8", "surrogatepass"),
                _XATTR_PREFIX + "mime_type": rf.mime_type.encode(),
                _XATTR_PREFIX + "created_at": rf.created_at.isoformat().encode(),
                _XATTR_PREFIX + "downloadable": b"true" if rf.downloadable else b"false",
            }
        return {}

    async def getxattr(self, ino: int, name: str) -> bytes:
        value = (await self._xattrs(ino)).get(name)
        if value is None:
            raise NoAttribute(name)
        return value

    async def listxattr(self, ino: int) -> list[str]:
        return list(await self._xattrs(ino))

    def statfs(self) -> FsStats:
        used = sum(rf.size for rf in self.ns.records())
        used += sum(lf.size for lf in self._locals.values() if lf.remote is None)
        free = max(0, QUOTA - used)
        count = len(self.ns) + sum(1 for lf in self._locals.values() if lf.remote is None)
        return FsStats(bsize=BLOCK, frsize=BLOCK, blocks=QUOTA // BLOCK, bfree=free // BLOCK,
                       bavail=free // BLOCK, files=count, ffree=1_000_000, namemax=NAME_MAX)

    def _live_locals(self) -> list[LocalFile]:
        return [lf for lf in self._locals.values() if not lf.unlinked and lf.remote is None]

    def status(self) -> dict[str, object]:
        """The root's user.orfs.status (never the key)."""
        live = self._live_locals()
        used, limit = self._content.usage()
        return {
            "pending": sum(1 for lf in live if lf.state == "pending" and lf.size > 0),
            "uploading": sum(1 for lf in live if lf.state == "uploading"),
            "failed": [{"path": "/".join(lf.path), "error": lf.error or ""}
                       for lf in live if lf.state == "failed"],
            "local": len(live),
            "cache": {"used": used, "limit": limit},
            "requests": self._client.stats(),
            "errors_last_hour": [{"time": t, "message": m}
                                 for t, m in self._state.recent_errors(3600)],
            **self._info,
        }

    def drop_listing(self) -> None:
        self.ns.invalidate()

    def uploads_in_flight(self) -> int:
        return sum(1 for lf in self._locals.values()
                   if lf.state == "uploading" and not lf.unlinked)

    async def wait_uploads(self, timeout: float = 120.0) -> None:
        """Until no upload is in flight (unmount, SIGTERM); bounded. One that does not
        end in time stays journaled (state uploading) and resumes at the next mount."""
        with trio.move_on_after(timeout):
            while self.uploads_in_flight():
                await trio.sleep(0.05)

    # ---- journal ---------------------------------------------------------------------

    def restore_journal(self) -> list[LocalFile]:
        """Bring back the local files of a previous mount (crash, or failed uploads),
        visible at their names. Returns those that still need an upload.

        A file closed since its last write (journal ``closed``) is uploaded again; if the
        previous mount had started sending it, the upload first looks for the file that
        attempt may have created (`_upload_exactly_once`). A file that was still being
        written when the mount stopped is kept, readable, as failed: its bytes may be a
        torn copy, so they are never uploaded unless someone writes and closes it."""
        todo: list[LocalFile] = []
        for entry in self._state.journal_entries():
            staged = Path(entry.staged)
            try:
                fd = os.open(staged, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                self._state.journal_remove(entry.key)
                continue
            st = os.fstat(fd)
            size = st.st_size
            serial = self._next_serial
            self._next_serial += 1
            path = names.display_path(entry.filename)
            now = time.time_ns()
            state: LocalState = "failed" if entry.state == "failed" else "pending"
            error = entry.error
            closed = entry.closed is not None and st.st_mtime <= entry.closed + 0.5
            if state == "pending" and size > 0 and not closed:
                state = "failed"
                error = INTERRUPTED
                self._state.journal_update(entry.key, state="failed", error=error)
                log.warning("%s was being written when the last mount stopped: kept here, "
                            "not uploaded", entry.filename)
            local = LocalFile(serial=serial, path=path, staged=staged, fd=fd,
                              journal_key=entry.key, created_ns=int(entry.created * 1e9),
                              modified_ns=now, mode=entry.mode or 0o644,
                              mode_set=entry.mode is not None, size=size,
                              mtime_set=entry.mtime_ns, replaces=entry.replaces,
                              state=state, error=error, dirty=state == "pending" and size > 0)
            self._locals[serial] = local
            self.ns.add_local_file(path, serial)
            if closed:
                self._sealed.add(serial)
            if local.dirty:
                if entry.state == "uploading" or entry.attempted is not None:
                    self._resume_since[entry.key] = (entry.attempted or entry.closed
                                                     or entry.created)
                todo.append(local)
        return todo

    async def resume_uploads(self, todo: list[LocalFile]) -> None:
        """Upload what a previous mount left closed but not uploaded, one at a time (an
        upload it had started is first looked for in the listing: exactly once)."""
        for local in todo:
            try:
                await self.upload(local)
            except CoreError as exc:
                log.warning("resumed upload of %s failed: %s", "/".join(local.path),
                            exc.message)
            else:
                if local.state != "failed":
                    log.info("resumed upload of %s done", "/".join(local.path))


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != _errno.ENOENT:
            log.warning("could not remove %s: %s", path, exc)
