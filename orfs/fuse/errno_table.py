"""The one table from the core's errors (and the API errors that escape) to errnos.

Judgement calls:
- `NotPermitted` -> EPERM: an operation the service cannot do (link, symlink, rename
  or rewrite of a file whose bytes are not readable, rename of a folder). EPERM, not
  ENOSYS: ENOSYS would make the kernel stop sending that operation for the whole mount.
- `Unsupported` -> EOPNOTSUPP (== ENOTSUP on Linux): the content type the service
  refuses, and xattr writes; `cp -p`/`cp -a` tolerate ENOTSUP on xattrs and ACLs.
- `AccessDenied` -> EACCES: bytes the API will not serve, and a 401.
- `NoAttribute` -> ENODATA (pyfuse3.ENOATTR), what getxattr(2) documents.
- API errors that escape the core: 404 -> ENOENT; 401/403 -> EACCES (outside uploads
  403 means "this endpoint or key may not", not "quota"); everything else -> EIO.
- Anything else is a bug: EIO, with the traceback logged by the adapter.
"""

from __future__ import annotations

import errno

from orfs.api.errors import ApiError, Forbidden, NotFound, Unauthorized
from orfs.core import errors as core

ENODATA = getattr(errno, "ENODATA", 61)

CORE_ERRNO: dict[type[core.CoreError], int] = {
    core.NoEntry: errno.ENOENT,
    core.Exists: errno.EEXIST,
    core.NotEmpty: errno.ENOTEMPTY,
    core.IsADirectory: errno.EISDIR,
    core.NotADirectory: errno.ENOTDIR,
    core.NotPermitted: errno.EPERM,
    core.AccessDenied: errno.EACCES,
    core.FileTooBig: errno.EFBIG,
    core.NoSpace: errno.ENOSPC,
    core.Unsupported: errno.EOPNOTSUPP,
    core.ReadOnly: errno.EROFS,
    core.NameTooLong: errno.ENAMETOOLONG,
    core.InvalidArgument: errno.EINVAL,
    core.NoAttribute: ENODATA,
    core.IOFailure: errno.EIO,
}


def errno_for(exc: BaseException) -> int:
    """The errno for an exception a handler let out (EIO when unknown)."""
    for cls in type(exc).__mro__:
        code = CORE_ERRNO.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    if isinstance(exc, ApiError):
        if isinstance(exc, NotFound):
            return errno.ENOENT
        if isinstance(exc, (Unauthorized, Forbidden)):
            return errno.EACCES
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno  # a local disk error (staging, cache): pass the truth through
    return errno.EIO
