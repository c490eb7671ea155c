"""Where the API key comes from, and a wrapper that will not print it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["ENV_VAR", "ApiKey", "ApiKeyError", "read_api_key"]

ENV_VAR = "OPENROUTER_API_KEY"


class ApiKeyError(Exception):
    """No usable API key (message says what to do; it never contains the key)."""


class ApiKey:
    """The API key. Its str and repr are ``ApiKey('***')`` so a stray log line or
    traceback cannot reveal it; `reveal()` is the one way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", self._value))

    def __reduce__(self) -> str:  # never pickled into a journal or a subprocess by accident
        raise TypeError("ApiKey is not picklable")


def read_api_key(key_file: Path | None = None) -> ApiKey:
    """The API key: from `key_file` if given, else from ``$OPENROUTER_API_KEY``.

    A key file that group or others can read is refused (`ApiKeyError` naming the
    ``chmod 600`` to run), as ssh does for private keys. Surrounding whitespace is
    stripped. A missing, unreadable or empty source is an `ApiKeyError` too.
    """
    if key_file is not None:
        try:
            st = os.stat(key_file)
        except OSError as exc:
            raise ApiKeyError(f"cannot read API key file {key_file}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ApiKeyError(f"API key file {key_file} is not a regular file")
        if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
            raise ApiKeyError(
                f"API key file {key_file} is accessible by other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. "
                f"Run: chmod 600 {key_file}")
        try:
            value = Path(key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ApiKeyError(f"cannot read API key file {key_file}: {reason}") from None
        if not value:
            raise ApiKeyError(f"API key file {key_file} is empty")
        return ApiKey(value)
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        raise ApiKeyError(
            f"no API key: set {ENV_VAR} or pass --api-key-file FILE (a file only you can read)")
    return ApiKey(value)
