"""Real mounts of the emulator: ``python -m orfs.fuse MOUNTPOINT -f`` in a subprocess
(`tests.mounting.Mount`).

If FUSE is unusable (no /dev/fuse or no fusermount3) these tests fail when CI=true and
are skipped otherwise. Teardown always unmounts (``fusermount3 -u``, then ``-u -z`` if
busy) and stops the child by PID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import EmulatorProcess, new_workspace
from tests.mounting import Mount, fuse_missing_reason, in_ci, mounted

__all__ = ["FUSE_OK", "Mount"]  # what the FUSE tests import from here

_missing = fuse_missing_reason()
FUSE_OK = _missing is None
if _missing is not None:
    if in_ci():
        pytest.fail(f"FUSE is not usable here ({_missing}) and CI=true", pytrace=False)
    pytest.skip(f"FUSE is not usable here ({_missing})", allow_module_level=True)


@pytest.fixture
def mount_factory(emulator_session: EmulatorProcess, tmp_path: Path
                  ) -> Iterator[Callable[..., Mount]]:
    """``mount_factory(*extra_args, workspace=None, emu=None)``: a fresh mount (of the
    session emulator unless ``emu`` is given)."""
    mounts: list[Mount] = []

    def make(*extra_args: str, workspace: str | None = None,
             emu: EmulatorProcess | None = None) -> Mount:
        m = Mount(emu or emulator_session, tmp_path / f"m{len(mounts)}",
                  workspace=workspace or new_workspace(), extra_args=extra_args)
        mounts.append(m)
        return m.start()

    try:
        yield make
    finally:
        failures: list[str] = []
        for m in mounts:
            try:
                m.stop()
            except AssertionError as e:  # stop the rest first, then fail
                failures.append(f"{m.path}: {e}")
        if failures:
            raise AssertionError("\n".join(failures))


@pytest.fixture(scope="module")
def shared_mount(emulator_session: EmulatorProcess,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount of a fresh workspace shared by a module's tests (they must not assume
    an empty root: each uses its own names)."""
    with mounted(emulator_session, tmp_path_factory.mktemp("shared-mount")) as m:
        yield m


@pytest.fixture
def mnt(shared_mount: Mount) -> Mount:
    shared_mount.emu.reset_stats()
    return shared_mount
