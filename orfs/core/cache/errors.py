"""What the cache raises when a file's bytes cannot be had."""

from __future__ import annotations

import errno


class ContentUnavailable(Exception):
    """The bytes of a file cannot be had: its download failed or was stopped.

    ``not_downloadable`` is True when the API refused to serve the file (400): the core
    answers EACCES for it and EIO otherwise. ``cause`` is the client's error, if any.
    """

    def __init__(
        self,
        reason: str,
        *,
        not_downloadable: bool = False,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_downloadable = not_downloadable
        self.cause = cause

    @property
    def errno(self) -> int:
        return errno.EACCES if self.not_downloadable else errno.EIO

    def fresh(self) -> ContentUnavailable:
        """A new instance to raise (re-raising one instance grows its traceback)."""
        return ContentUnavailable(
            self.reason, not_downloadable=self.not_downloadable, cause=self.cause
        )
