"""The thin pyfuse3 adapter: every handler calls the core, converts, maps errors.

One shape per handler (the `handler` decorator): one DEBUG line, the call, and any
exception turned into a `FUSEError` through `errno_table.errno_for`. An exception that
is neither a core nor an API error is a bug: logged with its traceback, answered EIO
(any non-FUSEError exception would kill the mount). `forget` never raises.

Two things live here rather than in the core, because they exist only at the kernel
boundary: the root's hidden ``.orfs-status`` file (the `user.orfs.status` JSON as a
file, for mounts without xattrs: ``--no-xattr``), served under an inode and handle
numbers the core's counters never reach; and the answers to xattr names outside
``user.`` (ENOTSUP at once: see `Operations.getxattr`) and to every xattr request under
``--no-xattr`` (ENOSYS, after which the kernel stops sending them).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from orfs.api.errors import ApiError
from orfs.core.errors import CoreError, InvalidArgument, NoEntry, Unsupported
from orfs.core.fs import Attributes, Filesystem
from orfs.core.inodes import ROOT_INODE
from orfs.fuse.errno_table import ENODATA, errno_for

log = logging.getLogger(__name__)

STATUS_NAME = b".orfs-status"  # in the root, hidden from readdir, like .by-id
# Far above anything the core's counters (inodes, file handles) will hand out.
STATUS_INODE = (1 << 63) - 1
_STATUS_FH_BASE = 1 << 62

P = ParamSpec("P")
R = TypeVar("R")


def _fmt(args: Sequence[object]) -> str:
    out = []
    for a in args:
        if isinstance(a, bytes):
            # Names and xattr names; file data never reaches here (see `handler`).
            out.append(repr(a) if len(a) <= 255 else f"<{len(a)} bytes>")
        elif isinstance(a, (int, str, float, list, tuple)) or a is None:
            out.append(repr(a))
    return ", ".join(out)


def handler(fn: Callable[Concatenate[Operations, P], Coroutine[Any, Any, R]]
            ) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, R]]:
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: P.args, **kwargs: P.kwargs) -> R:
        if log.isEnabledFor(logging.DEBUG):
            if name == "write":  # never log file data, only its length
                log.debug("write(%s, <%d bytes>)", _fmt(args[:2]), len(args[2]))  # type: ignore[arg-type]
            else:
                log.debug("%s(%s)", name, _fmt(args))
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (CoreError, ApiError) as exc:
            code = errno_for(exc)
            # EIO is the one answer that says "something failed": say what, always.
            log.log(logging.WARNING if code == errno.EIO else logging.DEBUG, "%s -> %s: %s",
                    name, errno.errorcode.get(code, code), exc)
            raise pyfuse3.FUSEError(code) from None
        except OSError as exc:
            # The local disk (staging, cache: ENOSPC, EDQUOT, EIO): pass its truth through.
            code = exc.errno or errno.EIO
            log.warning("%s -> %s: local disk: %s", name, errno.errorcode.get(code, code),
                        exc.strerror or exc)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s%s failed unexpectedly; answering EIO", name, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _name(raw: bytes) -> str:
    # Names under the mount are UTF-8; anything else cannot exist here.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NoEntry(repr(raw)) from None


def _new_name(raw: bytes) -> str:
    """A name being made (create, mkdir, mknod, symlink, link, rename's target): one
    that is not UTF-8 cannot be stored by the service, so it is refused (EINVAL), as
    docs/SEMANTICS.md says; looking one up is ENOENT (`_name`)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"not UTF-8: {raw!r}") from None


IO_SIZE = 1024 * 1024  # FUSE's largest write request (fuse3 always allows big writes)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: Filesystem, *, kernel_ttl: float = 1.0, xattrs: bool = True) -> None:
        super().__init__()
        self.fs = fs
        self._ttl = kernel_ttl
        self._xattrs = xattrs
        self.initialized = trio.Event()  # FUSE_INIT answered (see tuning.py)
        self._status_reads: dict[int, bytes] = {}  # open .orfs-status handles: snapshots
        self._next_status_fh = _STATUS_FH_BASE

    # ---- the root's .orfs-status file ----------------------------------------------------

    def _status_bytes(self) -> bytes:
        return json.dumps(self.fs.status(), indent=1).encode() + b"\n"

    def _status_entry(self) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = STATUS_INODE
        e.generation = 0
        e.entry_timeout = self._ttl
        e.attr_timeout = 0  # its size changes with every status
        e.st_mode = stat.S_IFREG | 0o444
        e.st_nlink = 1
        e.st_uid = os.getuid()
        e.st_gid = os.getgid()
        e.st_size = len(self._status_bytes())
        e.st_blksize = 4096
        e.st_blocks = 0
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = time.time_ns()
        return e

    def _is_status(self, parent_inode: int, name: bytes) -> bool:
        return parent_inode == ROOT_INODE and name == STATUS_NAME

    def init(self) -> None:
        # Called by pyfuse3 just before it answers FUSE_INIT; the kernel applies the
        # answer (which caps read-ahead) before any other task runs.
        self.initialized.set()

    def _entry(self, a: Attributes) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.generation = 0
        e.entry_timeout = self._ttl
        e.attr_timeout = self._ttl
        e.st_mode = a.mode
        e.st_nlink = a.nlink
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = 0
        e.st_size = a.size
        # The preferred I/O size: cp, cat and most tools size their buffers from it
        # (coreutils: max(128 KiB, st_blksize)), and the kernel passes writes of up
        # to 1 MiB, so 1 MiB means 8x fewer round trips into Python than 128 KiB.
        e.st_blksize = IO_SIZE
        e.st_blocks = a.blocks
        e.st_atime_ns = a.atime_ns
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    @handler
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if self._is_status(parent_inode, name):
            return self._status_entry()
        return self._entry(await self.fs.lookup(parent_inode, _name(name)))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            log.debug("forget(%d inodes)", len(inode_list))
            self.fs.forget([(ino, n) for ino, n in inode_list if ino != STATUS_INODE])
        except Exception:
            log.exception("forget failed (ignored)")

    @handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if inode == STATUS_INODE:
            return self._status_entry()
        return self._entry(await self.fs.getattr(inode))

    @handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        log.debug("setattr fields: size=%s mode=%s atime=%s mtime=%s uid=%s gid=%s",
                  fields.update_size, fields.update_mode, fields.update_atime,
                  fields.update_mtime, fields.update_uid, fields.update_gid)
        if inode == STATUS_INODE:
            raise pyfuse3.FUSEError(errno.EPERM)
        a = await self.fs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            fh=fh)  # uid/gid (chown) are accepted and ignored
        return self._entry(a)

    @handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.EINVAL)  # there are no symlinks here

    @handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):  # fifos, sockets, devices: EEXIST or EPERM
            await self.fs.refuse_special(parent_inode, _new_name(name), "mknod")
        # A regular file (os.mknod's default): an empty file, as create and close make.
        fh, attrs = await self.fs.create(parent_inode, _new_name(name), mode & ~ctx.umask,
                                         os.O_WRONLY | os.O_EXCL)
        await self.fs.release(fh)
        return self._entry(attrs)

    @handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(
            await self.fs.mkdir(parent_inode, _new_name(name), mode & ~ctx.umask))

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if self._is_status(parent_inode, name):
            raise pyfuse3.FUSEError(errno.EPERM)
        await self.fs.unlink(parent_inode, _name(name))

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.rmdir(parent_inode, _name(name))

    @handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        await self.fs.refuse_special(parent_inode, _new_name(name), "symlink")

    @handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if (self._is_status(parent_inode_old, name_old)
                or self._is_status(parent_inode_new, name_new)):
            raise pyfuse3.FUSEError(errno.EPERM)
        await self.fs.rename(parent_inode_old, _name(name_old), parent_inode_new,
                             _new_name(name_new), flags)

    @handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        await self.fs.refuse_special(new_parent_inode, _new_name(new_name), "link")

    @handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode == STATUS_INODE:
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise pyfuse3.FUSEError(errno.EACCES)
            sfh = self._next_status_fh
            self._next_status_fh += 1
            self._status_reads[sfh] = self._status_bytes()  # one snapshot per open
            # direct_io: reads are answered whatever the size the kernel last saw
            return pyfuse3.FileInfo(fh=sfh, keep_cache=False, direct_io=True)
        fh = await self.fs.open(inode, flags)
        # Content behind an id never changes: keep the kernel's page cache between opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh >= _STATUS_FH_BASE:
            return self._status_reads.get(fh, b"")[off:off + size]
        return await self.fs.read(fh, off, size)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @handler
    async def flush(self, fh: int) -> None:
        if fh >= _STATUS_FH_BASE:
            return
        await self.fs.flush(fh)

    @handler
    async def release(self, fh: int) -> None:
        if fh >= _STATUS_FH_BASE:
            self._status_reads.pop(fh, None)
            return
        await self.fs.release(fh)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh >= _STATUS_FH_BASE:
            return
        await self.fs.fsync(fh)

    @handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.fs.opendir(inode)

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # One pass per entry of a folder (10,000 for `ls -l` of 10,000 files): the
        # lookups are hoisted out of the loop.
        reply, entry, remember = pyfuse3.readdir_reply, self._entry, self.fs.remember
        for next_id, name, attrs in self.fs.readdir(fh, start_id):
            if not reply(token, name.encode(), entry(attrs), next_id):
                break
            remember(attrs.ino)  # readdirplus: the kernel took a reference

    @handler
    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = self.fs.statfs()
        d = pyfuse3.StatvfsData()
        d.f_bsize = s.bsize
        d.f_frsize = s.frsize
        d.f_blocks = s.blocks
        d.f_bfree = s.bfree
        d.f_bavail = s.bavail
        d.f_files = s.files + s.ffree
        d.f_ffree = s.ffree
        d.f_favail = s.ffree
        d.f_namemax = s.namemax
        return d

    @handler
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        # No stored xattrs: ENOTSUP, which cp -p / cp -a / rsync -X tolerate.
        raise Unsupported(f"setxattr {name!r}")

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        # `ls -l` asks every file for security.selinux and system.posix_acl_access, and
        # without FUSE_POSIX_ACL the kernel sends both here, uncached. Only the user.
        # namespace exists here: any other is ENOTSUP, what a filesystem without that
        # namespace's handler answers (fs/xattr.c), and what ls (and libselinux/libacl
        # callers) remember per device: after the first file it stops asking, so an
        # `ls -l` of 10,000 files costs 2 of these round trips, not 20,000.
        # Answered at once, before any core call, log line or exception mapping.
        if not self._xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # --no-xattr: the kernel stops asking
        if not name.startswith(b"user."):
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        if inode == STATUS_INODE:
            raise pyfuse3.FUSEError(ENODATA)
        return await self._user_xattr(inode, name)

    @handler
    async def _user_xattr(self, inode: int, name: bytes) -> bytes:
        return await self.fs.getxattr(inode, name.decode("utf-8", "replace"))

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if not self._xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if inode == STATUS_INODE:
            return []
        return [n.encode() for n in await self.fs.listxattr(inode)]

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise Unsupported(f"removexattr {name!r}")

    @handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attrs = await self.fs.create(parent_inode, _new_name(name),
                                         mode & ~ctx.umask, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False), self._entry(attrs)
