"""openrouter:// against a real emulator over HTTP on loopback.

Fixtures:
- ``fs``: an `OpenRouterFileSystem` on a fresh workspace of the session's emulator
  (``emulator_session``), outside fsspec's instance cache; ``fs.workspace`` is its id;
- ``emu``: that emulator (its ``stats()`` and ``transfer_stats()`` count what the
  filesystem asked for and what the server sent: reset them before counting);
- ``make_fs(**options)``: another instance on the same workspace (a second process's
  view, or other options).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orfs.fsspec import OpenRouterFileSystem
from orfs.testing.processes import EmulatorProcess
from tests.conftest import new_workspace

MakeFs = Callable[..., OpenRouterFileSystem]


@pytest.fixture
def emu(emulator_session: EmulatorProcess) -> EmulatorProcess:
    return emulator_session


@pytest.fixture
def workspace() -> str:
    return new_workspace()


@pytest.fixture
def make_fs(emu: EmulatorProcess, workspace: str) -> Iterator[MakeFs]:
    made: list[OpenRouterFileSystem] = []

    def make(**options: Any) -> OpenRouterFileSystem:
        options.setdefault("api_key", emu.api_key)
        options.setdefault("api_base", emu.url)
        options.setdefault("workspace", workspace)
        fs = OpenRouterFileSystem(skip_instance_cache=True, **options)
        made.append(fs)
        return fs

    yield make
    made.clear()


@pytest.fixture
def fs(make_fs: MakeFs) -> OpenRouterFileSystem:
    return make_fs()


def blob(emu: EmulatorProcess, file_id: str) -> bytes:
    """The bytes the emulator stored for a file (uploads cannot be downloaded)."""
    return (Path(emu.data_dir) / "blobs" / file_id).read_bytes()
