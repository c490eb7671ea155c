"""`UploadQueue`: with ``--uploads async``, closed files upload in the background.

In sync mode (the default) a flush uploads and waits, and this queue is off. In async
mode the flush that closes a written file makes it *durable* instead (the staged bytes
fsync'ed, the journal row set to ``queued`` with an fsync'ed commit: `enqueue`) and
returns; this queue then uploads queued files oldest first, at most ``streams`` at
once, each by `LocalFiles.upload` (so under the one retry policy and the landed check
that makes an upload exactly once, with the same journal states as a sync upload)::

    close --enqueue--> queued --dispatch--> uploading --ok--> uploaded
                         ^  \\                   \\--error--> failed
      write (unqueued)   |   +--unlink: dropped, nothing sent     |  transient: tried
      rename: renamed,   |                                        |  again later_delay
      still queued       +------- retry (due, or orfs sync --retry) <-+  s from now

What changes a queued file, and what it costs (docs/SEMANTICS.md, "What close()
returning 0 promises"): a write takes it out of the queue until its next close, so a
rewrite uploads once, its last version; a rename renames the queued upload (no
request); an unlink drops it (no request). fsync waits for the file's own upload
(`wait_for`), starting it at once if it was still waiting its turn.

Bounded: the queue itself is an ordered set of serials (the `LocalFile` records are
the mount's table of local files anyway); a queued file holds no descriptor (closed
at its last release, `LocalFile.ensure_fd` opens it again), and its bytes are read
from the staging file only while it uploads. After a crash the journal's ``queued``
rows are the queue again (`LocalFiles.restore_journal`).

Failures after close returned are never silent: the file stays local and readable
as ``failed`` with ``user.orfs.error`` (writes.py), a WARNING names it, the status lists
it (with ``next_try`` when it will be retried), and `orfs sync` reports it. A transient
failure (the API down or overloaded: `orfs.api.retry.is_transient`) is tried again
while the mount runs, `later_delay` seconds after each failure (5 s doubling to 5
min); any failure is tried again by `retry_failed` (SIGUSR1, `orfs sync --retry`) and
by the next write-and-close.

Concurrency: the dispatcher is one task; everything between its awaits is atomic, so
a file's state is checked and the upload started in one step. The upload itself takes
the file's lock (writes.py), so an fsync that uploads it meanwhile never uploads twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

import trio

from orfs.api.retry import later_delay
from orfs.core.errors import CoreError, IOFailure
from orfs.core.local import INTERRUPTED, LocalFile
from orfs.core.tables import Tables
from orfs.core.writes import LocalFiles

log = logging.getLogger(__name__)

DEFAULT_STREAMS = 8


class UploadQueue:
    """The background uploads of an async mount (module doc). Off (``enabled`` False)
    in sync mode, where `submit` uploads at once."""

    def __init__(self, tables: Tables, files: LocalFiles, *, enabled: bool,
                 streams: int = DEFAULT_STREAMS,
                 wall: Callable[[], float] = time.time) -> None:
        self._t = tables
        self._files = files
        self.enabled = enabled
        self.streams = max(1, streams)
        self._wall = wall
        self._queue: dict[int, None] = {}    # serials, oldest first (insertion order)
        self._running: set[int] = set()
        self._again: set[int] = set()        # closed again while uploading
        self._retry_at: dict[int, float] = {}  # serial -> wall time of the next try
        self._stopped = False
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        # Statistics (the status shows them; orfs sync turns them into a rate).
        self.uploaded_files = 0
        self.uploaded_bytes = 0
        self.retry_requests = 0

    # ---- running -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Dispatch queued uploads until cancelled (at unmount: uploads in flight are
        cancelled with it; they stay journaled and resume at the next mount)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    self._dispatch()
                    self._changed = trio.Event()
                    due = min(self._retry_at.values(), default=None)
                    if due is None:
                        await self._changed.wait()
                    else:
                        with trio.move_on_after(max(0.0, due - self._wall())):
                            await self._changed.wait()
        finally:
            self._nursery = None

    def _wake(self) -> None:
        self._changed.set()

    def stop(self) -> None:
        """Start no new upload (an unmount: what waits stays journaled)."""
        self._stopped = True
        self._wake()

    def _dispatch(self) -> None:
        now = self._wall()
        for serial, due in list(self._retry_at.items()):
            if due <= now:
                del self._retry_at[serial]
                local = self._t.locals.get(serial)
                if local is not None and local.state == "failed" and not local.unlinked:
                    log.info("trying the upload of %s again", "/".join(local.path))
                    self._retry(local)
        if self._stopped or self._nursery is None:
            return
        while len(self._running) < self.streams and self._queue:
            serial = next(iter(self._queue))
            del self._queue[serial]
            local = self._t.locals.get(serial)
            if local is None or not self._ready(local):
                continue  # dropped, written again, or already uploaded by an fsync
            self._running.add(serial)
            self._nursery.start_soon(self._upload, local)

    def _ready(self, local: LocalFile) -> bool:
        return (local.state == "queued" and local.dirty and local.size > 0
                and not local.unlinked and local.remote is None)

    async def _upload(self, local: LocalFile) -> None:
        try:
            await self._files.upload(local)
        except CoreError as exc:
            self._failed(local, exc)
        except Exception:  # a bug must not end the queue: the file stays, failed
            log.exception("background upload of %s failed unexpectedly",
                          "/".join(local.path))
            if local.state == "uploading":
                local.state = "failed"
                local.error = "an internal error; see the log"
                local.failure = IOFailure(local.error)
                self._t.state.journal_update(local.journal_key, state="failed",
                                             error=local.error)
        else:
            if local.remote is not None or local.state == "uploaded":
                self.uploaded_files += 1
                self.uploaded_bytes += local.size
                local.tries = 0
        finally:
            self._running.discard(local.serial)
            if local.serial in self._again:
                self._again.discard(local.serial)
                # Written and closed during its upload: the bytes sent were not the
                # last (that upload landed as an older version, or failed because the
                # file changed under it); the last version goes now.
                if (local.dirty and local.state in ("pending", "failed")
                        and not local.unlinked and not self._t.open_for_writing(local)):
                    self._requeue(local)
            self._wake()

    def _failed(self, local: LocalFile, exc: CoreError) -> None:
        """A background upload failed: say so (writes.py already logged a WARNING and
        marked the file failed); schedule a transient failure for later."""
        if local.unlinked or local.state != "failed":
            return
        if not local.transient:
            if local.next_try is not None:
                local.next_try = None
                self._t.state.journal_update(local.journal_key, next_try=None)
            return
        local.tries += 1
        delay = later_delay(local.tries)
        local.next_try = self._wall() + delay
        self._retry_at[local.serial] = local.next_try
        # In the journal too: a next mount goes on trying it.
        self._t.state.journal_update(local.journal_key, next_try=local.next_try)
        log.warning("upload of %s failed (%s): trying again in %.0f s (failure %d in a "
                    "row)", "/".join(local.path), exc.message, delay, local.tries)

    # ---- what closes, fsyncs and renames ask ---------------------------------------------

    def check(self, local: LocalFile) -> None:
        """Checks of the queue itself before a file is uploaded or queued: raise a core
        error, and close() (or rename, fsync) returns it with nothing sent or queued.
        None today. What the service would refuse for certain (a type, a full
        workspace: admission.py) is checked by `LocalFiles.admit`, which `submit`
        runs before queueing and every upload runs before sending."""

    def _checked(self, local: LocalFile) -> None:
        if local.dirty and local.size > 0 and not local.unlinked and local.remote is None:
            try:
                self.check(local)
            except CoreError as exc:
                self._files.refused_here(local, exc)
                raise

    async def submit(self, local: LocalFile, *, admitted: bool = False) -> None:
        """A closed file's upload, after `check`: queued (async) or sent now and waited
        for (sync). Raises the check's or the upload's error."""
        self._checked(local)
        if self.enabled:
            if not admitted:  # (a close has just checked it)
                await self._files.admit(local)  # refused before queueing, as in sync mode
            await self.enqueue(local)
        else:
            await self._files.upload(local)  # admits first

    async def enqueue(self, local: LocalFile) -> None:
        """Make a closed file durable and queue its upload (async close)."""
        if not local.dirty or local.size == 0 or local.unlinked or local.remote is not None:
            return
        if local.state == "queued":
            return
        again = local.state == "uploading"  # its upload in flight sends an older version
        gen = local.generation
        # Its own descriptor: an unlink may close the file's while the thread syncs.
        fd = os.dup(local.ensure_fd())
        if local.handles == 0 and local.stream is None:
            local.close_fd()  # a held file's grace ended: it keeps no descriptor
        key = local.journal_key
        state = self._t.state
        closed = time.time()  # after the last write: these bytes are final

        def make_durable() -> None:  # one trip to a worker thread: two fsyncs
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if again:  # the row stays "uploading" (that upload may land: landed.py)
                state.journal_update(key, durable=True, closed=closed)
            else:
                state.journal_update(key, durable=True, state="queued", error=None)

        if again:
            await trio.to_thread.run_sync(make_durable)
            self._again.add(local.serial)  # queued again when that upload ends
            return
        local.state = "queued"
        local.next_try = None
        self._retry_at.pop(local.serial, None)
        await trio.to_thread.run_sync(make_durable)
        # Written, removed or rewritten meanwhile (a write made it pending again): not
        # queued now, its next close queues it. The journal may then say queued for a
        # moment, which is safe: after a crash only a file whose `closed` time is after
        # its last write is uploaded, and a removed file has no row.
        if (local.state == "queued" and local.generation == gen and local.dirty
                and not local.unlinked):
            self._add(local)

    def _add(self, local: LocalFile) -> None:
        self._queue[local.serial] = None
        self._wake()

    def _requeue(self, local: LocalFile) -> None:
        """Queue a closed file whose bytes are already durable (a retry, a resume)."""
        local.dirty = True
        local.state = "queued"
        local.error = None
        local.next_try = None
        self._t.state.journal_update(local.journal_key, state="queued", error=None)
        self._add(local)

    def _retry(self, local: LocalFile) -> bool:
        """Queue a failed file again, after the close-time checks (which may refuse
        it now, say a full workspace). True if queued."""
        try:
            self.check(local)
        except CoreError as exc:
            self._files.refused_here(local, exc)
            return False
        self._requeue(local)
        return True

    def restore(self, todo: list[LocalFile]) -> None:
        """The files a previous mount left to upload (`LocalFiles.restore_journal`),
        oldest first; an upload it had begun is first looked for (landed.py)."""
        for local in todo:
            self._requeue(local)
        # Transient failures of the last mount: tried again when they were due.
        for local in self._t.locals:
            if (local.state == "failed" and local.transient and local.next_try is not None
                    and not local.unlinked and local.remote is None):
                self._retry_at[local.serial] = local.next_try
        self._wake()

    def retry_failed(self) -> int:
        """Queue every failed upload again now (SIGUSR1, `orfs sync --retry`), except
        files whose bytes may be torn (the mount stopped while they were written).
        Returns how many."""
        self.retry_requests += 1
        n = 0
        for local in self._t.locals:
            if (local.state == "failed" and not local.unlinked and local.size > 0
                    and local.remote is None and local.error != INTERRUPTED
                    and not self._t.open_for_writing(local)):
                self._retry_at.pop(local.serial, None)
                n += self._retry(local)
        log.info("retrying %d failed upload(s) now", n)
        return n

    async def wait_for(self, local: LocalFile) -> None:
        """fsync: the file's own upload, now; raises its error. A file waiting its turn
        is uploaded at once (the lock in `LocalFiles.upload` keeps it to one upload)."""
        self._checked(local)
        if local.dirty and local.state in ("queued", "pending", "failed"):
            self._queue.pop(local.serial, None)
            await self._files.upload(local)
        else:
            async with local.lock:
                pass  # an upload in flight: wait for its end
        if local.state == "failed":
            raise local.failure or IOFailure(local.error or "the upload failed")

    # ---- waiting for all of it -----------------------------------------------------------

    def waiting(self) -> Iterator[LocalFile]:
        """Files queued or uploading, oldest first."""
        for local in self._t.locals:
            if not local.unlinked and local.remote is None and local.state in (
                    "queued", "uploading"):
                yield local

    def busy(self) -> int:
        return len(self._queue) + len(self._running)

    async def drain(self, timeout: float) -> None:
        """Until nothing is queued or uploading (SIGTERM); bounded."""
        with trio.move_on_after(timeout):
            while any(True for _ in self.waiting()):
                await trio.sleep(0.05)
