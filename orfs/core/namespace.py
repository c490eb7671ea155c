"""The in-memory index of the whole workspace, plus the overlay of local entries.

One listing (``list_all(limit=1000)``, pipelined pages) fills the index; it is fresh for
``dir_cache_ttl`` seconds. Only one listing runs at a time: concurrent callers wait for
the one in flight and use its result. A file's attributes are fresh while the listing
that brought them is, or for ``dir_cache_ttl`` after a ``retrieve`` (or an upload)
refreshed them; an expired entry is refreshed by one ``retrieve`` of that file, never
by a re-list. (One listing timestamp for all listed files, and a refresh time only per
file refreshed since: no per-file timer, which cost ~215 bytes a file.)

Display names come from `orfs.core.names.layout`; the local overlay adds folders made
by mkdir and files not uploaded yet (a local file at a path hides a remote file there:
the one it will replace).

Concurrency invariants (one trio thread):
- `insert`/`remove` and the tree rebuild are synchronous; nothing awaits between
  reading the tree and acting on it inside one of them.
- A listing takes a while; changes made through the mount while it is in flight are
  recorded and re-applied to its result, so a file uploaded meanwhile never vanishes.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import trio
from cachetools import TTLCache

from orfs.api.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unreachable,
)
from orfs.api.models import RemoteFile
from orfs.core import names
from orfs.core.inodes import DirKey, FileKey, Key, LocalKey

log = logging.getLogger(__name__)
_name_of = operator.itemgetter(0)

Path = tuple[str, ...]

# How long a name proved absent by a fresh listing stays absent without a re-list.
NEGATIVE_TTL = 1.0
# After the API failed to answer a list or retrieve (unreachable, 5xx or nonsense after
# the client's retries), it is not asked again for this long: known files keep their
# last attributes (so cached bytes stay readable) and a stale listing fails at once
# with EIO, instead of every lookup waiting out its own retries. docs/RELIABILITY.md.
API_DOWN_BACKOFF = 5.0
# Within that window, one operation that needs the API at most this often sends one
# probe (a list of one file, one attempt, at most PROBE_TIMEOUT s) instead of failing
# at once; the probe, like any request of the client that succeeds, ends the window.
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 2.0
# Answers that say something about the request, not about the API's health.
_ANSWERS = (NotFound, BadRequest, Unauthorized, Forbidden, PayloadTooLarge)
# Prune expired refresh times when their dict reaches this size (or twice what was
# left at the last prune).
_PRUNE_MIN = 1024


class Lister(Protocol):
    async def list_all(self, add: Callable[[list[RemoteFile]], object],
                       limit: int = 1000) -> None: ...

    async def retrieve(self, file_id: str) -> RemoteFile: ...

    async def probe(self) -> None: ...


class Namespace:
    """Index of remote files + local overlay -> a tree of display names."""

    def __init__(self, client: Lister, *, ttl: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_gone: Callable[[str], None] | None = None,
                 down_window: float = API_DOWN_BACKOFF,
                 created_names: Mapping[str, str] | None = None,
                 ages: Mapping[str, names.Age] | None = None,
                 drop_ages: Callable[[Iterable[str]], None] | None = None) -> None:
        self._client = client
        # id -> the age a file is ordered by among its duplicates, where it is not its
        # own: a rewrite through the mount keeps the place of the file it replaced.
        # Entries of ids a listing no longer shows are dropped with `drop_ages`.
        self._ages = ages if ages is not None else {}
        self._drop_ages = drop_ages
        # id -> the name a file was created with through the mount, where the service
        # stored another (a name with a control character): shown under the former.
        self._created_names = created_names if created_names is not None else {}
        self._down_window = down_window
        # Told of each id found deleted elsewhere (a 404, or absent from a new listing),
        # so the content cache can let go of its bytes once no handle reads them.
        self._on_gone = on_gone
        self._ttl = ttl
        self._clock = clock
        self._files: dict[str, RemoteFile] = {}
        self._used = 0  # the sum of the sizes in _files (kept with it: `used_bytes`)
        # id -> clock time of a retrieve/upload after the listing (see is_fresh_file).
        self._refreshed: dict[str, float] = {}
        self._refreshed_prune_at = _PRUNE_MIN
        self._negative: TTLCache[tuple[Path, str], bool] = TTLCache(
            maxsize=100_000, ttl=min(ttl, NEGATIVE_TTL), timer=clock)
        self._listed_at: float | None = None
        self._list_lock = trio.Lock()
        self._in_flight_changes: list[Callable[[dict[str, RemoteFile]], None]] | None = None
        # Local overlay: path -> serial of a local file; folders made by mkdir.
        self._local_files: dict[Path, int] = {}
        self._local_folders: set[Path] = set()
        self._layout: names.Layout | None = None
        # The last listing's names, half done (see _relist): valid until a change.
        self._built: names.LayoutBuilder | None = None
        self._tree: dict[Path, dict[str, Key]] | None = None
        self._down_until: float | None = None  # see API_DOWN_BACKOFF
        self._down_reason = ""
        self._probed_at = 0.0
        self._probing = False

    # ---- freshness -------------------------------------------------------------------

    def is_fresh(self) -> bool:
        return self._listed_at is not None and self._clock() - self._listed_at < self._ttl

    def is_fresh_file(self, file_id: str) -> bool:
        """The attributes of a known file need no retrieve: the listing is fresh, or a
        retrieve (or upload) refreshed them less than the TTL ago. (A file inserted
        after the listing expires after it, so a fresh listing covers it too.)"""
        if file_id not in self._files:
            return False
        if self.is_fresh():
            return True
        t = self._refreshed.get(file_id)
        return t is not None and self._clock() - t < self._ttl

    def _mark_refreshed(self, file_id: str) -> None:
        now = self._clock()
        self._refreshed[file_id] = now
        if len(self._refreshed) >= self._refreshed_prune_at:
            # Expired refresh times say nothing the listing does not: drop them, so the
            # dict stays as small as the files refreshed within one TTL.
            self._refreshed = {k: t for k, t in self._refreshed.items()
                               if now - t < self._ttl}
            self._refreshed_prune_at = max(_PRUNE_MIN, 2 * len(self._refreshed))

    def invalidate(self) -> None:
        """Drop the listing cache (SIGHUP, `orfs refresh`): the next access re-lists."""
        self._listed_at = None
        self._refreshed.clear()
        self._negative.clear()

    async def ensure_fresh(self) -> None:
        """Re-list the workspace if the listing is stale; one listing at a time."""
        if self.is_fresh():
            return
        async with self._list_lock:
            if self.is_fresh():
                return  # the listing we waited for did it
            await self.raise_if_down()
            try:
                await self._relist()
            except ApiError as exc:
                self._api_failed(exc)
                raise

    # ---- API health (see API_DOWN_BACKOFF) -------------------------------------------

    def api_down(self) -> bool:
        return self._down_until is not None and self._clock() < self._down_until

    async def raise_if_down(self) -> None:
        """Unreachable at once while the API is known down, unless a probe, sent at most
        every PROBE_INTERVAL, finds it answering again (which ends the window)."""
        if not self.api_down():
            return
        now = self._clock()
        if not self._probing and now - self._probed_at >= PROBE_INTERVAL:
            self._probing = True
            self._probed_at = now
            try:
                with trio.move_on_after(PROBE_TIMEOUT):
                    await self._client.probe()
                    self.api_answered()
            except ApiError:
                pass
            finally:
                self._probing = False
        if self.api_down():
            assert self._down_until is not None
            raise Unreachable(f"the API is not answering ({self._down_reason}); asking "
                              f"again in {self._down_until - self._clock():.0f} s")

    def _api_failed(self, exc: ApiError) -> None:
        if isinstance(exc, _ANSWERS):
            return
        if not self.api_down():
            log.warning("the API failed (%s); serving cached attributes, and failing what "
                        "needs it, for %.0f s", exc, self._down_window)
        self._down_until = self._clock() + self._down_window
        self._probed_at = self._clock()
        self._down_reason = str(exc)

    def api_answered(self) -> None:
        """A request succeeded (any: a listing, an upload, a download): the API is up."""
        if self._down_until is not None:
            self._down_until = None
            log.info("the API answers again")

    async def _relist(self) -> None:
        self._in_flight_changes = []
        files: dict[str, RemoteFile] = {}
        # The per-file part of the names is worked out page by page, while the next
        # page is on its way (the listing is pipelined: `list_all`).
        builder = names.LayoutBuilder(self._ages)

        def add(page: list[RemoteFile]) -> None:
            if self._created_names:
                page = [self._as_created(f) for f in page]
            for f in page:
                files[f.id] = f
            builder.add(page)

        try:
            await self._client.list_all(add, limit=1000)
        finally:
            changes, self._in_flight_changes = self._in_flight_changes, None
        for change in changes:
            change(files)
        if self._drop_ages is not None and self._ages:
            stale = [file_id for file_id in self._ages if file_id not in files]
            if stale:
                self._drop_ages(stale)
        gone = self._files.keys() - files.keys() if self._on_gone is not None else ()
        self._files = files
        self._used = sum(f.size for f in files.values())
        self._refreshed.clear()  # every file is as fresh as the listing now
        self._listed_at = self._clock()
        self._dirty()
        if not changes:
            self._built = builder  # it saw exactly `files`
        self.api_answered()
        log.debug("listed %d files", len(files))
        for file_id in gone:
            self._gone_elsewhere(file_id)

    def _gone_elsewhere(self, file_id: str) -> None:
        log.debug("file %s was deleted elsewhere", file_id)
        if self._on_gone is not None:
            self._on_gone(file_id)

    # ---- changes ---------------------------------------------------------------------

    def _dirty(self) -> None:
        self._layout = None
        self._tree = None
        self._built = None

    def _as_created(self, rf: RemoteFile) -> RemoteFile:
        name = self._created_names.get(rf.id)
        return rf if name is None else dataclasses.replace(rf, filename=name)

    def age(self, file_id: str) -> names.Age | None:
        """What orders a known file among its duplicates (None: not known)."""
        age = self._ages.get(file_id)
        if age is not None:
            return age
        rf = self._files.get(file_id)
        return None if rf is None else (rf.created_at, rf.id)

    def reordered(self) -> None:
        """An age changed (see `age`): the names are worked out again."""
        self._dirty()

    def insert(self, rf: RemoteFile) -> None:
        """A file now exists (uploaded through the mount, or retrieved)."""
        rf = self._as_created(rf)
        old = self._files.get(rf.id)
        self._files[rf.id] = rf
        self._used += rf.size - (old.size if old is not None else 0)
        self._mark_refreshed(rf.id)
        if self._in_flight_changes is not None:
            self._in_flight_changes.append(lambda files: files.__setitem__(rf.id, rf))
        if old is None:
            self._changed(add=rf)
        elif old.filename != rf.filename or old.created_at != rf.created_at:
            self._dirty()

    def remove(self, file_id: str) -> RemoteFile | None:
        """A file is gone (deleted through the mount, or 404)."""
        rf = self._files.pop(file_id, None)
        if rf is not None:
            self._used -= rf.size
        self._refreshed.pop(file_id, None)
        if self._in_flight_changes is not None:
            def drop(files: dict[str, RemoteFile]) -> None:
                files.pop(file_id, None)
            self._in_flight_changes.append(drop)
        if rf is not None:
            self._changed(drop=file_id)
        return rf

    def _changed(self, *, add: RemoteFile | None = None, drop: str | None = None) -> None:
        """One file added or dropped: only its folder's names are worked out again
        (names.relayout), so a `cp -r` into a big workspace does not redo the whole
        workspace's names after every upload; anything wider builds them again."""
        changed = None
        if self._layout is not None:
            changed = names.relayout(self._layout, add=add, drop=drop, ages=self._ages)
        if changed is None:
            self._dirty()
            return
        self._layout, folder = changed
        self._built = None
        if self._tree is not None:
            self._tree[folder] = self._folder_tree(self._layout, folder)

    def add_local_file(self, path: Path, serial: int) -> None:
        self._local_files[path] = serial
        # In a folder that exists, the names stay as they are: only that folder's
        # entries change (the local file over any remote one of its name).
        folder, lay = path[:-1], self._layout
        if lay is None or (folder and folder not in lay.folders):
            self._dirty()
            return
        kids = None if self._tree is None else self._tree.get(folder)
        if kids is not None and not isinstance(kids.get(path[-1]), DirKey):
            kids[path[-1]] = LocalKey(serial)

    def remove_local_file(self, path: Path, serial: int) -> None:
        if self._local_files.get(path) != serial:
            return
        del self._local_files[path]
        folder, lay = path[:-1], self._layout
        if lay is None or (folder and not lay.children.get(folder)):
            self._dirty()  # its folder may go with it
            return
        kids = None if self._tree is None else self._tree.get(folder)
        if kids is not None and kids.get(path[-1]) == LocalKey(serial):
            file_id = lay.by_path.get(path)
            if file_id is None:
                del kids[path[-1]]
            else:
                kids[path[-1]] = FileKey(file_id)

    def add_local_folder(self, path: Path) -> None:
        self._local_folders.add(path)
        self._dirty()

    def remove_local_folder(self, path: Path) -> None:
        self._local_folders.discard(path)
        self._dirty()

    def is_local_folder(self, path: Path) -> bool:
        return path in self._local_folders

    # ---- reading -----------------------------------------------------------------------

    def record(self, file_id: str) -> RemoteFile | None:
        """The last known record (fresh or not)."""
        return self._files.get(file_id)

    def records(self) -> Iterable[RemoteFile]:
        return self._files.values()

    def used_bytes(self) -> int:
        """The sum of the known files' sizes (kept up to date: no walk over them)."""
        return self._used

    def __len__(self) -> int:
        return len(self._files)

    async def fresh_record(self, file_id: str) -> RemoteFile | None:
        """The record, refreshed by one retrieve if its attributes expired; None if gone."""
        rf = self._files.get(file_id)
        if rf is not None and self.is_fresh_file(file_id):
            return rf
        if rf is not None and self.api_down():
            return rf  # the last known attributes; the id's bytes never change
        try:
            fetched = await self._client.retrieve(file_id)
        except NotFound:
            known = self.remove(file_id) is not None
            self.api_answered()
            if known:
                self._gone_elsewhere(file_id)
            return None
        except ApiError as exc:
            self._api_failed(exc)
            if rf is None or isinstance(exc, _ANSWERS):
                raise
            log.info("retrieve of %s failed (%s); using its last known attributes",
                     file_id, exc)
            return rf
        self.api_answered()
        self.insert(fetched)
        return self._files[fetched.id]

    def layout(self) -> names.Layout:
        if self._layout is None:
            extra = set(self._local_folders)
            extra.update(p[:-1] for p in self._local_files if len(p) > 1)
            builder, self._built = self._built, None
            if builder is None:
                builder = names.LayoutBuilder(self._ages)
                builder.add(self._files.values())
            self._layout = builder.finish(extra_folders=extra)
        return self._layout

    def _folder_tree(self, lay: names.Layout, folder: Path) -> dict[str, Key]:
        """One folder's entries, as `tree` makes them."""
        kids: dict[str, Key] = {}
        for name in lay.children.get(folder, ()):
            path = (*folder, name)
            file_id = lay.by_path.get(path)
            kids[name] = DirKey(path) if file_id is None else FileKey(file_id)
        for path, serial in self._local_files.items():
            if path[:-1] == folder and not isinstance(kids.get(path[-1]), DirKey):
                kids[path[-1]] = LocalKey(serial)
        return kids

    def tree(self) -> dict[Path, dict[str, Key]]:
        """folder path -> {name: key}, the whole namespace (rebuilt after a change)."""
        if self._tree is None:
            lay = self.layout()
            tree: dict[Path, dict[str, Key]] = {(): {}}
            for folder in sorted(lay.folders, key=len):
                tree.setdefault(folder, {})
                tree.setdefault(folder[:-1], {})[folder[-1]] = DirKey(folder)
            for path, file_id in lay.by_path.items():
                tree[path[:-1]][path[-1]] = FileKey(file_id)
            for path, serial in self._local_files.items():
                parent = tree.get(path[:-1])
                existing = None if parent is None else parent.get(path[-1])
                if parent is None or isinstance(existing, DirKey):
                    continue  # its folder vanished, or a folder took the name: keep the folder
                parent[path[-1]] = LocalKey(serial)
            self._tree = tree
        return self._tree

    def display_path(self, file_id: str) -> Path | None:
        return self.layout().files.get(file_id)

    def child(self, parent: Path, name: str) -> Key | None:
        """From what is in memory, no request."""
        kids = self.tree().get(parent)
        return None if kids is None else kids.get(name)

    async def lookup(self, parent: Path, name: str) -> Key | None:
        """A name in a folder; a miss on a stale listing re-lists once first."""
        key = self.child(parent, name)
        if key is not None or self.is_fresh() or (parent, name) in self._negative:
            return key
        await self.ensure_fresh()
        key = self.child(parent, name)
        if key is None:
            self._negative[(parent, name)] = True
        return key

    def children(self, folder: Path) -> list[tuple[str, Key]] | None:
        """The entries of a folder sorted by name (None: not a folder)."""
        kids = self.tree().get(folder)
        if kids is None:
            return None
        # Names are unique within a folder: sorting by name alone gives the same order
        # as sorting the pairs, with one string comparison per step instead of two.
        return sorted(kids.items(), key=_name_of)
