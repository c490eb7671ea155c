"""Where every failure of a request becomes one of the typed errors (errors.py).

Two functions, used by the client for every request:

- `error_for_status`: an error status + body + headers → the `HttpStatusError`
  subclass, with the server's ``error.message`` as message and Retry-After parsed;
- `error_for_transport`: an httpx transport error → `Unreachable`, recording whether
  the request can have reached the server.

The httpx exception is never chained or quoted whole: only its class name and
its own message (which never contains headers) are kept, so no error text can
carry the API key.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from orfs.api.errors import (
    BadRequest,
    Forbidden,
    HttpStatusError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
)
from orfs.api.retry import parse_retry_after
from orfs.api.shapes import error_message

__all__ = ["error_for_status", "error_for_transport"]

_BY_STATUS: dict[int, type[HttpStatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    429: RateLimited,
}

# Transport errors raised before a byte of the request went out: the server
# cannot have acted on it, so even an upload may be repeated.
_NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout,
                                          httpx.PoolTimeout, httpx.ProxyError)


def error_for_status(status: int, body: bytes, headers: Mapping[str, str],
                     *, what: str = "") -> HttpStatusError:
    """The typed error of an error answer. `what` ("GET /files") is used when the body
    carries no message."""
    message = error_message(body)
    if message is None:
        phrase = httpx.codes.get_reason_phrase(status) or f"HTTP {status}"
        message = f"{phrase} ({what})" if what else phrase
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else HttpStatusError
    return cls(message, status=status, retry_after=parse_retry_after(headers))


def error_for_transport(exc: httpx.TransportError, *, what: str = "") -> Unreachable:
    detail = str(exc) or "no detail"
    prefix = f"{what}: " if what else ""
    return Unreachable(f"{prefix}{type(exc).__name__}: {detail}",
                       request_sent=not isinstance(exc, _NOT_SENT))
