"""The client's typed error tree.

    ApiError
     ├── HttpStatusError          (the server answered with an error status)
     │    ├── BadRequest          400 (message = the server's)
     │    ├── Unauthorized        401
     │    ├── Forbidden           403 (quota full, regional endpoint)
     │    ├── NotFound            404
     │    ├── PayloadTooLarge     413
     │    ├── RateLimited         429 (retry_after seconds or None)
     │    └── ServerError         5xx (retry_after seconds or None)
     ├── Unreachable              connect error, timeout, connection dropped
     └── ProtocolError            a response that breaks the contract (bad JSON,
                                  missing fields, truncated body)

No exception text, repr or log line ever contains the API key: errors are
built from status, the server's message and the request's method and path only.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error the client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HttpStatusError(ApiError):
    status: int = 0

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class BadRequest(HttpStatusError):
    status = 400


class Unauthorized(HttpStatusError):
    status = 401


class Forbidden(HttpStatusError):
    status = 403


class NotFound(HttpStatusError):
    status = 404


class PayloadTooLarge(HttpStatusError):
    status = 413


class RateLimited(HttpStatusError):
    status = 429


class ServerError(HttpStatusError):
    status = 500


class Unreachable(ApiError):
    """The API could not be reached (or stopped answering) within the time allowed.

    ``request_sent`` is False when the request cannot have reached the server
    (connect error or timeout, no free connection): only then is an upload safe
    to repeat.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ProtocolError(ApiError):
    """The API answered something that breaks the wire contract."""
