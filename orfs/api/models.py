"""The one record every response shape is normalised into."""

from __future__ import annotations

import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file in the workspace, as the API describes it.

    ``filename`` is the raw name the service stores (it may contain ``/``, NUL,
    anything). ``mime_type`` is ``""`` when the shape does not carry one (openai);
    ``downloadable`` is False when the shape does not say.
    """

    id: str
    filename: str
    size: int
    mime_type: str
    created_at: datetime
    downloadable: bool
