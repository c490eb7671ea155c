"""When a closed file uploads: at once, or held a moment for a rename.

Most files upload at the flush that closes them. A file whose name looks temporary
(`looks_temporary`: rsync's ``.name.XXXXXX``, ``x.tmp``, ``sedXXXXXX``, Python's
``tmpXXXXXXXX``...) is instead held for ``temp_grace`` seconds (`HeldUploads`): the
tools that write such names rename them over the real one moments later, and a rename
within the grace period uploads the bytes once, under the final name. Unrenamed, the
file uploads under its own name when the period ends. The rule is written out in
docs/SEMANTICS.md ("Temporary names"); keep the two in step.

The flush, fsync and release that ask are in closing.py.
"""

from __future__ import annotations

import logging
import re

import trio

from orfs.core.errors import CoreError
from orfs.core.local import LocalFile
from orfs.core.tables import Tables
from orfs.core.tasks import TaskOwner
from orfs.core.upload_queue import UploadQueue
from orfs.core.writes import LocalFiles

log = logging.getLogger(__name__)

_TEMP_NAMES = re.compile(
    r"""
      \..+\.[A-Za-z0-9_]{6}           # rsync, mktemp: .name.XXXXXX
    | .+\.(?:tmp|temp|TMP|swp|swx|swo|part|partial)  # editors, downloaders: x.tmp, .x.swp
    | .+~                             # backups: x~
    | sed[A-Za-z0-9]{6}               # sed -i: ./sedXXXXXX
    | tmp[a-z0-9_]{8}(?:\..*)?        # Python tempfile: tmpab12cd34, tmpab12cd34.json
    | tmp\.[A-Za-z0-9]{10}            # mktemp: tmp.XXXXXXXXXX
    | \.goutputstream-[A-Za-z0-9]+    # GLib (gedit, nautilus) safe save
    | \#.+\#                          # emacs auto-save #x#
    | \.\#.+                          # emacs lock .#x
    """,
    re.VERBOSE,
)


def looks_temporary(name: str) -> bool:
    """Does this file name (one path component) look like a temporary file that a tool
    will rename or remove within moments? See docs/SEMANTICS.md for the list."""
    return _TEMP_NAMES.fullmatch(name) is not None


class HeldUploads:
    """Closed files with temporary-looking names wait ``temp_grace`` seconds for a rename
    before they upload under their own name (module doc). Only while `run` runs: without
    it nothing is held and every flush uploads."""

    def __init__(self, tables: Tables, files: LocalFiles, temp_grace: float,
                 queue: UploadQueue) -> None:
        self._t = tables
        self._files = files
        self._queue = queue  # uploads now (sync) or queues (async) what the grace ends
        self._temp_grace = temp_grace
        self._tasks = TaskOwner()  # the held files' timers, while `run` runs
        self._deferred: dict[int, float] = {}      # serial -> upload-not-before (clock)
        tables.held = self._deferred               # the status counts them as waiting

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the held uploads of temporary names until cancelled. At unmount, held
        files stay journaled and the next mount uploads them (SIGTERM uploads them
        first: `upload_held`)."""
        await self._tasks.run(task_status=task_status)

    @property
    def holding(self) -> bool:
        """Are temporary names held at all (running, with a grace period)?"""
        return self._tasks.running and self._temp_grace > 0

    def may_stream(self, local: LocalFile) -> bool:
        """A temporary name is not streamed: it is held for a rename and uploaded once,
        under the final name (a stream under the temporary name would be cancelled)."""
        return not self.holding or not looks_temporary(local.path[-1])

    def hold(self, local: LocalFile) -> bool:
        """At flush/fsync: hold the upload of a temporary-looking name for temp_grace
        seconds, so a rename in that time uploads it once, under the final name."""
        if (not self.holding or not local.dirty
                or local.size == 0 or local.unlinked or local.remote is not None
                or not looks_temporary(local.path[-1])):
            return False
        first = local.serial not in self._deferred
        self._deferred[local.serial] = trio.current_time() + self._temp_grace
        if first:
            self._tasks.start_soon(self._upload_later, local)
        return True

    def cancel(self, local: LocalFile) -> None:
        """A rename uploads it now: it is no longer held."""
        self._deferred.pop(local.serial, None)

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
            if local.unlinked or self._t.open_for_writing(local):
                del self._deferred[local.serial]
                return  # removed; or written again: its next flush decides
            log.info("%s was not renamed within %.1f s: uploading it under its own name",
                     "/".join(local.path), self._temp_grace)
            # Still counted as held until it is uploaded (sync) or queued (async), so
            # that the status never shows it as waiting for nothing (orfs sync).
            try:
                await self._queue.submit(local)
            finally:
                again = self._deferred.get(local.serial)
                if again == due:
                    del self._deferred[local.serial]
                elif again is not None:  # closed again meanwhile: a new grace period
                    self._tasks.start_soon(self._upload_later, local)
        except CoreError as exc:
            log.warning("held upload of %s failed: %s", "/".join(local.path), exc.message)
        except Exception:
            log.exception("held upload of %s failed unexpectedly", "/".join(local.path))

    async def upload_held(self) -> None:
        """Upload every held file now (before unmounting); errors are logged."""
        while self._deferred:
            serial = next(iter(self._deferred))
            del self._deferred[serial]
            local = self._t.locals.get(serial)
            if local is None:
                continue
            try:
                await self._queue.submit(local)
            except CoreError as exc:
                log.warning("held upload of %s failed: %s", "/".join(local.path),
                            exc.message)
