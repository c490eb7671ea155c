"""The one retry policy of the API client.

What is retried
    Reads and deletes (list, retrieve, download, delete) are idempotent: they are
    retried on 429, 500, 502, 503, 504 and on every transport error (connect
    failure, timeout, dropped connection). 500 is included because a 500 on an
    idempotent request costs nothing to repeat, and the emulator's ``--fail-rate``
    answers 500 before doing anything (delete repeated after an applied delete gets
    404, which the filesystem already counts as done).

    Uploads (POST /files) create a new file each time they are applied, and
    filenames are not unique, so a repeated upload that had in fact been applied
    leaves a duplicate. They are retried only where the request cannot have been
    applied: 429 (rate limited before handling), 503 (service unavailable) and
    transport errors that happened before the request went out (connect error,
    connect timeout, pool timeout: ``Unreachable.request_sent`` is False).
    A 500, 502 or 504, or a connection dropped after the request was sent, is
    raised to the caller: the file may or may not exist. `upload_may_have_applied`
    tells the caller (the filesystem) when to look before uploading again; that
    check (list, compare name and size) belongs to the filesystem, not here.

How long
    Exponential backoff with full jitter: before retry n (0-based) sleep a uniform
    random time in [0, min(max_delay, initial * factor**n)]. A ``retry-after-ms`` or
    ``Retry-After`` header (seconds or an HTTP date; ms preferred) is the minimum
    sleep. Retrying stops after ``max_attempts`` attempts or when the next sleep
    would end beyond ``total`` seconds after the first attempt started, and the
    last error is raised. With the defaults (20 s) an operation against a dead API
    fails within about 30 s (plus at most one connect timeout), which the
    filesystem turns into EIO. The mount gives lists, retrieves, deletes and
    download opens `INTERACTIVE_RETRY` (10 s of retries, and a 20 s ``deadline``
    on the whole operation, attempts included); uploads keep the default.

Each retry is logged on ``orfs.api``: DEBUG for the first two, INFO for the next
two, WARNING after that. Log lines carry method, path, status, attempt and delay,
never headers.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import trio

from orfs.api.errors import ApiError, HttpStatusError, ProtocolError, Unreachable

__all__ = ["IDEMPOTENT_RETRY_STATUSES", "INTERACTIVE_RETRY", "UPLOAD_RETRY_STATUSES",
           "RetryPolicy", "RetryState", "is_retryable", "parse_retry_after", "policies",
           "upload_may_have_applied", "is_transient", "later_delay"]

log = logging.getLogger(__name__)

T = TypeVar("T")

IDEMPOTENT_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
UPLOAD_RETRY_STATUSES = frozenset({429, 503})


def is_retryable(exc: ApiError, *, idempotent: bool) -> bool:
    """Whether a failed attempt may be repeated (see the module docstring)."""
    if isinstance(exc, Unreachable):
        return idempotent or not exc.request_sent
    if isinstance(exc, HttpStatusError):
        return exc.status in (IDEMPOTENT_RETRY_STATUSES if idempotent else UPLOAD_RETRY_STATUSES)
    return False


def upload_may_have_applied(exc: ApiError) -> bool:
    """Whether an upload that raised `exc` may nonetheless have created the file.

    True for a 5xx other than 503, a transport error after the request was sent,
    and a success answer the client could not read (ProtocolError). The caller
    should list before uploading again, to avoid a duplicate.
    """
    if isinstance(exc, Unreachable):
        return exc.request_sent
    if isinstance(exc, HttpStatusError):
        return exc.status >= 500 and exc.status != 503
    return isinstance(exc, ProtocolError)


def is_transient(exc: ApiError) -> bool:
    """Whether a request that failed with `exc` (after its retries) may succeed later
    unchanged: the API or the network was down or overloaded (429, 5xx, a connection
    error, an unreadable answer), not a refusal of this request (other 4xx)."""
    if isinstance(exc, (Unreachable, ProtocolError)):
        return True
    if isinstance(exc, HttpStatusError):
        return exc.status == 429 or exc.status >= 500
    return False


# A background upload (--uploads async) that failed in a transient way, after the
# policy's own retries, is tried again while the mount is up: after 5 s, then 10, 20,
# ... at most 5 min apart, for as long as the mount runs (the status shows the next
# try). Each try is a whole upload under the policy above and the landed check.
LATER_FIRST = 5.0
LATER_MAX = 300.0


def later_delay(failures: int) -> float:
    """Seconds before the next background try after `failures` (>= 1) in a row: the
    ceiling doubles from LATER_FIRST up to LATER_MAX, jittered in its upper half so
    that files which failed together do not all come back in the same instant."""
    ceiling = min(LATER_MAX, LATER_FIRST * 2.0 ** max(0, failures - 1))
    return ceiling * (0.5 + random.random() / 2)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds asked for by ``retry-after-ms`` (preferred) or ``Retry-After``, or None.

    `headers` should look names up case-insensitively (httpx.Headers does).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and value == value:  # not NaN
            return value
    ra = headers.get("retry-after")
    if ra is None or not ra.strip():
        return None
    try:
        value = float(ra)
        return value if value >= 0 and value == value else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    initial: float = 0.5      # ceiling of the first sleep
    factor: float = 2.0
    max_delay: float = 8.0    # cap of one backoff sleep (Retry-After may ask for more)
    total: float = 20.0       # no sleep may end later than this after the first attempt
    max_attempts: int = 10
    # Seams for tests: a fake sleep that advances a fake clock.
    sleep: Callable[[float], Awaitable[None]] = trio.sleep
    clock: Callable[[], float] = time.monotonic
    random: Callable[[], float] = random.random
    # A hard limit on the whole operation, attempts included (None: none). A server that
    # accepts connections and then says nothing would otherwise hold every attempt for
    # the client's read timeout; with a deadline the caller gets `Unreachable` in time.
    deadline: float | None = None

    def backoff(self, retry_number: int) -> float:
        """Full-jitter backoff before retry `retry_number` (0 for the first retry)."""
        ceiling = min(self.max_delay, self.initial * self.factor ** retry_number)
        return self.random() * ceiling

    def start(self, what: str, *, idempotent: bool,
              on_retry: Callable[[], None] | None = None) -> RetryState:
        return RetryState(self, what, idempotent=idempotent, on_retry=on_retry)

    async def run(self, attempt: Callable[[], Awaitable[T]], what: str, *, idempotent: bool,
                  on_retry: Callable[[], None] | None = None) -> T:
        """Call `attempt` until it succeeds, or raise the error that ends the retrying."""
        state = self.start(what, idempotent=idempotent, on_retry=on_retry)
        if self.deadline is None:
            while True:
                try:
                    return await attempt()
                except ApiError as exc:
                    await state.backoff_or_raise(exc)
        with trio.move_on_after(self.deadline):
            while True:
                try:
                    return await attempt()
                except ApiError as exc:
                    await state.backoff_or_raise(exc)
        log.warning("%s: no answer within %.0f s (%d attempts); giving up",
                    what, self.deadline, state.attempts + 1)
        raise Unreachable(f"{what}: no answer within {self.deadline:.0f} s")


# Reads, listings and deletes answer a person waiting at a prompt (`ls`, `cat`, `rm`):
# give up sooner than an upload would. Worst case: 10 s of retries, and 20 s in all
# even when every attempt hangs until its timeout (see docs/RELIABILITY.md).
INTERACTIVE_RETRY = RetryPolicy(total=10.0, deadline=20.0)


def policies(budget: float) -> tuple[RetryPolicy, RetryPolicy]:
    """(uploads, interactive) for a retry budget; 20 s gives the defaults above."""
    return (RetryPolicy(total=budget),
            dataclasses.replace(INTERACTIVE_RETRY, total=budget / 2, deadline=budget))


class RetryState:
    """The retry budget of one operation (a download resumed after progress starts anew)."""

    def __init__(self, policy: RetryPolicy, what: str, *, idempotent: bool,
                 on_retry: Callable[[], None] | None = None) -> None:
        self.policy = policy
        self.what = what  # "METHOD /path", never headers
        self.idempotent = idempotent
        self.on_retry = on_retry
        self.started = policy.clock()
        self.attempts = 0

    async def backoff_or_raise(self, exc: ApiError) -> None:
        """After a failed attempt: sleep before the next one, or raise `exc`."""
        self.attempts += 1
        policy = self.policy
        if not is_retryable(exc, idempotent=self.idempotent):
            raise exc
        if self.attempts >= policy.max_attempts:
            log.warning("%s: giving up after %d attempts: %s", self.what, self.attempts, exc)
            raise exc
        delay = policy.backoff(self.attempts - 1)
        retry_after = exc.retry_after if isinstance(exc, HttpStatusError) else None
        if retry_after is not None:
            delay = max(delay, retry_after)
        elapsed = policy.clock() - self.started
        if elapsed + delay > policy.total:
            log.warning("%s: giving up after %d attempts in %.1f s: %s",
                        self.what, self.attempts, elapsed, exc)
            raise exc
        level = (logging.DEBUG if self.attempts <= 2
                 else logging.INFO if self.attempts <= 4 else logging.WARNING)
        status = exc.status if isinstance(exc, HttpStatusError) else type(exc).__name__
        log.log(level, "%s: %s (attempt %d), retrying in %.2f s: %s",
                self.what, status, self.attempts, delay, exc.message)
        if self.on_retry is not None:
            self.on_retry()
        await policy.sleep(delay)
