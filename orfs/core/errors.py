"""The filesystem core's typed errors.

The core never raises ``pyfuse3.FUSEError``: it raises one of these, and the FUSE
adapter (``orfs.fuse.errno_table``) maps each to one errno. ``message`` is for the log.

    CoreError
     ├── NoEntry          the name or inode does not exist
     ├── Exists           the name is taken (O_EXCL, mkdir, RENAME_NOREPLACE)
     ├── NotEmpty         rmdir of a folder with entries
     ├── IsADirectory     a file operation on a folder
     ├── NotADirectory    a folder operation on a file
     ├── NotPermitted     an operation this filesystem does not do (yet)
     ├── AccessDenied     bytes the API will not serve; a 401 at upload
     ├── FileTooBig       past the 100 MiB upload limit; a 413
     ├── NoSpace          the workspace quota is full (403 at upload)
     ├── Unsupported      a content type the service refuses (400 at upload); xattr writes
     ├── ReadOnly         a write on a read-only mount
     ├── NameTooLong      a created name over 255 bytes
     ├── InvalidArgument  a flag or name the operation cannot take
     ├── NoAttribute      getxattr of a name that is not there
     └── IOFailure        the API failed (after retries) or answered nonsense
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of the core's errors."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class NoEntry(CoreError):
    pass


class Exists(CoreError):
    pass


class NotEmpty(CoreError):
    pass


class IsADirectory(CoreError):
    pass


class NotADirectory(CoreError):
    pass


class NotPermitted(CoreError):
    pass


class AccessDenied(CoreError):
    pass


class FileTooBig(CoreError):
    pass


class NoSpace(CoreError):
    pass


class Unsupported(CoreError):
    pass


class ReadOnly(CoreError):
    pass


class NameTooLong(CoreError):
    pass


class InvalidArgument(CoreError):
    pass


class NoAttribute(CoreError):
    pass


class IOFailure(CoreError):
    """The API failed or could not be reached; ``message`` says why."""
