"""The emulator app of the core tests (``tests.core.harness``), for every module here."""

from __future__ import annotations

from tests.core.harness import app

__all__ = ["app"]
