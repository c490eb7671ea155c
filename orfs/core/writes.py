"""Local files: bytes staged on disk until they are uploaded, and the upload errors.

A `LocalFile` is one file whose bytes live in ``cache_root/staging/`` (0600): created
through the mount, or taking over a remote file's name by O_TRUNC. Its life:

    pending --flush/fsync (dirty, non-empty)--> uploading --ok--> uploaded --last release--> adopted
                                                    \\--error--> failed --write--> pending
    (pending/failed with size 0, or never written: stays local, no upload)

``dirty`` says the staged bytes differ from anything uploaded; a flush uploads only
then (so a flush before any write, or a second flush, uploads nothing). ``generation``
counts writes: an upload that overlapped a write does not clear ``dirty``.
The write path's own state (issue 5's streamed upload) is `write_mode`, a small state
machine driven by `orfs.core.streaming.UploadStreams` (diagram there)::

    fresh      empty; no write yet (or truncated to 0)
    appending  every write so far continued where the last ended, from byte 0
    streaming  ``stream`` (an `UploadStream`) sends the bytes while they are written
    done       the stream was sealed by a flush, which waits for its answer
    random     anything else happened: the file uploads at flush, from staging
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import trio

from orfs.api.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
)
from orfs.api.models import RemoteFile
from orfs.core.errors import (
    AccessDenied,
    CoreError,
    FileTooBig,
    IOFailure,
    NoSpace,
    Unsupported,
)

if TYPE_CHECKING:
    from orfs.core.streaming import UploadStream

LocalState = Literal["pending", "uploading", "failed", "uploaded"]
WriteMode = Literal["fresh", "appending", "streaming", "done", "random"]


@dataclasses.dataclass(eq=False)
class LocalFile:
    serial: int
    path: tuple[str, ...]           # display path where it is shown while local
    staged: Path
    fd: int
    journal_key: str
    created_ns: int
    mode: int                        # permission bits
    mode_set: bool = False           # chmod'ed (or created with a non-default mode)
    size: int = 0
    modified_ns: int = 0
    atime_set: int | None = None     # utimens
    mtime_set: int | None = None
    replaces: str | None = None      # remote id to delete once uploaded
    state: LocalState = "pending"
    error: str | None = None
    dirty: bool = False
    generation: int = 0
    handles: int = 0
    unlinked: bool = False
    remote: RemoteFile | None = None  # the uploaded version, while handles stay open
    lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)
    # The write path's state (module doc); "random" unless created empty.
    write_mode: WriteMode = "random"
    appended: int = 0                # end of the last in-order write ("appending")
    stream: UploadStream | None = None  # the unsealed streamed upload ("streaming")

    def close_fd(self) -> None:
        if self.stream is not None:
            self.stream.cancel()     # nobody will flush it now; never let it complete
            self.stream = None
            self.write_mode = "random"
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def upload_error(exc: ApiError) -> CoreError:
    """The core error an upload failure becomes (DESIGN.md "Writing")."""
    if isinstance(exc, BadRequest):
        return Unsupported(exc.message)      # the service refused the content type
    if isinstance(exc, PayloadTooLarge):
        return FileTooBig(exc.message)
    if isinstance(exc, Forbidden):
        return NoSpace(exc.message)           # the 10 GiB workspace quota
    if isinstance(exc, Unauthorized):
        return AccessDenied(exc.message)
    return IOFailure(exc.message)
