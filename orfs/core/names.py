"""Remote filenames -> the names a user sees under the mount.

Pure and kernel-free: no I/O, no trio, no pyfuse3. The rules are docs/SEMANTICS.md,
"Namespace"; this module is their single implementation.

Components
    A raw filename is split on ``/`` (``split_raw``); each raw component becomes a
    legal POSIX name with ``encode_component``: lone surrogates -> U+FFFD, NUL -> ``␀``,
    ``/`` -> ``／`` (only reachable by calling it directly), ``''`` -> ``∅``, ``.`` ->
    ``．``, ``..`` -> ``．．``, and a component over ``NAME_MAX`` UTF-8 bytes is shortened
    in its stem (marked with ``…``), keeping its extension. The encoding is deliberately
    not injective (raw ``.`` and raw ``．`` both show as ``．``; long names that share a
    prefix shorten alike): such collisions are ordinary duplicates, resolved below.

Extensions (``split_ext``)
    The text from the last ``.`` when that is not the first character after leading
    dots (``.bashrc`` and ``..x`` have none), not the last character (``report.`` has
    none), contains no whitespace (``notes 3.5 final`` has none) and is at most
    ``EXT_MAX`` bytes. ``archive.tar.gz`` has extension ``.gz``.

Layout (``layout``), in order of precedence
    1. Folders: the parents of every file's display path plus ``extra_folders`` (and
       their parents). A folder keeps its plain name, always.
    2. Files sharing a display path form a group. The oldest by its *age*, ``(created_at,
       id)`` unless ``ages`` gives another (a rewrite through the mount is ordered as
       the file it replaced), keeps the plain name, unless the path is a folder; every
       other member (and the oldest, when a folder holds the path) is shown as
       ``with_id(name, id)``.
    3. An id form beats a plain name: a file whose plain name happens to equal another
       file's id form (a file literally called ``a [or_file_X].csv`` next to a duplicate
       ``a.csv`` with id ``or_file_X``) is itself shown in its id form. This may cascade;
       the result is the least fixpoint, so it does not depend on processing order.
       Id forms win because they carry a real id and are what a user copies from ``ls``.
    4. Last resort, for an id form that equals a folder or another file's id form (only
       possible with names that imitate id forms, or with ids longer than ``ID_MAX``):
       the oldest claimant of a free id form keeps it; every other one, oldest first,
       takes ``with_id(name, f"{id}~{k}")`` for the smallest ``k >= 2`` that is free.

Determinism and stability
    The same listing in any order gives the same ``Layout``. Adding a file renames
    only: files with the same display path (an *older* duplicate takes the plain name
    from the current holder, which moves to its id form: inherent in "the oldest keeps
    the plain name"), a file whose path becomes a folder, and files whose plain names
    literally equal one of the new id forms (rule 3). Removing a file is the mirror
    image. A record listed twice under one id (a page boundary shifting during a
    listing) counts once; if the copies differ, the smallest by
    ``(created_at, filename, size, mime_type, downloadable)`` is kept.

Known limits: names are compared as code points, so NFC and NFD spellings of one name
are two names; ``.tar.gz`` style double extensions get the id before ``.gz``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from orfs.api.models import RemoteFile

__all__ = [
    "EXT_MAX",
    "ID_MAX",
    "NAME_MAX",
    "Age",
    "DisplayPath",
    "Layout",
    "LayoutBuilder",
    "display_path",
    "encode_component",
    "layout",
    "raw_filename",
    "split_ext",
    "split_raw",
    "with_id",
]

NAME_MAX = 255
"""Longest component, in UTF-8 bytes (Linux NAME_MAX)."""

EXT_MAX = 32
"""Longest text, dot included, in UTF-8 bytes, still treated as an extension."""

ID_MAX = 128
"""Longest id, in UTF-8 bytes, shown whole inside ``[...]``; longer ones keep head and tail.

With ``EXT_MAX`` this guarantees a ``with_id`` name always keeps a stem of >= 80 bytes.
"""

DisplayPath = tuple[str, ...]
"""A path under the mount root as display components; ``()`` is the root."""

_ELLIPSIS = "\u2026"
_ELLIPSIS_BYTES = len(_ELLIPSIS.encode())
_SPECIAL = {"": "\u2205", ".": "\uff0e", "..": "\uff0e\uff0e"}
_CHAR_MAP = {0: "\u2400", ord("/"): "\uff0f"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# A code point is at most 4 UTF-8 bytes, so anything this short needs no byte count.
_SURELY_SHORT = NAME_MAX // 4


def _clean(text: str) -> str:
    """Lone surrogates -> U+FFFD, NUL -> ␀, / -> ／: what no POSIX name may hold."""
    if not text.isascii() and _SURROGATE.search(text):
        # Only reachable through JSON escapes; such a str cannot even be encoded.
        text = _SURROGATE.sub("\ufffd", text)
    if "\0" in text or "/" in text:
        text = text.translate(_CHAR_MAP)
    return text


def _cut(text: str, limit: int) -> str:
    """The longest prefix of text within limit UTF-8 bytes, never splitting a code point."""
    data = text.encode()
    if len(data) <= limit:
        return text
    # 'ignore' drops only the partial code point left at the cut: the input is valid.
    return data[:limit].decode("utf-8", "ignore")


def split_ext(name: str) -> tuple[str, str]:
    """``'report.csv'`` -> ``('report', '.csv')``; no extension -> ``(name, '')``.

    See the module docstring for what counts as an extension.
    """
    i = name.rfind(".")
    if i <= 0 or i == len(name) - 1:
        return name, ""
    stem, ext = name[:i], name[i:]
    if not stem.strip("."):
        return name, ""
    if len(ext) > EXT_MAX or len(ext.encode()) > EXT_MAX or any(c.isspace() for c in ext):
        return name, ""
    return stem, ext


def _shorten(name: str) -> str:
    stem, ext = split_ext(name)
    budget = NAME_MAX - len(ext.encode()) - _ELLIPSIS_BYTES
    return _cut(stem, budget) + _ELLIPSIS + ext


def encode_component(raw: str) -> str:
    """One raw path component -> a legal POSIX name.

    Lone surrogates -> U+FFFD; NUL -> ``␀`` (U+2400); ``/`` -> ``／`` (U+FF0F); ``''`` ->
    ``∅``; ``.`` -> ``．`` and ``..`` -> ``．．`` (U+FF0E for each dot); over ``NAME_MAX``
    UTF-8 bytes -> the stem is cut (never inside a code point) and ends in ``…``, the
    extension is kept. The result is never empty, never contains ``/`` or NUL, is never
    ``.`` or ``..``, is valid UTF-8 and at most ``NAME_MAX`` bytes. Names already legal
    come back unchanged (the same object).
    """
    special = _SPECIAL.get(raw)
    if special is not None:
        return special
    name = _clean(raw)
    if len(name) <= _SURELY_SHORT or len(name.encode()) <= NAME_MAX:
        return name
    return _shorten(name)


def split_raw(filename: str) -> tuple[str, ...]:
    """Raw filename -> raw components, split on ``/``.

    ``'a//b'`` -> ``('a', '', 'b')``; ``'/x'`` -> ``('', 'x')``; ``'x/'`` -> ``('x', '')``;
    ``''`` -> ``('',)``. ``'/'.join`` of the result is the filename again.
    """
    return tuple(filename.split("/"))


def display_path(filename: str) -> DisplayPath:
    """Raw filename -> its display path before duplicates are resolved."""
    return tuple(encode_component(c) for c in split_raw(filename))


def raw_filename(folder: DisplayPath, name: str) -> str:
    """The raw filename to upload for a file the user created at ``folder + (name,)``.

    Display components joined with ``/``. Names made by the user are legal already; a
    name that looks encoded (contains ``␀``, is ``∅``, ends in ``[or_file_X]``) is
    uploaded as typed: the encoding is not reversed.
    """
    return "/".join((*folder, name))


def _safe_id(file_id: str) -> str:
    text = _clean(file_id) or _SPECIAL[""]
    if len(text) * 4 <= ID_MAX or len(text.encode()) <= ID_MAX:
        return text
    # Keep the tail whole: fallback ids differ only in their "~k" suffix.
    data = text.encode()
    half = (ID_MAX - _ELLIPSIS_BYTES) // 2
    tail = data[-half:].decode("utf-8", "ignore")
    return _cut(text, ID_MAX - _ELLIPSIS_BYTES - len(tail.encode())) + _ELLIPSIS + tail


def with_id(name: str, file_id: str) -> str:
    """A display name with the file id in it: the form for every non-plain file.

    ``('report.csv', 'or_file_X')`` -> ``'report [or_file_X].csv'``; no extension ->
    ``'report [or_file_X]'``; dotfiles (``.bashrc``) have no extension. ``name`` is made
    legal first (``encode_component``); an id over ``ID_MAX`` bytes keeps its head and
    tail around ``…``. When the result would pass ``NAME_MAX`` bytes the stem is cut and
    ends in ``…``; the id and the extension are kept whole.
    """
    name = encode_component(name)
    tag = f" [{_safe_id(file_id)}]"
    stem, ext = split_ext(name)
    out = f"{stem}{tag}{ext}"
    if len(out) <= _SURELY_SHORT or len(out.encode()) <= NAME_MAX:
        return out
    budget = NAME_MAX - len(tag.encode()) - len(ext.encode()) - _ELLIPSIS_BYTES
    return f"{_cut(stem, budget)}{_ELLIPSIS}{tag}{ext}"


@dataclass(frozen=True, slots=True)
class Layout:
    """The namespace of one listing. Treat the mappings as read-only.

    ``files``: file id -> display path, for every file (a bijection onto ``by_path``).
    ``folders``: every folder's display path, the root ``()`` excluded.
    ``by_path``: display path -> file id (inverse of ``files``); never a folder path.
    ``children``: folder (``()`` included) -> names in it, files and folders, sorted by
    code point (stable readdir offsets). ``records``: file id -> its ``RemoteFile``, one
    per id; ``records[id].filename`` is the raw name.
    """

    files: Mapping[str, DisplayPath]
    folders: frozenset[DisplayPath]
    by_path: Mapping[DisplayPath, str]
    children: Mapping[DisplayPath, tuple[str, ...]]
    records: Mapping[str, RemoteFile]

    def lookup(self, path: DisplayPath) -> str | None:
        """The id of the file at path, or None (a folder, or nothing)."""
        return self.by_path.get(path)

    def is_folder(self, path: DisplayPath) -> bool:
        return not path or path in self.folders

    def listdir(self, folder: DisplayPath) -> tuple[str, ...]:
        return self.children.get(folder, ())


Age = tuple[datetime, str]
"""What orders duplicates: a creation time, then an id (for equal times)."""


def _record_order(record: RemoteFile) -> tuple[datetime, str, int, str, bool]:
    return record.created_at, record.filename, record.size, record.mime_type, record.downloadable


def _add_folder(folders: set[DisplayPath], path: DisplayPath) -> None:
    """Add path and all its parents; stops early since a folder's parents are in already."""
    for end in range(len(path), 0, -1):
        prefix = path[:end]
        if prefix in folders:
            return
        folders.add(prefix)


def layout(files: Iterable[RemoteFile], extra_folders: Iterable[DisplayPath] = (),
           ages: Mapping[str, Age] | None = None) -> Layout:
    """The display names of a listing; ``extra_folders`` are local (mkdir) folders;
    ``ages``: file id -> the age it is ordered by, for ids whose age is not their own
    ``(created_at, id)`` (ids not listed are ignored).

    Rules and guarantees: the module docstring. O(n log n) time; memory is the
    result plus one display path per file.
    """
    builder = LayoutBuilder(ages)
    builder.add(files)
    return builder.finish(extra_folders)


class LayoutBuilder:
    """`layout` in two steps: `add` records as they come (a listing does it page by
    page, while the next page is on its way), then `finish` once. The per-file work
    (display paths, who holds each plain name) is done in `add`; what needs every file
    (rules 2-4) in `finish`. The result is the same as `layout` of all the records."""

    def __init__(self, ages: Mapping[str, Age] | None = None) -> None:
        self._ages: Mapping[str, Age] = ages or {}
        self._records: dict[str, RemoteFile] = {}
        self._folders: set[DisplayPath] = set()
        # Files in one folder share one parent tuple and its component strings.
        self._parents: dict[str, DisplayPath] = {}
        self._natural: dict[str, DisplayPath] = {}
        # display path -> oldest file there; becomes the plain names once folders are out.
        self._plain: dict[DisplayPath, str] = {}
        self._demoted: list[str] = []
        # An id came twice (a page boundary shifted): its first copy is placed already,
        # so `finish` starts over from the deduplicated records.
        self._redo = False

    def _age(self, record: RemoteFile) -> Age:
        age = self._ages.get(record.id) if self._ages else None
        return (record.created_at, record.id) if age is None else age

    def add(self, files: Iterable[RemoteFile]) -> None:
        records, parents, natural = self._records, self._parents, self._natural
        _age = self._age
        plain, demoted, folders = self._plain, self._demoted, self._folders
        for record in files:
            file_id = record.id
            seen = records.get(file_id)
            if seen is not None:
                if _record_order(record) < _record_order(seen):
                    records[file_id] = record
                self._redo = True
                continue
            records[file_id] = record
            if self._redo:
                continue  # placed by `finish`, which starts over
            head, sep, leaf = record.filename.rpartition("/")
            parent: DisplayPath = ()
            if sep:
                known = parents.get(head)
                if known is None:
                    known = parents[head] = display_path(head)
                    _add_folder(folders, known)
                parent = known
            path = (*parent, encode_component(leaf))
            natural[file_id] = path
            holder = plain.get(path)
            if holder is None:
                plain[path] = file_id
            elif _age(record) < _age(records[holder]):
                plain[path] = file_id
                demoted.append(holder)
            else:
                demoted.append(file_id)

    def finish(self, extra_folders: Iterable[DisplayPath] = ()) -> Layout:
        """The layout of every record added. The builder is spent afterwards."""
        if self._redo:
            again = LayoutBuilder(self._ages)
            again.add(self._records.values())
            return again.finish(extra_folders)
        records, natural, plain = self._records, self._natural, self._plain
        folders, demoted = self._folders, self._demoted
        _age = self._age
        self._parents = {}
        for extra in extra_folders:
            if extra:
                _add_folder(folders, tuple(extra))

        # Rule 2: folders win over files.
        for path in [path for path in plain if path in folders]:
            demoted.append(plain.pop(path))

        # Rule 3: id forms win over plain names; the closure is order-independent.
        claims: dict[DisplayPath, str] = {}
        clashed: list[str] = []
        while demoted:
            file_id = demoted.pop()
            path = natural[file_id]
            id_path = (*path[:-1], with_id(path[-1], file_id))
            holder = plain.pop(id_path, None)
            if holder is not None:
                demoted.append(holder)
            if id_path in folders:
                clashed.append(file_id)
                continue
            rival = claims.get(id_path)
            if rival is None:
                claims[id_path] = file_id
            elif _age(records[file_id]) < _age(records[rival]):
                claims[id_path] = file_id
                clashed.append(rival)
            else:
                clashed.append(file_id)

        # Rule 4: the last resort, deterministic by age, unique by construction.
        clashed.sort(key=lambda file_id: _age(records[file_id]))
        for file_id in clashed:
            path = natural[file_id]
            k = 2
            while True:
                id_path = (*path[:-1], with_id(path[-1], f"{file_id}~{k}"))
                if (id_path not in folders and id_path not in plain
                        and id_path not in claims):
                    break
                k += 1
            claims[id_path] = file_id
        # Spent: the layout owns these now (by_path is `plain`), and nothing else may
        # change them.
        self._records, self._natural, self._plain = {}, {}, {}
        self._folders, self._demoted = set(), []
        del natural

        by_path = plain
        by_path.update(claims)
        del claims
        by_id = {file_id: path for path, file_id in by_path.items()}

        kids: dict[DisplayPath, list[str]] = {(): []}
        for folder in folders:
            kids[folder] = []
        for folder in folders:
            kids[folder[:-1]].append(folder[-1])
        for path in by_path:
            kids[path[:-1]].append(path[-1])
        children = {folder: tuple(sorted(names)) for folder, names in kids.items()}
        return Layout(
            files=by_id,
            folders=frozenset(folders),
            by_path=by_path,
            children=children,
            records=records,
        )


def parent_of(record: RemoteFile) -> DisplayPath:
    """The display path of the folder a record's file is shown in."""
    head, sep, _ = record.filename.rpartition("/")
    return display_path(head) if sep else ()


def relayout(lay: Layout, *, add: RemoteFile | None = None, drop: str | None = None,
             ages: Mapping[str, Age] | None = None) -> tuple[Layout, DisplayPath] | None:
    """``lay`` with one file added (a record whose id it does not hold) or dropped (an
    id it holds), and the folder whose names changed; None where the change may reach
    past that folder (then build the layout again).

    The names in a folder depend only on the files shown in it, the folders in it and
    the ages (rules 2-4 compare paths with the same parent), so only that folder's
    names are worked out again: O(files in it), plus copying the mappings. Local only
    while the set of folders stays as it is: a file added in a folder that exists, a
    file dropped from one that keeps something else in it. The result equals
    ``layout`` of the changed records with the same folders and ages."""
    if (add is None) == (drop is None):
        raise ValueError("relayout takes one change: add or drop")
    if add is not None:
        if add.id in lay.records:
            return None
        folder = parent_of(add)
        if folder and folder not in lay.folders:
            return None  # a new folder
    else:
        assert drop is not None
        path = lay.files.get(drop)
        if path is None:
            return None
        folder = path[:-1]
    names_in = lay.children.get(folder, ())
    subfolders = [(*folder, n) for n in names_in if (*folder, n) in lay.folders]
    old_ids = [lay.by_path[p] for p in ((*folder, n) for n in names_in) if p in lay.by_path]
    ids = [i for i in old_ids if i != drop]
    if not ids and not subfolders and drop is not None and folder:
        return None  # the folder may go with its last file
    builder = LayoutBuilder(ages)
    builder.add([lay.records[i] for i in ids] + ([add] if add is not None else []))
    part = builder.finish(extra_folders=subfolders)
    files = dict(lay.files)
    by_path = dict(lay.by_path)
    records = dict(lay.records)
    for i in old_ids:
        del by_path[files.pop(i)]
    if drop is not None:
        del records[drop]
    else:
        assert add is not None
        records[add.id] = add
    files.update(part.files)
    by_path.update(part.by_path)
    children = dict(lay.children)
    children[folder] = part.children.get(folder, ())
    return Layout(files=files, folders=lay.folders, by_path=by_path, children=children,
                  records=records), folder
