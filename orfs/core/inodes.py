"""The inode table: inode numbers <-> what they name, with kernel lookup counts.

What an inode names is a *key*: a remote file id (`FileKey`), a local file not (or
not yet) uploaded (`LocalKey`), a folder by display path (`DirKey`), or the hidden
``.by-id`` folder (`ByIdKey`). A local file that finishes uploading keeps its inode:
the table *rebinds* it to the new `FileKey`, because the kernel still holds it.

Numbers come from a counter that only grows: a number the kernel may still hold is
never given to a different file (it would serve the old file's cached pages). An inode
leaves the table when the kernel forgets it (lookup count 0); entries handed out by
readdir but not taken by the kernel keep count 0 and stay until then (cheap).
"""

from __future__ import annotations

import dataclasses
from typing import NewType

Inode = NewType("Inode", int)
FileHandle = NewType("FileHandle", int)

ROOT_INODE = Inode(1)


@dataclasses.dataclass(frozen=True, slots=True)
class FileKey:
    id: str


@dataclasses.dataclass(frozen=True, slots=True)
class LocalKey:
    serial: int


@dataclasses.dataclass(frozen=True, slots=True)
class DirKey:
    path: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ByIdKey:
    pass


Key = FileKey | LocalKey | DirKey | ByIdKey
ROOT_KEY = DirKey(())


class InodeTable:
    """inode <-> key, lookup counts; synchronous (no await anywhere)."""

    def __init__(self) -> None:
        self._next = ROOT_INODE + 1
        self._key: dict[Inode, Key] = {ROOT_INODE: ROOT_KEY}
        self._ino: dict[Key, Inode] = {ROOT_KEY: ROOT_INODE}
        self._lookups: dict[Inode, int] = {ROOT_INODE: 1}

    def __len__(self) -> int:
        return len(self._key)

    def inode_for(self, key: Key) -> Inode:
        """The inode of key, allocating a new number if it has none."""
        ino = self._ino.get(key)
        if ino is None:
            ino = Inode(self._next)
            self._next += 1
            self._ino[key] = ino
            self._key[ino] = key
            self._lookups[ino] = 0
        return ino

    def existing(self, key: Key) -> Inode | None:
        return self._ino.get(key)

    def key_of(self, ino: int) -> Key | None:
        return self._key.get(Inode(ino))

    def remember(self, ino: Inode, n: int = 1) -> None:
        """The kernel took n more references (lookup, create, mkdir, readdirplus)."""
        if ino in self._lookups:
            self._lookups[ino] += n

    def forget(self, ino: int, n: int) -> Key | None:
        """The kernel dropped n references; returns the key if the inode left the table."""
        inode = Inode(ino)
        if inode == ROOT_INODE or inode not in self._lookups:
            return None
        left = self._lookups[inode] - n
        if left > 0:
            self._lookups[inode] = left
            return None
        key = self._key.pop(inode)
        del self._lookups[inode]
        if self._ino.get(key) == inode:
            del self._ino[key]
        return key

    def rebind(self, ino: Inode, key: Key) -> None:
        """Make ino name key from now on (a local file became a remote id, or back).

        If key already had another inode, that inode keeps pointing at key but key
        now maps to ino (the kernel's view through ino is the one that matters).
        """
        old = self._key.get(ino)
        if old is None:
            return
        if self._ino.get(old) == ino:
            del self._ino[old]
        self._key[ino] = key
        self._ino[key] = ino

    def unbind(self, key: Key) -> None:
        """key no longer gets its inode from a lookup (its inode stays for the kernel)."""
        self._ino.pop(key, None)
