"""The OpenRouter Files API client: `FilesClient`, its records and errors.

Private modules, re-exported here: client (requests), shapes (JSON → RemoteFile),
classify (status/transport → errors), retry (the one retry policy), upload
(streamed multipart bodies), credentials (where the key comes from).
"""

from orfs.api.client import Download, FilesClient
from orfs.api.credentials import ApiKey, ApiKeyError, read_api_key
from orfs.api.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    HttpStatusError,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
)
from orfs.api.models import RemoteFile
from orfs.api.retry import RetryPolicy, is_retryable, upload_may_have_applied
from orfs.api.upload import UploadBody, UploadSizeMismatch

__all__ = [
    "ApiError", "ApiKey", "ApiKeyError", "BadRequest", "Download", "FilesClient", "Forbidden",
    "HttpStatusError", "NotFound", "PayloadTooLarge", "ProtocolError", "RateLimited",
    "RemoteFile", "RetryPolicy", "ServerError", "Unauthorized", "Unreachable", "UploadBody",
    "UploadSizeMismatch", "is_retryable", "read_api_key", "upload_may_have_applied",
]
