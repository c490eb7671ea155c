"""`OpenRouterFileSystem`: an OpenRouter Files workspace as an fsspec filesystem.

The behaviour is docs/FSSPEC.md; the names are the mount's (orfs.core.names), so a
path means the same file through ``openrouter://`` as under a mount.

Event loop
    fsspec runs a filesystem's coroutines on asyncio (its own loop in a thread for the
    sync API). The API client is written for trio but uses only httpx (which runs on
    both) for its requests, so it is used here with asyncio's sleep as the retry
    policy's sleep and without the policy's trio-only hard deadline (the client's
    per-operation socket timeouts still bound a silent server); listings go page by
    page (`FilesClient.list_pages`, not the trio-pipelined `list_all`); uploads read
    their temporary file with `asyncio.to_thread`. A client (its connection pool) is
    made per event loop and per process, so each Dask worker opens its own
    connections.

Listing
    One listing of the workspace (pages of 1000) answers every `ls`, `info`, `find`,
    `glob`, `exists` and `open` for ``listing_ttl`` seconds (default 10, the mount's
    ``--dir-cache-ttl``); concurrent callers share one listing. Changes made through this
    instance (uploads, deletes) are applied to it at once, without a request. A path
    not in a fresh listing is FileNotFoundError without a request. ``.by-id/<id>`` of an
    id not listed costs one retrieve.

Known limits: no appends (the API has none); a rewrite of one of several files that
share a name is ordered as the newest of them (the mount remembers the age it
replaced; this filesystem keeps no state across processes); an uploaded file is
readable only in the process that wrote it (the service serves only its own outputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import fsspec.callbacks
from fsspec.asyn import AsyncFileSystem, sync

from orfs.api import (
    ApiError,
    ApiKey,
    ApiKeyError,
    FilesClient,
    NotFound,
    RemoteFile,
    RetryPolicy,
    UploadBody,
    read_api_key,
)
from orfs.api.retry import INTERACTIVE_RETRY
from orfs.config import DEFAULT_API_BASE, DEFAULT_DIR_CACHE_TTL, MAX_FILE_SIZE
from orfs.core import names
from orfs.fsspec._errors import read_error, upload_error
from orfs.fsspec._file import GrowingReadAhead, OpenRouterFile

__all__ = ["OpenRouterFileSystem"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseException)

MiB = 1024 * 1024
BY_ID = ".by-id"
# A read is split into ranged parts fetched at once, one per stream, each at least
# PART_MIN (smaller reads are one request): at a distance one stream is capped by the
# round trip and the per-connection bandwidth, not by the link.
STREAMS = 4
PART_MIN = 4 * MiB
UPLOAD_CHUNK = 256 * 1024
DEFAULT_KEEP_WRITTEN = 1024 * MiB


def _env_api_base() -> str:
    return os.environ.get("OPENROUTER_BASE_URL", DEFAULT_API_BASE)


@dataclasses.dataclass
class _Session:
    """What belongs to one event loop in one process: the client and the listing lock."""

    loop: asyncio.AbstractEventLoop
    pid: int
    client: FilesClient
    listing: asyncio.Lock


@dataclasses.dataclass(frozen=True)
class _Empty:
    """A file of no bytes, made here (``touch``): the API stores no empty files, so, as
    in the mount, it stays local to this instance until it has content."""

    created: datetime


def _split(path: str) -> names.DisplayPath:
    path = path.strip("/")
    return tuple(path.split("/")) if path else ()


def _join(parts: names.DisplayPath) -> str:
    return "/".join(parts)


class OpenRouterFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """An OpenRouter Files workspace as ``openrouter://`` (docs/FSSPEC.md).

    Options: ``api_key`` (default ``$OPENROUTER_API_KEY``), ``api_key_file`` (a file only
    its owner can read, as for the mount), ``workspace`` (a workspace id), ``provider``
    (``openai`` | ``anthropic`` | None), ``api_base`` (default ``$OPENROUTER_BASE_URL``,
    else the service), ``listing_ttl`` (seconds a listing answers for, default 10),
    ``streams`` (ranged requests at once for one read, default 4), ``keep_written``
    (bytes of uploads kept on local disk so this process can read back what it wrote,
    default 1 GiB, 0 for none).

    Pickling (how Dask and Ray send it to workers) carries the options given to the
    constructor and nothing else: a key read from the environment or a key file is not
    in the pickle, and each worker reads its own; a key passed as ``api_key`` is.
    """

    protocol = "openrouter"
    root_marker = ""
    async_impl = True

    def __init__(self, api_key: str | None = None, *, api_key_file: str | None = None,
                 workspace: str | None = None, provider: str | None = None,
                 api_base: str | None = None, listing_ttl: float = DEFAULT_DIR_CACHE_TTL,
                 streams: int = STREAMS, keep_written: int = DEFAULT_KEEP_WRITTEN,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self._key = (ApiKey(api_key) if api_key
                         else read_api_key(Path(api_key_file) if api_key_file else None))
        except ApiKeyError as exc:
            raise ValueError(str(exc).replace("--api-key-file FILE", "api_key_file=FILE")
                             ) from None
        self.api_base = (api_base or _env_api_base()).rstrip("/")
        self.workspace = workspace
        self.provider = provider
        self.listing_ttl = float(listing_ttl)
        self.streams = max(1, int(streams))
        # Checks the key's characters, the URL and the provider now, without a request.
        FilesClient(self.api_base, self._key, workspace=workspace, provider=provider)
        self._session_: _Session | None = None
        self._records: dict[str, RemoteFile] = {}
        self._listed_at: float | None = None
        self._layout_: names.Layout | None = None
        # While a listing runs: the changes made here meanwhile (id -> record, or None
        # for a delete), applied to it when it ends.
        self._during: list[tuple[str, RemoteFile | None]] | None = None
        self._by_id: dict[str, tuple[float, RemoteFile]] = {}
        self._empties: dict[names.DisplayPath, _Empty] = {}
        self._folders: set[names.DisplayPath] = set()
        self._ranges: bool = True
        self._keep_limit = max(0, int(keep_written))
        self._kept: OrderedDict[str, tuple[str, int]] = OrderedDict()  # id -> (path, size)
        self._kept_bytes = 0
        self._dir = tempfile.mkdtemp(prefix="orfs-fsspec-")  # 0700
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)

    def __repr__(self) -> str:
        return (f"OpenRouterFileSystem(api_base={self.api_base!r}, "
                f"workspace={self.workspace!r}, provider={self.provider!r})")

    __str__ = __repr__

    def to_dict(self, *, include_password: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = super().to_dict(include_password=include_password)
        if not include_password:
            out.pop("api_key", None)
        return out

    # -- the client and the listing ----------------------------------------------

    def _session(self) -> _Session:
        loop = asyncio.get_running_loop()
        s = self._session_
        if s is None or s.loop is not loop or s.pid != os.getpid():
            sleep: Callable[[float], Any] = asyncio.sleep
            client = FilesClient(
                self.api_base, self._key, workspace=self.workspace, provider=self.provider,
                retry=RetryPolicy(sleep=sleep),
                read_retry=dataclasses.replace(INTERACTIVE_RETRY, sleep=sleep, deadline=None),
                title="orfs-fsspec")
            s = self._session_ = _Session(loop, os.getpid(), client, asyncio.Lock())
        return s

    @property
    def client(self) -> FilesClient:
        """The API client of the running event loop (for its request counts)."""
        return self._session().client

    def stats(self) -> dict[str, int]:
        """Requests made by this instance's current client, per operation."""
        s = self._session_
        return s.client.stats() if s is not None else {}

    def _fresh(self) -> bool:
        return (self._listed_at is not None
                and time.monotonic() - self._listed_at < self.listing_ttl)

    async def _layout(self) -> names.Layout:
        """The layout of a listing at most ``listing_ttl`` old (one listing, shared)."""
        if not self._fresh():
            s = self._session()
            async with s.listing:
                if not self._fresh():
                    started = time.monotonic()
                    records: dict[str, RemoteFile] = {}
                    during: list[tuple[str, RemoteFile | None]] = []
                    self._during = during
                    try:
                        async for page in s.client.list_pages(1000):
                            for rf in page:
                                records[rf.id] = rf
                    except ApiError as exc:
                        raise read_error(exc, "") from None
                    finally:
                        self._during = None
                    # Uploads and deletes made here while the pages came in: a page
                    # fetched before one of them does not show it.
                    for file_id, change in during:
                        if change is None:
                            records.pop(file_id, None)
                        else:
                            records[file_id] = change
                    log.debug("listed %d files", len(records))
                    self._records, self._listed_at = records, started
                    self._layout_ = None
        if self._layout_ is None:
            self._layout_ = names.layout(self._records.values(),
                                         extra_folders=self._extra_folders())
        return self._layout_

    def _extra_folders(self) -> set[names.DisplayPath]:
        out = set(self._folders)
        out.update(path[:-1] for path in self._empties if len(path) > 1)
        return out

    def _changed(self) -> None:
        self._layout_ = None

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget the listing (any path): the next call lists the workspace again."""
        self._listed_at = None
        self._layout_ = None
        self._by_id.clear()

    # -- paths -------------------------------------------------------------------

    async def _resolve(self, path: str) -> tuple[str, RemoteFile | None,
                                                 names.DisplayPath]:
        """("file", record or None for a local empty file, parts) or ("directory", None,
        parts); FileNotFoundError / NotADirectoryError otherwise."""
        parts = _split(self._strip_protocol(path))
        if parts[:1] == (BY_ID,):
            if len(parts) == 1:
                return "directory", None, parts
            if len(parts) > 2:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
            return "file", await self._record_by_id(parts[1], path), parts
        lay = await self._layout()
        file_id = lay.lookup(parts)
        if file_id is not None:
            return "file", lay.records[file_id], parts
        if parts in self._empties:
            return "file", None, parts
        if lay.is_folder(parts):
            return "directory", None, parts
        for i in range(1, len(parts)):
            if lay.lookup(parts[:i]) is not None or parts[:i] in self._empties:
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)

    async def _record_by_id(self, file_id: str, path: str) -> RemoteFile:
        lay = await self._layout()
        rf = lay.records.get(file_id)
        if rf is not None:
            return rf
        hit = self._by_id.get(file_id)
        if hit is not None and time.monotonic() - hit[0] < self.listing_ttl:
            return hit[1]
        try:
            rf = await self._session().client.retrieve(file_id)
        except ApiError as exc:
            raise read_error(exc, path) from None
        self._by_id[file_id] = (time.monotonic(), rf)
        return rf

    def _record_info(self, name: str, rf: RemoteFile | None) -> dict[str, Any]:
        if rf is None:
            return {"name": name, "size": 0, "type": "file", "id": None, "mime_type": "",
                    "created": self._empties[_split(name)].created, "downloadable": False,
                    "filename": name, "local": True}
        return {"name": name, "size": rf.size, "type": "file", "id": rf.id,
                "mime_type": rf.mime_type, "created": rf.created_at,
                "downloadable": rf.downloadable, "filename": rf.filename}

    @staticmethod
    def _dir_info(name: str) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory"}

    def _entry(self, lay: names.Layout, parts: names.DisplayPath) -> dict[str, Any]:
        name = _join(parts)
        file_id = lay.lookup(parts)
        if file_id is not None:
            return self._record_info(name, lay.records[file_id])
        if parts in self._empties:
            return self._record_info(name, None)
        return self._dir_info(name)

    def _children(self, lay: names.Layout, folder: names.DisplayPath) -> list[str]:
        kids = set(lay.listdir(folder))
        kids.update(p[-1] for p in self._empties
                    if p[:-1] == folder and lay.lookup(p) is None)
        return sorted(kids)

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        kind, rf, parts = await self._resolve(path)
        name = _join(parts)
        if kind == "directory":
            return self._dir_info(name)
        return self._record_info(name, rf)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any
                  ) -> list[dict[str, Any]] | list[str]:
        kind, rf, parts = await self._resolve(path)
        if kind == "file":
            entries = [self._record_info(_join(parts), rf)]
        elif parts == (BY_ID,):
            lay = await self._layout()
            entries = [self._record_info(f"{BY_ID}/{i}", lay.records[i])
                       for i in sorted(lay.records)]
        else:
            lay = await self._layout()
            entries = [self._entry(lay, (*parts, kid)) for kid in self._children(lay, parts)]
        return entries if detail else [e["name"] for e in entries]

    async def _find(self, path: str, maxdepth: int | None = None, withdirs: bool = False,
                    **kwargs: Any) -> list[str] | dict[str, dict[str, Any]]:
        """Every file under `path` (and folder, with ``withdirs``) from the one listing."""
        detail = kwargs.pop("detail", False)
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        out: dict[str, dict[str, Any]] = {}
        try:
            kind, rf, base = await self._resolve(path)
        except (FileNotFoundError, NotADirectoryError):
            return {} if detail else []
        if kind == "file":
            out[_join(base)] = self._record_info(_join(base), rf)
        elif base[:1] != (BY_ID,):
            lay = await self._layout()
            n = len(base)

            def within(p: names.DisplayPath) -> bool:
                return (len(p) > n and p[:n] == base
                        and (maxdepth is None or len(p) - n <= maxdepth))
            for p in [*lay.files.values(), *self._empties]:
                if within(p):
                    out[_join(p)] = self._entry(lay, p)
            if withdirs:
                if base:
                    out[_join(base)] = self._dir_info(_join(base))
                for p in lay.folders:
                    if within(p):
                        out[_join(p)] = self._dir_info(_join(p))
        found = {k: out[k] for k in sorted(out)}
        return found if detail else list(found)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._resolve(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """A folder exists while a file is in it (its name carries the folder). This one
        is remembered by this instance until then, as ``mkdir`` in the mount; nothing is
        sent."""
        parts = _split(self._strip_protocol(path))
        if not parts or parts[:1] == (BY_ID,):
            return
        lay = await self._layout()
        for i in range(1, len(parts) + 1):
            if lay.lookup(parts[:i]) is not None or parts[:i] in self._empties:
                what = FileExistsError if i == len(parts) else NotADirectoryError
                code = errno.EEXIST if i == len(parts) else errno.ENOTDIR
                raise what(code, os.strerror(code), path)
        if parts not in lay.folders:
            self._folders.add(parts)
            self._changed()

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        parts = _split(self._strip_protocol(path))
        if not exist_ok and parts and (await self._layout()).is_folder(parts):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        await self._mkdir(path)

    async def _rmdir(self, path: str) -> None:
        parts = _split(self._strip_protocol(path))
        if parts in self._folders:
            self._folders.discard(parts)
            self._changed()

    def created(self, path: str) -> datetime:
        when: datetime = self.info(path)["created"]
        return when

    def modified(self, path: str) -> datetime:
        """The same as `created`: files never change after upload."""
        return self.created(path)

    def ukey(self, path: str) -> str:
        """The file id: bytes behind an id never change."""
        info = self.info(path)
        return str(info.get("id") or info["name"])

    # -- reading -----------------------------------------------------------------

    async def _readable(self, path: str) -> tuple[RemoteFile | None, names.DisplayPath]:
        kind, rf, parts = await self._resolve(path)
        if kind == "directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        return rf, parts

    def _readable_size(self, rf: RemoteFile | None) -> int:
        return 0 if rf is None else rf.size

    def _check_readable(self, rf: RemoteFile, path: str) -> None:
        if not rf.downloadable and rf.id not in self._kept:
            raise PermissionError(
                errno.EACCES, f"{os.strerror(errno.EACCES)}: the service returns the bytes "
                "of the files it created (outputs) only; this one was uploaded "
                "(downloadable: false)", path)

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        **kwargs: Any) -> bytes:
        rf, parts = await self._readable(path)
        if rf is None:
            return b""
        size = rf.size
        begin = 0 if start is None else (max(0, size + start) if start < 0 else start)
        stop = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
        return await self._read_record(rf, begin, stop, path)

    async def _read_record(self, rf: RemoteFile | None, start: int, end: int,
                           path: str) -> bytes:
        """Bytes [start, end) of a file, in parallel ranged parts when big."""
        if rf is None or start >= end:
            return b""
        self._check_readable(rf, path)
        kept = self._kept.get(rf.id)
        if kept is not None:
            self._kept.move_to_end(rf.id)
            return await asyncio.to_thread(_pread, kept[0], start, end - start)
        # Chunks as they come, joined once at the end: one copy of the bytes, not three.
        pieces: list[tuple[int, bytes]] = []

        def sink(at: int, chunk: bytes) -> None:
            pieces.append((at, chunk))
        await self._transfer(rf, start, end, sink, path)
        pieces.sort(key=lambda piece: piece[0])
        return b"".join(chunk for _, chunk in pieces)

    def _parts(self, start: int, end: int) -> list[tuple[int, int]]:
        n = end - start
        k = 1 if not self._ranges else max(1, min(self.streams, n // PART_MIN))
        step = -(-n // k)
        return [(a, min(a + step, end)) for a in range(start, end, step)]

    async def _transfer(self, rf: RemoteFile, start: int, end: int,
                        sink: Callable[[int, bytes], object], path: str) -> None:
        """Download [start, end) into `sink(offset, chunk)`, split among the streams.

        A server that ignores ``Range`` is noticed at the first answer (200, not 206):
        a WARNING once, the parts are stopped, and from then on every read is one
        sequential stream (the bytes before it skipped on the wire), as in the mount."""
        client = self._session().client
        parts = self._parts(start, end)

        async def fetch(a: int, b: int, probe: bool) -> None:
            async with client.download(rf.id, a, b - a) as d:
                if probe and d.ranged is False:
                    raise _RangesIgnored
                at = a
                async for chunk in d.iter_bytes():
                    sink(at, chunk)
                    at += len(chunk)
            if at != b:
                raise OSError(errno.EIO, f"download ended at byte {at} of {b}", path)

        try:
            if len(parts) == 1:
                await fetch(start, end, False)
                return
            try:
                async with asyncio.TaskGroup() as tg:
                    for a, b in parts:
                        tg.create_task(fetch(a, b, True))
            except* _RangesIgnored:
                if self._ranges:
                    log.warning("the server ignores Range requests: reading each file in "
                                "one stream from now on")
                self._ranges = False
                await fetch(start, end, False)
        except* ApiError as group:
            raise read_error(_first(group, ApiError), path) from None
        except* OSError as group:
            raise _first(group, OSError) from None

    async def _get_file(self, rpath: str, lpath: str,
                        callback: fsspec.callbacks.Callback = fsspec.callbacks.DEFAULT_CALLBACK,
                        **kwargs: Any) -> None:
        """Download to a local file, in ranged parts written in place (never the whole
        file in memory); a failed download leaves no partial file."""
        if os.path.isdir(lpath):
            return
        rf, parts = await self._readable(rpath)
        size = self._readable_size(rf)
        callback.set_size(size)
        fd = os.open(lpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            if rf is not None and size:
                self._check_readable(rf, rpath)
                kept = self._kept.get(rf.id)
                if kept is not None:
                    await asyncio.to_thread(shutil.copyfile, kept[0], lpath)
                else:
                    os.ftruncate(fd, size)

                    def sink(at: int, chunk: bytes) -> None:
                        os.pwrite(fd, chunk, at)
                        callback.relative_update(len(chunk))
                    await self._transfer(rf, 0, size, sink, rpath)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lpath)
            raise
        os.close(fd)

    def _open(self, path: str, mode: str = "rb", block_size: int | str | None = "default",
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> OpenRouterFile:
        if mode == "rb":
            rf, parts = self._sync(self._readable(path))
            if rf is not None:
                self._check_readable(rf, path)
            return OpenRouterFile(self, _join(parts), "rb", record=rf, block_size=block_size,
                                  cache_options=cache_options,
                                  cache_type=kwargs.pop("cache_type", GrowingReadAhead.name),
                                  **kwargs)
        if mode in ("wb", "xb"):
            parts, replaces = self._sync(self._target(path, exclusive=mode == "xb"))
            return OpenRouterFile(self, _join(parts), mode, replaces=replaces,
                                  block_size=block_size, **kwargs)
        return OpenRouterFile(self, path, mode)  # raises NotImplementedError

    def _sync(self, coro: Any) -> Any:
        async def run() -> Any:
            return await coro
        return sync(self.loop, run)

    # -- writing -----------------------------------------------------------------

    async def _target(self, path: str, *, exclusive: bool = False
                      ) -> tuple[names.DisplayPath, RemoteFile | None]:
        """Where a write to `path` goes, and the file it replaces (None: a new one)."""
        parts = _split(self._strip_protocol(path))
        if not parts or parts[:1] == (BY_ID,) and len(parts) == 1:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        try:
            kind, rf, parts = await self._resolve(path)
        except FileNotFoundError:
            return parts, None
        if kind == "directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if exclusive:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        return parts, rf

    def _staging_file(self) -> tempfile._TemporaryFileWrapper[bytes]:
        return tempfile.NamedTemporaryFile(dir=self._dir, prefix="staged-", delete=True)

    async def _upload_body(self, parts: names.DisplayPath, body: UploadBody,
                      replaces: RemoteFile | None, path: str,
                      staged: str | None = None) -> RemoteFile | None:
        """Upload `body` to the file at `parts`, then delete the file it replaces. An
        empty body makes a local empty file (the API refuses empty files)."""
        size = body.size or 0
        if size > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)}: {size} bytes; the API "
                          f"stores files of at most {MAX_FILE_SIZE} bytes", path)
        if size == 0:
            if replaces is not None:
                raise OSError(errno.EINVAL, f"{os.strerror(errno.EINVAL)}: the API stores no "
                              "empty files; the file keeps its bytes", path)
            if parts[:1] == (BY_ID,):
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
            self._empties[parts] = _Empty(datetime.now(UTC))
            self._changed()
            return None
        if parts[:1] == (BY_ID,) and replaces is None:
            raise PermissionError(errno.EPERM, f"{os.strerror(errno.EPERM)}: {BY_ID}/ names "
                                  "existing files only", path)
        filename = (replaces.filename if replaces is not None
                    else names.raw_filename(parts[:-1], parts[-1]))
        client = self._session().client
        try:
            rf = await client.upload(filename, body)
        except ApiError as exc:
            raise upload_error(exc, path) from None
        if rf.filename != filename:
            log.warning("uploaded %r, but the service stored it as %r", filename, rf.filename)
        self._records[rf.id] = rf
        if self._during is not None:
            self._during.append((rf.id, rf))
        self._empties.pop(parts, None)
        if staged is not None:
            self._keep(rf.id, staged, size)
        self._changed()
        log.debug("uploaded %s as %s (%d bytes)", path, rf.id, size)
        if replaces is not None:
            await self._delete_record(replaces, path)
        return rf

    def _keep(self, file_id: str, staged: str, size: int) -> None:
        """Keep an upload's staged bytes (renamed, no copy) so this process can read back
        what it wrote; the oldest kept go first beyond ``keep_written`` bytes."""
        if size > self._keep_limit:
            return
        kept = os.path.join(self._dir, f"kept-{file_id}")
        try:
            os.link(staged, kept)
        except OSError as exc:
            log.debug("cannot keep the bytes of %s: %s", file_id, exc)
            return
        self._kept[file_id] = (kept, size)
        self._kept_bytes += size
        while self._kept_bytes > self._keep_limit and self._kept:
            _, (old, n) = self._kept.popitem(last=False)
            self._kept_bytes -= n
            with contextlib.suppress(OSError):
                os.unlink(old)

    def _forget_kept(self, file_id: str) -> None:
        kept = self._kept.pop(file_id, None)
        if kept is not None:
            self._kept_bytes -= kept[1]
            with contextlib.suppress(OSError):
                os.unlink(kept[0])

    async def _upload_staged(self, path: str, staged: str,
                             replaces: RemoteFile | None) -> None:
        size = os.stat(staged).st_size
        await self._upload_body(_split(path), _path_body(staged, size), replaces, path, staged)

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite",
                         **kwargs: Any) -> None:
        parts, replaces = await self._target(path, exclusive=mode == "create")
        data = bytes(value)
        body = UploadBody.from_bytes(data)
        if 0 < len(data) <= min(self._keep_limit, MAX_FILE_SIZE):
            # Staged on disk too, so that this process can read back what it wrote.
            with self._staging_file() as f:
                f.write(data)
                f.flush()
                await self._upload_body(parts, body, replaces, path, f.name)
            return
        await self._upload_body(parts, body, replaces, path)

    async def _put_file(self, lpath: str, rpath: str,
                        callback: fsspec.callbacks.Callback = fsspec.callbacks.DEFAULT_CALLBACK,
                        mode: str = "overwrite", **kwargs: Any) -> None:
        """Upload a local file, streamed from disk (its size checked first)."""
        if os.path.isdir(lpath):
            await self._makedirs(rpath, exist_ok=True)
            return
        parts, replaces = await self._target(rpath, exclusive=mode == "create")
        size = os.stat(lpath).st_size
        callback.set_size(size)
        if 0 < size <= min(self._keep_limit, MAX_FILE_SIZE):
            # A private copy, so that this process can read back what it wrote (the
            # local file may change or go); copy_file_range makes it cheap.
            with self._staging_file() as f:
                await asyncio.to_thread(shutil.copyfile, lpath, f.name)
                await self._upload_body(parts, _path_body(f.name, size, callback), replaces,
                                        rpath, f.name)
            return
        await self._upload_body(parts, _path_body(lpath, size, callback), replaces, rpath)

    # -- removing, copying, moving ------------------------------------------------

    async def _delete_record(self, rf: RemoteFile, path: str) -> None:
        try:
            await self._session().client.delete(rf.id)
        except NotFound:
            pass  # gone already: what was asked
        except ApiError as exc:
            raise read_error(exc, path) from None
        self._records.pop(rf.id, None)
        if self._during is not None:
            self._during.append((rf.id, None))
        self._by_id.pop(rf.id, None)
        self._forget_kept(rf.id)
        self._changed()

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        kind, rf, parts = await self._resolve(path)
        if kind == "directory":
            await self._rmdir(path)
            return
        if rf is None:
            self._empties.pop(parts, None)
            self._changed()
            return
        await self._delete_record(rf, path)

    async def _rm(self, path: str | list[str], recursive: bool = False,
                  batch_size: int | None = None, maxdepth: int | None = None,
                  **kwargs: Any) -> None:
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        # Files first, at once; then the folders this instance remembers.
        infos = [(p, await self._resolve(p)) for p in paths]
        files = [p for p, (kind, _, _) in infos if kind == "file"]
        results = await asyncio.gather(*(self._rm_file(p) for p in files),
                                       return_exceptions=True)
        for p, (kind, _, _) in infos:
            if kind == "directory":
                await self._rmdir(p)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy = download, then upload under the new name: the copy is an uploaded file,
        so the service will not serve its bytes to another process (this one keeps them,
        see ``keep_written``). An unreadable source is PermissionError."""
        kind, _, _ = await self._resolve(path1)
        if kind == "directory":  # a recursive copy lists folders too
            await self._makedirs(path2, exist_ok=True)
            return
        rf, _ = await self._readable(path1)
        parts, replaces = await self._target(path2)
        if rf is not None and replaces is not None and rf.id == replaces.id:
            return
        if rf is None:
            await self._upload_body(parts, UploadBody.from_bytes(b""), replaces, path2)
            return
        self._check_readable(rf, path1)
        with self._staging_file() as f:
            fd = f.fileno()

            def sink(at: int, chunk: bytes) -> None:
                os.pwrite(fd, chunk, at)
            kept = self._kept.get(rf.id)
            if kept is not None:
                await asyncio.to_thread(shutil.copyfile, kept[0], f.name)
            else:
                await self._transfer(rf, 0, rf.size, sink, path1)
            await self._upload_body(parts, _path_body(f.name, rf.size), replaces, path2, f.name)

    def mv(self, path1: str, path2: str, recursive: bool = False,
           maxdepth: int | None = None, **kwargs: Any) -> None:
        """Move = copy, then delete the source, as the mount renames a file whose bytes
        it can read: the API has no rename. The file gets a new id and becomes an
        uploaded file (readable by this process only, see `_cp_file`); moving onto an
        existing file replaces it (upload first, then delete the old one); a source
        whose bytes the service will not return (an upload) is PermissionError and
        stays where it was. Folders move file by file (``recursive=True``)."""
        if self._strip_protocol(path1) == self._strip_protocol(path2):
            return
        self.copy(path1, path2, recursive=recursive, maxdepth=maxdepth, on_error="raise")
        self.rm(path1, recursive=recursive)


class _RangesIgnored(Exception):
    """A ranged request was answered with the whole body."""


def _first(group: BaseExceptionGroup[Any], kind: type[E]) -> E:
    """The first exception of a group, however deeply nested."""
    for exc in group.exceptions:
        found = _first(exc, kind) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(found, kind):
            return found
    raise group


def _pread(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def _path_body(path: str, size: int,
               callback: fsspec.callbacks.Callback | None = None) -> UploadBody:
    """A local file as an upload body read in chunks off the event loop."""
    async def chunks() -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, UPLOAD_CHUNK):
                if callback is not None:
                    callback.relative_update(len(chunk))
                yield chunk
        finally:
            f.close()
    return UploadBody(chunks, size)
