"""``openrouter://``: an OpenRouter Files workspace for fsspec and the Python data tools
on it (pandas, pyarrow, Dask, xarray), with the mount's names (docs/FSSPEC.md).

Needs the ``fsspec`` extra (``pip install 'orfs[fsspec]'``). Installing orfs registers
the protocol (the ``fsspec.specs`` entry point), so ``fsspec.filesystem("openrouter")``
and ``pandas.read_csv("openrouter://reports/q3.csv")`` work without importing this.

Private modules, re-exported here: _filesystem (`OpenRouterFileSystem`), _file
(`OpenRouterFile` and its read-ahead cache, `GrowingReadAhead`), _errors (API errors
-> builtin exceptions).
"""

from orfs.fsspec._file import GrowingReadAhead, OpenRouterFile
from orfs.fsspec._filesystem import OpenRouterFileSystem

__all__ = ["GrowingReadAhead", "OpenRouterFile", "OpenRouterFileSystem"]
