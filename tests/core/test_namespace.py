"""orfs.core.namespace: the names after changes made through the mount, worked out one
folder at a time, are the names worked out from scratch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orfs.api.models import RemoteFile
from orfs.core.namespace import Namespace

T0 = datetime(2024, 5, 1, tzinfo=UTC)
NAMES = ["a.csv", "r/x.csv", "r/s/y.csv", "r/x [or_file_1].csv", "new/z.csv", "r",
         "top.txt", "r/s"]
LOCAL = [("a.csv",), ("r", "x.csv"), ("r", "s", "y.csv"), ("new", "z.csv"), ("r", "q.txt"),
         ("r",)]


def record(n: int, name: str, age: int) -> RemoteFile:
    return RemoteFile(id=f"or_file_{n}", filename=name, size=1, mime_type="text/csv",
                      created_at=T0 + timedelta(seconds=age), downloadable=True)


class Listing:
    def __init__(self, files: list[RemoteFile]) -> None:
        self.files = files

    async def list_all(self, add: Callable[[list[RemoteFile]], object],
                       limit: int = 1000) -> None:
        add(list(self.files))

    async def retrieve(self, file_id: str) -> RemoteFile:
        raise AssertionError("no retrieve")

    async def probe(self) -> None:
        pass


ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(NAMES), st.integers(0, 3)),
    st.tuples(st.just("remove"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("local"), st.integers(0, len(LOCAL) - 1), st.integers(1, 2)),
    st.tuples(st.just("unlocal"), st.integers(0, len(LOCAL) - 1), st.integers(1, 2)),
    st.tuples(st.just("look"), st.just(0), st.just(0)),
), max_size=30)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 3)), max_size=8), ops)
# A local file over a remote one of its name, gone again: the remote one shows again.
@example([("a.csv", 0)], [("local", 0, 1), ("unlocal", 0, 1)])
# An upload into a folder, then its duplicate, then the older one deleted.
@example([("r/x.csv", 1)], [("insert", "r/x.csv", 0), ("look", 0, 0), ("remove", 0, 0)])
def test_names_after_changes_are_the_names_from_scratch(
        listed: list[tuple[str, int]], steps: list[tuple[str, object, int]]) -> None:
    files = [record(i, name, age) for i, (name, age) in enumerate(listed)]

    async def main() -> None:
        # `step` changes one folder's names in place; `scratch` works them all out
        # again after every change.
        step = Namespace(Listing(files), ttl=1e9)
        scratch = Namespace(Listing(files), ttl=1e9)
        await step.ensure_fresh()
        await scratch.ensure_fresh()
        step.tree()
        n = len(files)
        for op, arg, val in steps:
            for ns in (step, scratch):
                if op == "insert":
                    ns.insert(record(n, str(arg), val))
                elif op == "remove":
                    ns.remove(f"or_file_{arg}")
                elif op == "local":
                    ns.add_local_file(LOCAL[int(str(arg))], val)
                elif op == "unlocal":
                    ns.remove_local_file(LOCAL[int(str(arg))], val)
            n += op == "insert"
            scratch._dirty()
            if op == "look":
                assert step.tree() == scratch.tree()
                assert step.layout() == scratch.layout()
        assert step.tree() == scratch.tree()
        assert step.layout() == scratch.layout()

    trio.run(main)
