"""The write side: local files staged on disk, written, uploaded exactly once, journaled.


A `LocalFile` is one file whose bytes live in ``cache_root/staging/`` (0600): created
through the mount, or taking over a remote file's name by O_TRUNC. Its life:

    pending --flush/fsync (dirty, non-empty)--> uploading --ok--> uploaded --last release--> adopted
       \\                                        /      \\--error--> failed --write--> pending
        +--flush, --uploads async--> queued --+   (the background queue: upload_queue.py)
    (pending/failed with size 0, or never written: stays local, no upload)

``dirty`` says the staged bytes differ from anything uploaded; a flush uploads only
then (so a flush before any write, or a second flush, uploads nothing). ``generation``
counts writes: an upload that overlapped a write does not clear ``dirty``.
The write path's own state (the streamed upload, streaming.py) is `write_mode`, a small state
machine driven by `orfs.core.streaming.UploadStreams` (diagram there)::

    fresh      empty; no write yet (or truncated to 0)
    appending  every write so far continued where the last ended, from byte 0
    streaming  ``stream`` (an `UploadStream`) sends the bytes while they are written
    done       the stream was sealed by a flush, which waits for its answer
    random     anything else happened: the file uploads at flush, from staging

`LocalFiles` does all of this for one mount: it creates local files (staging file and
journal row), writes and truncates them, uploads them, and brings them back after a
crash. The kernel operations that decide *when* (open, flush, release) are in fs.py.

Exactly-once uploads and crash recovery: every local file has a journal row
(orfs/core/state.py) from its creation until its upload is recorded. A flush *seals*
the row (``closed``): the staged bytes are final until the next write, so after a
crash the next mount uploads them (`LocalFiles.restore_journal`); a file still being
written when the mount stopped is kept but never uploaded. An upload that failed in a
way that may have been applied, or that a previous mount had started, first looks for
the file it may have made (orfs/core/landed.py) before sending again.

Concurrency: a local file uploads under its own lock, so two flushes never upload it
twice; the second finds it clean and returns. `LocalFiles._uploaded` binds the result
in one synchronous step.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

import trio
from cachetools import TTLCache

from orfs.api.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
)
from orfs.api.models import RemoteFile
from orfs.api.retry import is_transient, upload_may_have_applied
from orfs.api.upload import UploadBody, UploadSizeMismatch, stored_name
from orfs.config import MAX_FILE_SIZE
from orfs.core import admission, names
from orfs.core.cache import unlink_quietly
from orfs.core.errors import (
    AccessDenied,
    CoreError,
    FileTooBig,
    IOFailure,
    NoSpace,
    Unsupported,
)
from orfs.core.inodes import FileHandle, FileKey, LocalKey
from orfs.core.landed import MAX_ROUNDS, ROUNDS_TIME, Attempt, find_landed
from orfs.core.local import INTERRUPTED, LocalFile, LocalState
from orfs.core.state import JournalEntry, make_private_dir
from orfs.core.streaming import UploadStreams
from orfs.core.tables import LocalHandle, Tables

log = logging.getLogger(__name__)

def upload_error(exc: ApiError) -> CoreError:
    """The core error an upload failure becomes (the errno table of docs/SEMANTICS.md)."""
    if isinstance(exc, BadRequest):
        return Unsupported(exc.message)      # the service refused the content type
    if isinstance(exc, PayloadTooLarge):
        return FileTooBig(exc.message)
    if isinstance(exc, Forbidden):
        return NoSpace(exc.message)           # the 10 GiB workspace quota
    if isinstance(exc, Unauthorized):
        return AccessDenied(exc.message)
    return IOFailure(exc.message)


class LocalFiles:
    """The local files of one mount: created, written, uploaded, journaled (module doc).
    The table of them is `Tables.locals`, which only this class changes."""

    def __init__(self, tables: Tables, streams: UploadStreams, staging_dir: Path) -> None:
        self._t = tables
        self._table = tables.locals
        # Streamed uploads of sequential writers; fed by every write.
        self.streams = streams
        self.staging = Path(staging_dir)
        make_private_dir(self.staging)
        self._next_serial = 1
        self._sealed: set[int] = set()           # serials whose journal row says closed
        self._resume_since: dict[str, float] = {}  # journal key -> a crashed upload's start
        self._own_ids: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=3600)

    # ---- creating and dropping ---------------------------------------------------------

    def _serial(self) -> int:
        serial = self._next_serial
        self._next_serial += 1
        return serial

    def new(self, path: tuple[str, ...], mode: int, replaces: str | None,
            *, visible: bool = True, remote_name: str | None = None) -> LocalFile:
        """A new empty local file at path, staged and journaled."""
        serial = self._serial()
        staged = self.staging / f"{serial}-{secrets.token_hex(8)}"
        fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        now = time.time_ns()
        perm = mode & 0o7777
        local = LocalFile(serial=serial, path=path, staged=staged, fd=fd,
                          journal_key=staged.name, created_ns=now, modified_ns=now,
                          mode=perm, mode_set=perm != 0o644, replaces=replaces,
                          remote_name=remote_name)
        self._t.state.journal_add(JournalEntry(
            key=local.journal_key, filename=local.upload_name(), staged=str(staged),
            state="pending", replaces=replaces, created=time.time(),
            mode=perm if local.mode_set else None))
        self._table.add(local)
        if visible:  # invisible: a staging copy shown only once its upload succeeded
            self._t.ns.add_local_file(path, serial)
        local.write_mode = "fresh"  # created empty: a sequential writer may stream it
        return local

    def new_replacing(self, rf: RemoteFile, path: tuple[str, ...], *,
                      visible: bool = True) -> LocalFile:
        """A new empty local file that replaces rf at path once uploaded: it has rf's
        mode, and rf's override moves over to the new id at upload."""
        ov = self._t.state.get_override(rf.id)
        mode = ov.mode if ov is not None and ov.mode is not None else 0o644
        # At rf's own place it keeps rf's real filename: the path may be display-only.
        same_place = self._t.ns.display_path(rf.id) == path
        local = self.new(path, mode, replaces=rf.id, visible=visible,
                         remote_name=rf.filename if same_place else None)
        local.mode_set = False
        return local

    def drop(self, local: LocalFile) -> None:
        """Unlinked, or replaced by a rename: gone from the tree and the journal; its
        bytes stay readable through open handles until the last one closes."""
        local.unlinked = True
        self._t.ns.remove_local_file(local.path, local.serial)
        self._t.state.journal_remove(local.journal_key)
        unlink_quietly(local.staged)
        if local.handles == 0:
            local.close_fd()
            self._table.remove(local)

    def close(self, local: LocalFile) -> None:
        """The last handle of an unlinked file closed."""
        local.close_fd()
        self._table.remove(local)

    def detach(self, file_id: str) -> None:
        """An uploaded file still open is deleted or replaced: its open local copy is let
        go (its handles keep reading the staged bytes, now unlinked)."""
        attached = self._table.detach(file_id)
        if attached is not None:
            attached.unlinked = True
            unlink_quietly(attached.staged)

    def retire(self, local: LocalFile) -> None:
        """The last handle of an uploaded file closed: its bytes become the cache's."""
        rf = local.remote
        assert rf is not None
        local.close_fd()
        self._table.detach(rf.id)
        self._table.remove(local)
        try:
            self._t.content.adopt(rf.id, local.staged, local.size)
        except OSError as exc:
            log.warning("could not keep the bytes of %s in the cache: %s", rf.filename, exc)
            unlink_quietly(local.staged)

    # ---- writing -------------------------------------------------------------------------

    def open_handle(self, local: LocalFile, flags: int) -> FileHandle:
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        local.ensure_fd()
        if writable and flags & os.O_TRUNC and local.size:
            self.resize(local, 0)
        local.handles += 1
        return self._t.new_fh(LocalHandle(local, writable))

    async def write(self, local: LocalFile, offset: int, data: bytes) -> int:
        end = offset + len(data)
        if end > MAX_FILE_SIZE:
            # The writer has failed: do not upload what it left (a truncated file).
            message = f"a write past the {MAX_FILE_SIZE} byte upload limit"
            self.streams.abandon(local, "a write past the upload limit")
            if local.remote is None:
                local.dirty = False
                self._mark_failed(local, message)
            raise FileTooBig(message)
        await trio.lowlevel.checkpoint()
        if local.remote is not None:
            self._reopen(local)
        os.pwrite(local.ensure_fd(), data, offset)
        local.size = max(local.size, end)
        self.touch(local)
        self.streams.wrote(local, offset, end)
        return len(data)

    def touch(self, local: LocalFile) -> None:
        """The staged bytes changed: dirty, not final, no longer failed."""
        local.dirty = True
        local.generation += 1
        local.modified_ns = time.time_ns()
        if local.serial in self._sealed:  # written after a close: not final any more
            self._sealed.discard(local.serial)
            self._t.state.journal_update(local.journal_key, closed=None)
        if local.state in ("failed", "queued"):
            # Written again: a queued upload waits for the next close (one upload of
            # the last version); a failed one is retried by it.
            local.state = "pending"
            local.error = None
            local.failure = None
            local.next_try = None
            local.tries = 0
            self._t.state.journal_update(local.journal_key, state="pending", error=None)

    def resize(self, local: LocalFile, size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise FileTooBig(f"{size} bytes is past the upload limit")
        if local.remote is not None:
            self._reopen(local)
        os.ftruncate(local.ensure_fd(), size)
        local.size = size
        self.touch(local)
        self.streams.resized(local, size)

    def _reopen(self, local: LocalFile) -> None:
        """A write after an upload on a still-open file: local again, replacing it."""
        rf = local.remote
        assert rf is not None
        local.remote = None
        self._table.detach(rf.id)
        local.path = self._t.ns.display_path(rf.id) or local.path
        local.replaces = rf.id
        local.remote_name = rf.filename
        local.state = "pending"
        self._journal_pending(local, local.upload_name(), replaces=rf.id)
        self._t.ns.add_local_file(local.path, local.serial)
        ino = self._t.inodes.existing(FileKey(rf.id))
        if ino is not None:
            self._t.inodes.rebind(ino, LocalKey(local.serial))

    def _journal_pending(self, local: LocalFile, filename: str, *, replaces: str) -> None:
        self._t.state.journal_add(JournalEntry(
            key=local.journal_key, filename=filename, staged=str(local.staged),
            state="pending", replaces=replaces, created=time.time()))

    def _mark_failed(self, local: LocalFile, message: str,
                     failure: CoreError | None = None) -> None:
        local.state = "failed"
        local.error = message
        local.failure = failure or FileTooBig(message)
        self._t.state.journal_update(local.journal_key, state="failed", error=message)

    def refused_here(self, local: LocalFile, error: CoreError) -> None:
        """A check before any request refused the file: failed as a refused upload
        would be (bytes kept, the error in its xattrs and the status, a WARNING), and
        not sent again until written again (or retried)."""
        local.dirty = False
        self._mark_failed(local, error.message, error)
        local.transient = False
        raw = local.upload_name()
        log.warning("upload of %s refused before sending: %s", raw, error.message)
        self._t.state.record_error(f"upload of {raw}: {error.message}")

    def seal(self, local: LocalFile) -> None:
        """A writer closed (flushed) the file: its staged bytes are final until the next
        write, so after a crash they may be uploaded (journal ``closed``)."""
        if local.serial not in self._sealed and not local.unlinked:
            self._sealed.add(local.serial)
            self._t.state.journal_update(local.journal_key, closed=time.time())

    # ---- uploading -----------------------------------------------------------------------

    async def admit(self, local: LocalFile) -> None:
        """Before any request: refuse what the service would refuse for certain
        (orfs/core/admission.py: a type it refuses, a full workspace, past 100 MiB),
        as a failed upload (bytes kept, ``user.orfs.state=failed``, a WARNING naming the
        file and why) and raise that error; else return and the upload may be sent.
        Every upload passes here (`upload`); a caller that queues uploads calls it at
        close, so close() returns the refusal."""
        if not local.dirty or local.unlinked or local.size == 0:
            return
        gen = local.generation
        refused = await admission.refusal(self._t, local)
        if refused is None:
            return
        if local.unlinked:
            return  # removed meanwhile: nothing to refuse
        raw = local.upload_name()
        self.streams.abandon(local, "refused before sending")
        if local.generation == gen:
            local.dirty = False  # retried by the next write-and-close, not by any flush
        self._mark_failed(local, refused.message)
        log.warning("upload of %s refused before sending it: %s", raw, refused.message)
        self._t.state.record_error(f"upload of {raw}: {refused.message}")
        raise refused

    def may_stream(self, local: LocalFile) -> bool:
        """May a sequential writer's upload start streaming now (admission.may_stream)?"""
        return admission.may_stream(self._t, local)

    async def upload(self, local: LocalFile) -> None:
        """Upload local if it changed and is not empty; raises the mapped core error."""
        if not local.dirty or local.unlinked or local.size == 0:
            return
        async with local.lock:
            if not local.dirty or local.unlinked or local.size == 0:
                return  # another flush uploaded it while we waited
            await self.admit(local)
            if not local.dirty or local.unlinked:
                return  # removed while it was checked
            gen = local.generation
            raw = local.upload_name()
            local.state = "uploading"
            self._t.state.journal_update(local.journal_key, state="uploading", filename=raw,
                                         replaces=local.replaces)
            body = UploadBody.from_path(local.staged, size=local.size)
            try:
                rf = await self._upload_exactly_once(local, raw, body)
            except (ApiError, UploadSizeMismatch) as exc:
                message = exc.message if isinstance(exc, ApiError) else str(exc)
                if local.generation == gen:
                    local.dirty = False  # retried by the next write-and-close, not by any flush
                error = upload_error(exc) if isinstance(exc, ApiError) else IOFailure(message)
                self._mark_failed(local, message, error)
                local.transient = isinstance(exc, ApiError) and is_transient(exc)
                log.warning("upload of %s failed: %s", raw, message)
                self._t.state.record_error(f"upload of {raw}: {message}")
                raise error from exc
            old = local.replaces
            self._uploaded(local, rf, raw, gen)
            if old is not None:
                try:
                    await self._t.delete_remote(old)
                except CoreError as exc:
                    log.warning("uploaded %s but could not delete the file it replaces (%s):"
                                " %s", raw, old, exc.message)
                    self._t.state.record_error(f"delete of replaced {old}: {exc.message}")

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
        return await self._t.client.upload(raw, body)

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
            attempt = Attempt(stored_name(raw), size, resumed)
        else:
            # A stream started at the first writes, before this flush.
            since = local.created_ns / 1e9 if local.stream is not None else time.time()
            attempt = Attempt(stored_name(raw), size, since, frozenset(
                rf.id for rf in self._t.ns.records()
                if rf.filename in (raw, stored_name(raw)) and rf.size == size))
        self._t.state.journal_update(local.journal_key, attempted=attempt.since)
        if resumed is not None:
            found = await find_landed(self._t.client, attempt, self._not_ours(local))
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
                    rf = await self._t.client.upload(raw, body)
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
                found = await find_landed(self._t.client, attempt, self._not_ours(local))
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
            if rf.filename == stored_name(raw):
                # A control character, which no upload can carry as is: the file keeps
                # the name it was created with here (and across mounts), while other
                # clients see the stored one.
                log.info("the service stored %r as %r; shown here as created", raw,
                         rf.filename)
                self._t.state.set_created_name(rf.id, raw)
            else:
                log.warning("the service stored %r as %r; it is shown where the service "
                            "put it", raw, rf.filename)
        old = local.replaces
        if old is not None:
            replaced = self._t.ns.record(old)
            if replaced is not None and replaced.filename in (raw, rf.filename):
                # A rewrite in place: it keeps the replaced file's place among files of
                # its name, so a duplicate shown by its plain name keeps showing it.
                self._t.inherit_age(rf.id, old)
            self._t.ns.remove(old)
            self._t.state.move_override(old, rf.id)
        self._t.ns.insert(rf)
        if local.mode_set or local.mtime_set is not None:
            self._t.state.set_override(rf.id, mode=local.mode if local.mode_set else None,
                                       mtime_ns=local.mtime_set, atime_ns=local.atime_set)
        self._t.state.journal_remove(local.journal_key)
        local.replaces = None
        local.error = None
        if local.generation != gen:
            # Written during the upload: stays local and dirty, and replaces what we sent.
            local.replaces = rf.id
            local.state = "pending"
            self._journal_pending(local, raw, replaces=rf.id)
            return
        local.dirty = False
        local.state = "uploaded"
        local.remote = rf
        self._t.ns.remove_local_file(local.path, local.serial)
        ino = self._t.inodes.existing(LocalKey(local.serial))
        if ino is not None:
            self._t.inodes.rebind(ino, FileKey(rf.id))
        self._table.attach(rf.id, local)
        if local.handles <= 0:
            self.retire(local)

    def in_flight(self) -> int:
        return sum(1 for lf in self._table if lf.state == "uploading" and not lf.unlinked)

    async def wait_uploads(self, timeout: float) -> None:
        """Until no upload is in flight (unmount, SIGTERM); bounded. One that does not
        end in time stays journaled (state uploading) and resumes at the next mount."""
        with trio.move_on_after(timeout):
            while self.in_flight():
                await trio.sleep(0.05)

    # ---- the journal of a previous mount -------------------------------------------------

    def restore_journal(self) -> list[LocalFile]:
        """Bring back the local files of a previous mount (crash, or failed uploads),
        visible at their names. Returns those that still need an upload.

        A file closed since its last write (journal ``closed``) is uploaded again; if the
        previous mount had started sending it, the upload first looks for the file that
        attempt may have created (`_upload_exactly_once`). A file that was still being
        written when the mount stopped is kept, readable, as failed: its bytes may be a
        torn copy, so they are never uploaded unless someone writes and closes it."""
        todo: list[LocalFile] = []
        for entry in self._t.state.journal_entries():
            staged = Path(entry.staged)
            try:
                # No descriptor is kept: 10,000 journaled files hold none until opened.
                st = os.stat(staged)
            except OSError:
                self._t.state.journal_remove(entry.key)
                continue
            size = st.st_size
            serial = self._serial()
            path = names.display_path(entry.filename)
            now = time.time_ns()
            # queued (an async close) is closed and durable: uploaded as a pending one.
            state: LocalState = "failed" if entry.state == "failed" else "pending"
            error = entry.error
            closed = entry.closed is not None and st.st_mtime <= entry.closed + 0.5
            if state == "pending" and size > 0 and not closed:
                state = "failed"
                error = INTERRUPTED
                self._t.state.journal_update(entry.key, state="failed", error=error)
                log.warning("%s was being written when the last mount stopped: kept here, "
                            "not uploaded", entry.filename)
            local = LocalFile(serial=serial, path=path, staged=staged, fd=-1,
                              journal_key=entry.key, created_ns=int(entry.created * 1e9),
                              modified_ns=now, mode=entry.mode or 0o644,
                              mode_set=entry.mode is not None, size=size,
                              mtime_set=entry.mtime_ns, replaces=entry.replaces,
                              state=state, error=error, dirty=state == "pending" and size > 0,
                              remote_name=entry.filename)
            if state == "failed" and entry.next_try is not None and error != INTERRUPTED:
                # A transient failure of the last mount: its queue goes on trying it.
                local.transient, local.next_try, local.tries = True, entry.next_try, 1
            self._table.add(local)
            self._t.ns.add_local_file(path, serial)
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
