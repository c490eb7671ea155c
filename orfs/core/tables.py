"""What every part of the filesystem core shares, and the queries over it.

`Tables` holds the mount's in-memory tables: inodes, open file handles, local files and
uploaded files still open (a `LocalTable`, changed only by writes.py), and files deleted
here whose inode the kernel may still hold. Its methods answer what an inode or a name is and
what its attributes are, from these tables and the namespace (a stale record is
refreshed by one retrieve); and delete a remote file, which unlink, rename and the
upload of a replacement all do.

Also here: the plain types the façade returns (`Attributes`, `FsStats`), the open
handles, and the small rules every operation applies (`check_name`, `api_errors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime
from typing import NamedTuple, Protocol

from orfs.api.errors import ApiError, Forbidden, NotFound, Unauthorized
from orfs.api.models import RemoteFile
from orfs.api.upload import UploadBody
from orfs.core import names
from orfs.core.cache import CacheHandle, ContentCache, ContentUnavailable
from orfs.core.errors import (
    AccessDenied,
    CoreError,
    InvalidArgument,
    IOFailure,
    NameTooLong,
    NoEntry,
    NotADirectory,
    NotPermitted,
)
from orfs.core.inodes import ByIdKey, DirKey, FileHandle, FileKey, Inode, InodeTable, Key, LocalKey
from orfs.core.local import LocalFile, LocalTable
from orfs.core.namespace import Namespace
from orfs.core.state import State

log = logging.getLogger(__name__)

BY_ID = ".by-id"


class FilesApi(Protocol):
    """The part of `orfs.api.client.FilesClient` the core uses (a test seam)."""

    def list_pages(self, limit: int = 1000) -> AsyncIterator[list[RemoteFile]]: ...

    async def list_all(self, add: Callable[[list[RemoteFile]], object],
                       limit: int = 1000) -> None: ...

    async def retrieve(self, file_id: str) -> RemoteFile: ...

    async def upload(self, filename: str, body: UploadBody) -> RemoteFile: ...

    async def delete(self, file_id: str) -> None: ...

    def stats(self) -> dict[str, int]: ...

    async def probe(self) -> None: ...

    on_success: Callable[[], object] | None


class Attributes(NamedTuple):
    """What stat shows of an inode. A named tuple: `ls -l` builds one per file, and a
    tuple is built in about half the time of a frozen dataclass (0.47 vs 0.78 µs)."""

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


@dataclasses.dataclass(slots=True)
class FolderMeta:
    """What chmod, utimensat and changes of entries made to a folder (the API has no
    folders to store them on: kept for the mount's life)."""

    mode: int       # permission bits
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclasses.dataclass(eq=False)
class ReadHandle:
    """An uploaded file open for reading: its bytes come through the content cache.

    ``record`` is the file as it was at the open: if the file is deleted elsewhere
    while this handle is open, the handle still has attributes (nlink 0) to show."""

    cache: CacheHandle
    record: RemoteFile


@dataclasses.dataclass(eq=False)
class LocalHandle:
    """A local file open (for reading or writing): its bytes are the staged file."""

    local: LocalFile
    writable: bool


@dataclasses.dataclass(eq=False)
class DirHandle:
    """A folder open for readdir: a snapshot of its entries (see `Filesystem.opendir`)."""

    entries: list[tuple[str, Key]]


Handle = ReadHandle | LocalHandle | DirHandle


def ns_time(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def raw_filename(path: tuple[str, ...]) -> str:
    """The remote filename a display path uploads as."""
    return names.raw_filename(path[:-1], path[-1])


def check_name(name: str) -> None:
    """A name the user creates (create, mkdir, rename's target): valid and not too long."""
    if len(name.encode("utf-8", "surrogateescape")) > names.NAME_MAX:
        raise NameTooLong(name[:40] + "...")
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"not a valid name: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"not UTF-8: {name!r}") from None


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """API errors outside uploads -> core errors (uploads use writes.upload_error)."""
    try:
        yield
    except NotFound as exc:
        raise NoEntry(f"{what}: {exc.message}") from exc
    except (Unauthorized, Forbidden) as exc:
        raise AccessDenied(f"{what}: {exc}") from exc
    except ApiError as exc:
        raise IOFailure(f"{what}: {exc}") from exc


def content_error(exc: ContentUnavailable) -> CoreError:
    """The core error for bytes the content cache could not get."""
    return (AccessDenied if exc.not_downloadable else IOFailure)(exc.reason)


class Tables:
    """The mount's in-memory tables and the lookups over them (module doc)."""

    def __init__(self, client: FilesApi, content: ContentCache, state: State,
                 ns: Namespace) -> None:
        self.client = client
        self.content = content
        self.state = state
        self.ns = ns
        self.inodes = InodeTable()
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.started_ns = time.time_ns()
        # Local files, and uploaded ones still open; changed only by writes.LocalFiles.
        self.locals = LocalTable()
        self.gone: dict[str, RemoteFile] = {}       # deleted here, inode maybe still held
        # Status changes the API cannot store, for the mount's life: an uploaded file's
        # ctime after chmod/utimensat here (id -> ns), a folder's mode and times.
        self.ctimes: dict[str, int] = {}
        self.folders: dict[tuple[str, ...], FolderMeta] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        # The background upload queue's counters, for the status (set by Filesystem).
        self.queue_stats: Callable[[], dict[str, object]] = dict
        # Serials of closed files held for a rename (upload_policy.py; read-only here).
        self.held: Mapping[int, float] = {}

    def new_fh(self, handle: Handle) -> FileHandle:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        return FileHandle(fh)

    # ---- what an inode or a name is --------------------------------------------------

    def key(self, ino: int) -> Key:
        key = self.inodes.key_of(ino)
        if key is None:
            raise NoEntry(f"inode {ino}")
        return key

    def folder(self, ino: int) -> tuple[str, ...]:
        """The path of a folder something is made or removed in."""
        key = self.key(ino)
        if isinstance(key, DirKey):
            return key.path
        if isinstance(key, ByIdKey):
            raise NotPermitted(".by-id holds existing files only")
        raise NotADirectory(f"inode {ino}")

    async def resolve(self, parent: int, name: str) -> Key | None:
        pkey = self.key(parent)
        if isinstance(pkey, ByIdKey):
            with api_errors("retrieve"):
                rf = await self.ns.fresh_record(name)
            return None if rf is None else FileKey(rf.id)
        if not isinstance(pkey, DirKey):
            raise NotADirectory(f"inode {parent}")
        if pkey.path == () and name == BY_ID:
            return ByIdKey()
        with api_errors("list"):
            return await self.ns.lookup(pkey.path, name)

    async def fresh_remote(self, file_id: str) -> RemoteFile:
        """The remote file's record, refreshed if expired; NoEntry if it is gone."""
        with api_errors("retrieve"):
            rf = await self.ns.fresh_record(file_id)
        if rf is None:
            raise NoEntry(file_id)
        return rf

    def local_of(self, key: Key) -> LocalFile | None:
        """The local file holding key's bytes: not uploaded yet, or uploaded and open."""
        return self.locals.of(key)

    def readable(self, rf: RemoteFile) -> bool:
        return (rf.downloadable or self.locals.attached(rf.id) is not None
                or self.content.is_cached(rf.id))

    def open_for_writing(self, local: LocalFile) -> bool:
        return any(isinstance(h, LocalHandle) and h.local is local and h.writable
                   for h in self.handles.values())

    # ---- attributes ------------------------------------------------------------------

    def dir_attrs(self, ino: Inode, key: Key) -> Attributes:
        meta = self.folders.get(key.path) if isinstance(key, DirKey) else None
        if meta is None:
            t = self.started_ns
            return Attributes(ino, stat.S_IFDIR | 0o755, 2, self.uid, self.gid, 0, t, t, t)
        return Attributes(ino, stat.S_IFDIR | meta.mode, 2, self.uid, self.gid, 0,
                          meta.atime_ns, meta.mtime_ns, meta.ctime_ns)

    def folder_meta(self, path: tuple[str, ...]) -> FolderMeta:
        meta = self.folders.get(path)
        if meta is None:
            t = self.started_ns
            meta = self.folders[path] = FolderMeta(0o755, t, t, t)
        return meta

    def folder_changed(self, path: tuple[str, ...]) -> None:
        """An entry was added to or removed from the folder through the mount."""
        meta = self.folder_meta(path)
        meta.mtime_ns = meta.ctime_ns = time.time_ns()

    def local_attrs(self, ino: Inode, local: LocalFile) -> Attributes:
        mtime = local.mtime_set if local.mtime_set is not None else local.modified_ns
        atime = local.atime_set if local.atime_set is not None else mtime
        ctime = max(local.created_ns, local.modified_ns, local.changed_ns)
        return Attributes(ino, stat.S_IFREG | (local.mode & 0o7777), 1, self.uid, self.gid,
                          local.size, atime, mtime, ctime)

    def file_attrs(self, ino: Inode, rf: RemoteFile, nlink: int = 1) -> Attributes:
        created = ns_time(rf.created_at)
        ov = self.state.get_override(rf.id)
        readable = self.readable(rf)
        perm = 0o644 if readable else 0o200
        mtime = atime = created
        if ov is not None:
            if ov.mode is not None:
                perm = ov.mode & 0o7777
            mtime = ov.mtime_ns if ov.mtime_ns is not None else created
            atime = ov.atime_ns if ov.atime_ns is not None else mtime
        if not readable:
            perm &= ~0o444  # the API will not serve it: never claim it can be read
        ctime = max(created, self.ctimes.get(rf.id, 0))
        return Attributes(ino, stat.S_IFREG | perm, nlink, self.uid, self.gid, rf.size,
                          atime, mtime, ctime)

    async def attrs(self, ino: Inode, key: Key) -> Attributes:
        if isinstance(key, (DirKey, ByIdKey)):
            return self.dir_attrs(ino, key)
        if isinstance(key, LocalKey):
            local = self.locals.get(key.serial)
            if local is None:
                raise NoEntry(f"local file {key.serial}")
            return self.local_attrs(ino, local)
        with api_errors("retrieve"):
            rf = await self.ns.fresh_record(key.id)
        if rf is None:
            gone = self.gone.get(key.id) or self.open_record(key.id)
            if gone is None:
                raise NoEntry(key.id)
            return self.file_attrs(ino, gone, nlink=0)
        return self.file_attrs(ino, rf)

    def open_record(self, file_id: str) -> RemoteFile | None:
        """The record of a file some handle still reads (deleted elsewhere since it
        opened): the kernel asks for its attributes before reads, and an open file stays
        readable. Scans the handles, but only for a file that is gone."""
        for handle in self.handles.values():
            if isinstance(handle, ReadHandle) and handle.record.id == file_id:
                return handle.record
        return None

    def entry_attrs(self, ino: Inode, key: Key) -> Attributes:
        """Attributes from memory only (readdir: the listing is fresh)."""
        if isinstance(key, FileKey):
            rf = self.ns.record(key.id)
            if rf is not None:
                return self.file_attrs(ino, rf)
            return self.dir_attrs(ino, key)  # unreachable in practice; never raise in readdir
        if isinstance(key, LocalKey):
            local = self.locals.get(key.serial)
            if local is not None:
                return self.local_attrs(ino, local)
        return self.dir_attrs(ino, key)

    # ---- the duplicate order -----------------------------------------------------------

    def inherit_age(self, new_id: str, old_id: str) -> None:
        """``new_id`` takes the place of ``old_id`` (which it replaces at its path) in the
        order of files sharing that name, so each keeps the name it was shown under.
        Kept only where it can matter: ``old_id`` had an inherited age, or another file
        has its filename (a duplicate exists now; any later one is newer than both)."""
        if new_id == old_id:
            return
        old = self.ns.record(old_id)
        age = self.ns.age(old_id)
        if old is None or age is None:
            return
        if old_id not in self.state.ages and not any(
                rf.filename == old.filename and rf.id not in (old_id, new_id)
                for rf in self.ns.records()):
            return
        self.state.set_age(new_id, age)
        self.ns.reordered()

    # ---- deleting ----------------------------------------------------------------------

    async def delete_remote(self, file_id: str) -> None:
        """Delete a remote file (already gone is fine) and forget it here."""
        with api_errors("delete"), contextlib.suppress(NotFound):
            await self.client.delete(file_id)
        rf = self.ns.remove(file_id)
        if rf is not None:
            self.gone[file_id] = rf
        self.content.drop(file_id)
        self.state.drop_override(file_id)
        self.state.drop_created_name(file_id)
        self.state.drop_ages((file_id,))
        self.ctimes.pop(file_id, None)

