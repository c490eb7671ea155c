"""Did an upload land anyway? Exactly-once uploads over an API without idempotency keys.

``POST /files`` creates a new file each time it is applied, and filenames are not
unique, so an upload that failed after its request went out (a 500, a dropped
connection, a timeout, an answer that could not be read: `upload_may_have_applied`)
may or may not have created the file. Sending it again blindly risks a duplicate;
giving up risks reporting a failure for a file that exists. So before sending again,
the filesystem looks at the listing for the file the failed attempt would have made
(`find_landed`), and adopts it when it is there.

What counts as "the file that attempt made": a file with exactly the uploaded
filename and size, created no earlier than the attempt started (minus `CLOCK_SKEW`
for the distance between our clock and the server's), and not one we already knew:
not listed before the attempt, not the file being replaced, not the result of another
upload of this mount. When several match (only possible if an earlier attempt landed
too, or someone else uploaded the same name and size in the same seconds), the oldest
is taken and the rest are reported in the log, never deleted: they may not be ours.

The same check runs first when a mount resumes an upload that a previous mount had
started (journal state ``uploading``): the process may have died after the server
stored the file but before the journal heard of it.

The check errs towards a duplicate, never towards a loss: a file is adopted only when
it matches name, size and time; if the listing cannot be read, nothing is sent again
and the upload fails with its first error (the bytes stay local, journaled).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Collection
from typing import Protocol

from orfs.api.models import RemoteFile

log = logging.getLogger(__name__)

# Seconds the server's clock may be behind ours without an upload that landed being
# missed (a miss costs a duplicate; a wider window risks adopting another's file).
CLOCK_SKEW = 2.0
# Rounds of (upload, check) for one flush, and the time after which no new round starts.
# Each round's upload has the client's own retries (429/503/connect: 20 s) inside it.
MAX_ROUNDS = 4
ROUNDS_TIME = 60.0


class Lister(Protocol):
    def list_pages(self, limit: int = 1000) -> AsyncIterator[list[RemoteFile]]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One upload of one file's bytes, possibly over several rounds."""

    filename: str
    size: int
    since: float                         # wall time the first request started
    known: frozenset[str] = frozenset()  # ids of that name and size known before it


async def find_landed(client: Lister, attempt: Attempt,
                      exclude: Collection[str] = ()) -> RemoteFile | None:
    """The file `attempt` created, if the listing shows one (see the module doc).
    Raises the client's error if the listing cannot be read."""
    found: list[RemoteFile] = []
    floor = attempt.since - CLOCK_SKEW
    async for page in client.list_pages(limit=1000):
        for f in page:
            if (f.filename == attempt.filename and f.size == attempt.size
                    and f.id not in attempt.known and f.id not in exclude
                    and f.created_at.timestamp() >= floor):
                found.append(f)
    if not found:
        return None
    found.sort(key=lambda f: (f.created_at, f.id))
    if len(found) > 1:
        log.warning("%d files named %r of %d bytes appeared since its upload began: taking "
                    "the oldest (%s); left alone: %s", len(found), attempt.filename,
                    attempt.size, found[0].id, ", ".join(f.id for f in found[1:]))
    return found[0]
