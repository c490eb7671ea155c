"""What the cache needs of the API client: a streamed download of a range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class DownloadStream(Protocol):
    """What ``client.download(...)`` yields."""

    @property
    def size(self) -> int | None: ...

    @property
    def total_size(self) -> int | None: ...

    @property
    def ranged(self) -> bool | None: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...


class DownloadClient(Protocol):
    """The part of the API client the cache uses."""

    def download(
        self, file_id: str, offset: int = 0, length: int | None = None
    ) -> AbstractAsyncContextManager[DownloadStream]: ...
