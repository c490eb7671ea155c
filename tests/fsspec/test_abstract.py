"""fsspec's own abstract test suite (fsspec.tests.abstract) on openrouter://: copy, get,
put, open and pipe, against the emulator.

The suite builds its remote trees with ``touch``; here the files of the remote trees are
made as outputs of the service (downloadable, with their name as content), so that
``cp`` and ``get`` really download and upload rather than copy local empty files. The
trees it builds on the local side and with ``touch`` in a test body stay as the suite
has them (empty files, which stay local to the instance, as in the mount).
"""

from __future__ import annotations

from typing import Any

import pytest
from fsspec.tests.abstract import AbstractFixtures
from fsspec.tests.abstract.copy import AbstractCopyTests
from fsspec.tests.abstract.get import AbstractGetTests
from fsspec.tests.abstract.open import AbstractOpenTests
from fsspec.tests.abstract.pipe import AbstractPipeTests
from fsspec.tests.abstract.put import AbstractPutTests

from orfs.fsspec import OpenRouterFileSystem
from orfs.testing.processes import EmulatorProcess


class OpenRouterFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, emu: EmulatorProcess, workspace: str) -> OpenRouterFileSystem:
        self.emu, self.workspace = emu, workspace
        self.our_fs = OpenRouterFileSystem(api_key=emu.api_key, api_base=emu.url,
                                           workspace=workspace, skip_instance_cache=True)
        return self.our_fs

    @pytest.fixture
    def fs_path(self) -> str:
        return "root"

    @pytest.fixture
    def fs_join(self) -> Any:
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        # mkdir is remembered by the instance (as in the mount) until it is removed, and
        # the folders of files stay while a file is in them; the service itself stores
        # only names, so another process sees a folder once a file is in it.
        return True

    def _outputs(self, some_fs: Any, paths: list[str]) -> None:
        self.emu.create_outputs([(p, p.encode()) for p in paths], workspace_id=self.workspace)
        some_fs.invalidate_cache()

    def _bulk_operations_scenario_0(self, some_fs: Any, some_join: Any, some_path: Any) -> Any:
        if some_fs is not getattr(self, "our_fs", None):
            return super()._bulk_operations_scenario_0(some_fs, some_join, some_path)
        source = some_join(some_path, "source")
        self._outputs(some_fs, [some_join(source, p) for p in (
            "file1", "file2", "subdir/subfile1", "subdir/subfile2",
            "subdir/nesteddir/nestedfile")])
        return source

    def _glob_edge_cases_files(self, some_fs: Any, some_join: Any, some_path: Any) -> Any:
        if some_fs is not getattr(self, "our_fs", None):
            return super()._glob_edge_cases_files(some_fs, some_join, some_path)
        source = some_join(some_path, "source")
        paths = ["file1", "file2"]
        for i in range(2):
            paths += [f"subdir{i}/subfile1", f"subdir{i}/subfile2",
                      f"subdir{i}/nesteddir/nestedfile"]
        self._outputs(some_fs, [some_join(source, p) for p in paths])
        return source

    def _dir_and_file_with_same_name_prefix(self, some_fs: Any, some_join: Any,
                                            some_path: Any) -> Any:
        if some_fs is not getattr(self, "our_fs", None):
            return super()._dir_and_file_with_same_name_prefix(some_fs, some_join, some_path)
        source = some_join(some_path, "source")
        self._outputs(some_fs, [some_join(source, "subdir.txt"),
                                some_join(source, "subdir", "subfile.txt")])
        return source


class TestCopy(OpenRouterFixtures, AbstractCopyTests):  # type: ignore[misc]
    pass


class TestGet(OpenRouterFixtures, AbstractGetTests):  # type: ignore[misc]
    pass


class TestPut(OpenRouterFixtures, AbstractPutTests):  # type: ignore[misc]
    pass


class TestOpen(OpenRouterFixtures, AbstractOpenTests):  # type: ignore[misc]
    pass


class TestPipe(OpenRouterFixtures, AbstractPipeTests):  # type: ignore[misc]
    pass
