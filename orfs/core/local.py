"""`LocalFile`, one file whose bytes live in staging, and `LocalTable`, the mount's table
of them.

Records only: what a local file is and where to find it. What happens to one (created,
written, uploaded, journaled, resumed) is `orfs.core.writes.LocalFiles`, the one module
that changes a `LocalTable`; everything else (the queries in tables.py, rename, the
status) reads it. The life of a local file and its ``write_mode`` are drawn in
writes.py and streaming.py.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import trio

from orfs.api.models import RemoteFile
from orfs.core import names
from orfs.core.errors import CoreError
from orfs.core.inodes import FileKey, Key, LocalKey
from orfs.core.upload_stream import UploadStream

INTERRUPTED = ("the mount stopped while this file was being written; its bytes are kept "
               "here but not uploaded (write and close it again to upload it)")

# queued: closed with --uploads async, durable, waiting for its background upload.
LocalState = Literal["pending", "queued", "uploading", "failed", "uploaded"]
WriteMode = Literal["fresh", "appending", "streaming", "done", "random"]


@dataclasses.dataclass(eq=False)
class LocalFile:
    serial: int
    path: tuple[str, ...]           # display path where it is shown while local
    staged: Path
    fd: int                          # -1 while closed: opened by `ensure_fd` when needed
    journal_key: str
    created_ns: int
    mode: int                        # permission bits
    mode_set: bool = False           # chmod'ed (or created with a non-default mode)
    size: int = 0
    modified_ns: int = 0
    changed_ns: int = 0              # the last chmod, utimensat or rename (ctime)
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
    # A copy of an uploaded file opened for writing without O_TRUNC: (the id copied,
    # the generation then). Never written by the last close: the copy is dropped.
    pristine: tuple[str, int] | None = None
    # The remote filename it uploads as when it takes over a remote file's name (a
    # rewrite, `cp` over it, a rename onto it): that file's real filename, which a
    # display-only name (an id form, a shortened name) is not. None: its own path.
    remote_name: str | None = None
    # The last failed upload's error (fsync returns it; None after a restart: EIO).
    failure: CoreError | None = None
    transient: bool = False          # ... and it may succeed if tried again (retry.py)
    # Background uploads (--uploads async): failures in a row of a transient kind, and
    # when the next try is due (wall time; None: no automatic retry).
    tries: int = 0
    next_try: float | None = None

    def ensure_fd(self) -> int:
        """The staging file's descriptor, opened again if it was closed (a queued file
        keeps none while it waits, so 10,000 of them hold no descriptors)."""
        if self.fd < 0:
            self.fd = os.open(self.staged, os.O_RDWR | os.O_CLOEXEC)
        return self.fd

    def upload_name(self) -> str:
        """The filename its upload sends."""
        if self.remote_name is not None:
            return self.remote_name
        return names.raw_filename(self.path[:-1], self.path[-1])

    def close_fd(self) -> None:
        if self.stream is not None:
            self.stream.cancel()     # nobody will flush it now; never let it complete
            self.stream = None
            self.write_mode = "random"
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class LocalTable:
    """The local files of one mount by serial, and the uploaded ones still open by the
    id they uploaded as ("attached": their handles keep using the staged bytes).

    Read by everyone; changed only by `LocalFiles` (writes.py), which keeps the two
    maps and each file's state in step."""

    def __init__(self) -> None:
        self._by_serial: dict[int, LocalFile] = {}
        self._attached: dict[str, LocalFile] = {}
        # Read-only views, for the status and for tests that look inside.
        self.by_serial: Mapping[int, LocalFile] = types.MappingProxyType(self._by_serial)

    # ---- reading -----------------------------------------------------------------------

    def get(self, serial: int) -> LocalFile | None:
        return self._by_serial.get(serial)

    def __getitem__(self, serial: int) -> LocalFile:
        return self._by_serial[serial]

    def __iter__(self) -> Iterator[LocalFile]:
        return iter(list(self._by_serial.values()))

    def __len__(self) -> int:
        return len(self._by_serial)

    def attached(self, file_id: str) -> LocalFile | None:
        """The open local copy of an uploaded file, if it is still open."""
        return self._attached.get(file_id)

    def of(self, key: Key) -> LocalFile | None:
        """The local file holding key's bytes: not uploaded yet, or uploaded and open."""
        if isinstance(key, LocalKey):
            return self._by_serial.get(key.serial)
        if isinstance(key, FileKey):
            return self._attached.get(key.id)
        return None

    # ---- changing (LocalFiles only) ----------------------------------------------------

    def add(self, local: LocalFile) -> None:
        self._by_serial[local.serial] = local

    def remove(self, local: LocalFile) -> None:
        self._by_serial.pop(local.serial, None)

    def attach(self, file_id: str, local: LocalFile) -> None:
        self._attached[file_id] = local

    def detach(self, file_id: str) -> LocalFile | None:
        return self._attached.pop(file_id, None)
