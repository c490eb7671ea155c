"""Shared fixtures: a real emulator of the Files API in a subprocess.

``EmulatorProcess`` (orfs.testing.processes, shared with scripts/) runs ``python -m
orfs.emulator`` on 127.0.0.1 with port 0, reads the URL it prints, and is always
stopped by PID. Fixtures:

- ``emulator``: a fresh emulator for one test (its own data directory);
- ``emulator_session``: one emulator shared by the whole session (tests using it
  must not assume an empty workspace: use a fresh ``workspace_id``
  (``str(uuid.uuid4())``) for isolation, and ``reset_stats()`` before counting);
- ``emulator_factory``: ``emulator_factory("--latency-ms", "50", data_dir=...)``
  starts one with extra flags (fault injection and the like); all are stopped at
  teardown.

The emulator gets its key with ``--api-key`` (``TEST_API_KEY``); the child's
environment has no ``OPENROUTER_API_KEY``, so a real key can never reach it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orfs.testing.processes import TEST_API_KEY, EmulatorProcess

__all__ = ["TEST_API_KEY", "EmulatorProcess", "new_workspace"]


def new_workspace() -> str:
    """A fresh workspace id, for isolation on a shared emulator."""
    return str(uuid.uuid4())


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path / "emulator")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator-session") / "data")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def make(*extra_args: str, data_dir: Path | None = None,
             api_key: str = TEST_API_KEY) -> EmulatorProcess:
        emu = EmulatorProcess(data_dir or tmp_path / f"emulator-{len(started)}",
                              api_key=api_key, extra_args=extra_args)
        started.append(emu)
        return emu.start()

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
