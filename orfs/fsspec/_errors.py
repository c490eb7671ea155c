"""API errors -> the builtin exceptions fsspec users catch.

The errnos are the mount's (docs/SEMANTICS.md): a program that handles ``OSError.errno``
sees the same number through ``openrouter://`` as through the mounted directory, and
tests/fsspec/test_errors.py checks this table against the mount's.

    operation      API error              exception (errno)
    any            404 NotFound           FileNotFoundError (ENOENT)
    any            401 Unauthorized       PermissionError (EACCES)
    read           400 BadRequest         PermissionError (EACCES): the service will not
                                          serve an uploaded file; its message is kept
    read/list      403 Forbidden          PermissionError (EACCES)
    upload         400 BadRequest         OSError (EOPNOTSUPP): a content type it refuses
    upload         403 Forbidden          OSError (ENOSPC): the workspace quota is full
    upload         413 PayloadTooLarge    OSError (EFBIG)
    any            anything else          OSError (EIO): still failing after the retries

No message contains the API key: the client's errors are built from status, the
server's message and the request's method and path only.
"""

from __future__ import annotations

import errno
import os

from orfs.api import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)

__all__ = ["read_error", "upload_error"]


def _make(cls: type[OSError], code: int, path: str, why: str) -> OSError:
    return cls(code, f"{os.strerror(code)}: {why}", path)


def read_error(exc: ApiError, path: str) -> OSError:
    """The exception for a failed list, retrieve, download or delete of `path`."""
    if isinstance(exc, NotFound):
        return _make(FileNotFoundError, errno.ENOENT, path, exc.message)
    if isinstance(exc, BadRequest | Unauthorized | Forbidden):
        return _make(PermissionError, errno.EACCES, path, exc.message)
    return _make(OSError, errno.EIO, path, str(exc))


def upload_error(exc: ApiError, path: str) -> OSError:
    """The exception for a failed upload to `path` (the mount's upload errnos)."""
    if isinstance(exc, BadRequest):
        return _make(OSError, errno.EOPNOTSUPP, path, exc.message)
    if isinstance(exc, PayloadTooLarge):
        return _make(OSError, errno.EFBIG, path, exc.message)
    if isinstance(exc, Forbidden):
        return _make(OSError, errno.ENOSPC, path, exc.message)
    if isinstance(exc, Unauthorized):
        return _make(PermissionError, errno.EACCES, path, exc.message)
    return _make(OSError, errno.EIO, path, str(exc))
