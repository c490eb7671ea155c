"""orfs.core.names: raw remote filenames -> display names (docs/SEMANTICS.md, "Namespace")."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orfs.api.models import RemoteFile
from orfs.core.names import (
    ID_MAX,
    NAME_MAX,
    DisplayPath,
    Layout,
    LayoutBuilder,
    display_path,
    encode_component,
    layout,
    parent_of,
    raw_filename,
    relayout,
    split_ext,
    split_raw,
    with_id,
)

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def rf(file_id: str, filename: str, age: int = 0) -> RemoteFile:
    """A record created ``age`` seconds after T0 (bigger = newer)."""
    return RemoteFile(
        id=file_id,
        filename=filename,
        size=1,
        mime_type="text/plain",
        created_at=T0 + timedelta(seconds=age),
        downloadable=True,
    )


def names(files: Iterable[RemoteFile], extra: Iterable[DisplayPath] = ()) -> dict[str, str]:
    """file id -> display path joined with '/' (display components never hold '/')."""
    return {fid: "/".join(path) for fid, path in layout(files, extra).files.items()}


def assert_legal(component: str) -> None:
    assert component not in ("", ".", "..")
    assert "/" not in component
    assert "\0" not in component
    data = component.encode("utf-8")  # raises on a lone surrogate
    assert len(data) <= NAME_MAX


def assert_consistent(lay: Layout, listing: Sequence[RemoteFile]) -> None:
    """Every invariant a Layout promises, whatever the listing."""
    ids = {r.id for r in listing}
    assert set(lay.files) == ids
    assert set(lay.records) == ids
    for fid, record in lay.records.items():
        # The raw name stays reachable: the record is one the listing gave for that id.
        assert record in [r for r in listing if r.id == fid]
    # A bijection: unique paths, by_path is the inverse of files.
    assert len(set(lay.files.values())) == len(lay.files)
    assert {path: fid for fid, path in lay.files.items()} == dict(lay.by_path)
    assert not set(lay.by_path) & lay.folders
    assert () not in lay.folders
    for path in [*lay.files.values(), *lay.folders]:
        assert path
        for component in path:
            assert_legal(component)
        assert lay.is_folder(path[:-1])
        assert path[-1] in lay.listdir(path[:-1])
    # children lists exactly the files and folders, sorted, without repeats.
    listed = {(*folder, name) for folder, kids in lay.children.items() for name in kids}
    assert listed == set(lay.by_path) | lay.folders
    for folder, kids in lay.children.items():
        assert lay.is_folder(folder)
        assert list(kids) == sorted(set(kids))


# --- encode_component -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("", "\u2205"),
        (".", "\uff0e"),
        ("..", "\uff0e\uff0e"),
        ("...", "..."),
        ("a\0b", "a\u2400b"),
        ("\0", "\u2400"),
        ("a/b", "a\uff0fb"),
        ("\ud800x\udfff", "\ufffdx\ufffd"),
        ("report.csv", "report.csv"),
        ("emoji 😀🎉.png", "emoji 😀🎉.png"),
        (".bashrc", ".bashrc"),
        ("sp ace\nnewline", "sp ace\nnewline"),
    ],
)
def test_encode_component_maps_illegal_names(raw: str, shown: str) -> None:
    assert encode_component(raw) == shown
    assert_legal(encode_component(raw))


def test_encode_component_returns_legal_names_unchanged() -> None:
    name = "a legal name.txt"
    assert encode_component(name) is name


def test_long_component_keeps_extension() -> None:
    raw = "a" * 300 + ".csv"
    shown = encode_component(raw)
    assert len(shown.encode()) == NAME_MAX
    assert shown.endswith("\u2026.csv")
    assert shown.startswith("a" * 200)


def test_long_component_without_extension() -> None:
    shown = encode_component("b" * 300)
    assert len(shown.encode()) == NAME_MAX
    assert shown == "b" * (NAME_MAX - 3) + "\u2026"


def test_long_dotfile_has_no_extension() -> None:
    shown = encode_component("." + "c" * 300)
    assert shown.startswith(".ccc") and shown.endswith("c\u2026")


def test_long_extension_is_not_kept() -> None:
    shown = encode_component("x." + "e" * 300)
    assert shown.endswith("e\u2026")
    assert len(shown.encode()) == NAME_MAX


def test_exactly_name_max_bytes_is_kept() -> None:
    raw = "é" * 127 + "x"  # 255 bytes
    assert encode_component(raw) == raw


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_cut_never_splits_a_code_point(width: int, shift: int) -> None:
    char = {2: "é", 3: "€", 4: "😀"}[width]
    raw = "a" * shift + char * 130 + ".txt"
    shown = encode_component(raw)
    data = shown.encode()  # valid UTF-8 or this raises
    assert len(data) <= NAME_MAX
    assert len(data) > NAME_MAX - width  # cut as late as possible
    assert shown.endswith("\u2026.txt")
    assert shown.startswith("a" * shift + char)


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=300))
def test_encode_component_is_legal_and_idempotent(raw: str) -> None:
    shown = encode_component(raw)
    assert_legal(shown)
    assert encode_component(shown) == shown


# --- split_raw, raw_filename, split_ext -------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "parts"),
    [
        ("a", ("a",)),
        ("", ("",)),
        ("a//b", ("a", "", "b")),
        ("/x", ("", "x")),
        ("x/", ("x", "")),
        ("/", ("", "")),
        ("reports/q3/summary.csv", ("reports", "q3", "summary.csv")),
    ],
)
def test_split_raw(filename: str, parts: tuple[str, ...]) -> None:
    assert split_raw(filename) == parts


@given(st.text(alphabet=st.sampled_from("/a.\0é")))
def test_split_raw_round_trips(filename: str) -> None:
    assert "/".join(split_raw(filename)) == filename


def test_raw_filename_joins_display_components_as_typed() -> None:
    assert raw_filename((), "a.txt") == "a.txt"
    assert raw_filename(("reports", "q3"), "summary.csv") == "reports/q3/summary.csv"
    assert raw_filename(("x",), "a\u2400b [or_file_1].txt") == "x/a\u2400b [or_file_1].txt"


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("report.csv", ("report", ".csv")),
        ("archive.tar.gz", ("archive.tar", ".gz")),
        (".bashrc", (".bashrc", "")),
        ("..x", ("..x", "")),
        (".a.b", (".a", ".b")),
        ("report.", ("report.", "")),
        ("report", ("report", "")),
        ("notes 3.5 final", ("notes 3.5 final", "")),
        ("x." + "e" * 40, ("x." + "e" * 40, "")),
        ("\uff0e", ("\uff0e", "")),
    ],
)
def test_split_ext(name: str, parts: tuple[str, str]) -> None:
    assert split_ext(name) == parts


# --- with_id ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("report.csv", "report [or_file_X].csv"),
        ("report", "report [or_file_X]"),
        (".bashrc", ".bashrc [or_file_X]"),
        ("archive.tar.gz", "archive.tar [or_file_X].gz"),
        ("\u2205", "\u2205 [or_file_X]"),
        ("\uff0e", "\uff0e [or_file_X]"),
    ],
)
def test_with_id(name: str, shown: str) -> None:
    assert with_id(name, "or_file_X") == shown


def test_with_id_shortens_the_stem_and_keeps_id_and_extension() -> None:
    shown = with_id(encode_component("😀" * 100 + ".jpeg"), "or_file_X")
    assert len(shown.encode()) <= NAME_MAX
    assert shown.endswith("\u2026 [or_file_X].jpeg")


def test_with_id_of_a_huge_id_stays_legal_and_keeps_the_tail() -> None:
    shown = with_id("a.txt", "i" * 500 + "~2")
    assert_legal(shown)
    assert shown.endswith("i~2].txt")
    assert len(shown.encode()) <= 4 + ID_MAX + 3 + 4


@given(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=300),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=200),
)
def test_with_id_is_always_legal(name: str, file_id: str) -> None:
    assert_legal(with_id(name, file_id))


# --- layout: the rules ------------------------------------------------------------------


def test_slashes_make_folders() -> None:
    lay = layout([rf("f1", "reports/q3/summary.csv"), rf("f2", "top.txt")])
    assert lay.files == {"f1": ("reports", "q3", "summary.csv"), "f2": ("top.txt",)}
    assert lay.folders == {("reports",), ("reports", "q3")}
    assert lay.listdir(()) == ("reports", "top.txt")
    assert lay.listdir(("reports",)) == ("q3",)
    assert lay.lookup(("reports", "q3", "summary.csv")) == "f1"
    assert lay.lookup(("reports",)) is None
    assert lay.is_folder(()) and lay.is_folder(("reports",))
    assert not lay.is_folder(("top.txt",))


def test_empty_listing_has_an_empty_root() -> None:
    lay = layout([])
    assert lay.listdir(()) == () and not lay.folders and not lay.files


def test_empty_and_dot_components() -> None:
    got = names(
        [rf("a", "a//b"), rf("b", "/lead"), rf("c", "trail/"), rf("d", "./.."), rf("e", "")]
    )
    assert got == {
        "a": "a/\u2205/b",
        "b": "\u2205/lead",
        "c": "trail/\u2205",
        "d": "\uff0e/\uff0e\uff0e",
        "e": "\u2205 [e]",  # the folder '∅' made by '/lead' wins
    }


def test_oldest_duplicate_keeps_the_plain_name() -> None:
    got = names([rf("f3", "a.csv", 2), rf("f1", "a.csv", 1), rf("f2", "a.csv", 3)])
    assert got == {"f1": "a.csv", "f2": "a [f2].csv", "f3": "a [f3].csv"}


def test_same_age_duplicates_are_ordered_by_id() -> None:
    got = names([rf("f2", "a.csv"), rf("f1", "a.csv")])
    assert got == {"f1": "a.csv", "f2": "a [f2].csv"}


def test_ages_override_the_creation_time_in_the_duplicate_order() -> None:
    # f9 replaced f1 (a rewrite): it is ordered as f1 was, ahead of the older f2.
    listing = [rf("f2", "a.csv", 2), rf("f9", "a.csv", 9), rf("f3", "a.csv", 3)]
    ages = {"f9": (T0 + timedelta(seconds=1), "f1"), "gone": (T0, "gone")}
    want = {"f9": "a.csv", "f2": "a [f2].csv", "f3": "a [f3].csv"}
    got = {fid: "/".join(p) for fid, p in layout(listing, (), ages).files.items()}
    assert got == want
    builder = LayoutBuilder(ages)  # page by page, a page boundary shifting: the same
    builder.add(listing[:2])
    builder.add(listing[1:])
    assert {fid: "/".join(p) for fid, p in builder.finish().files.items()} == want
    assert names(listing) == {"f2": "a.csv", "f9": "a [f9].csv", "f3": "a [f3].csv"}


def test_encoding_collisions_are_duplicates() -> None:
    got = names([rf("f1", ".", 1), rf("f2", "\uff0e", 0), rf("f3", "a\0", 2), rf("f4", "a\u2400")])
    assert got == {"f1": "\uff0e [f1]", "f2": "\uff0e", "f3": "a\u2400 [f3]", "f4": "a\u2400"}


def test_shortening_collisions_are_duplicates() -> None:
    long1 = "x" * 300 + "1.txt"
    long2 = "x" * 300 + "2.txt"
    lay = layout([rf("f1", long1, 0), rf("f2", long2, 1)])
    plain = encode_component(long1)
    assert plain == encode_component(long2)
    assert lay.files["f1"] == (plain,)
    assert lay.files["f2"] == (with_id(plain, "f2"),)
    assert lay.files["f2"][0].endswith("\u2026 [f2].txt")


def test_folder_wins_over_a_file_of_the_same_name() -> None:
    got = names([rf("old", "d", 0), rf("new", "d/x", 1)])
    assert got == {"old": "d [old]", "new": "d/x"}


def test_folder_wins_even_over_an_encoded_collision() -> None:
    got = names([rf("f1", "\uff0e", 0), rf("f2", "./x", 1)])
    assert got == {"f1": "\uff0e [f1]", "f2": "\uff0e/x"}


def test_local_folders_win_and_are_listed() -> None:
    lay = layout(
        [rf("f1", "new/sub", 0), rf("f2", "empty")], extra_folders=[("new", "sub"), ("e",)]
    )
    assert lay.files == {"f1": ("new", "sub [f1]"), "f2": ("empty",)}
    assert lay.folders == {("new",), ("new", "sub"), ("e",)}
    assert lay.listdir(("new", "sub")) == ()
    assert lay.listdir(()) == ("e", "empty", "new")


def test_extra_folder_implies_its_parents() -> None:
    lay = layout([], extra_folders=[("a", "b", "c")])
    assert lay.folders == {("a",), ("a", "b"), ("a", "b", "c")}


def test_id_form_wins_over_a_plain_name_that_imitates_it() -> None:
    # f1 is the newer 'a.csv', so it is shown as 'a [f1].csv'; the file literally called
    # that steps aside to its own id form.
    got = names([rf("f0", "a.csv", 0), rf("f1", "a.csv", 1), rf("lit", "a [f1].csv", 0)])
    assert got == {"f0": "a.csv", "f1": "a [f1].csv", "lit": "a [f1] [lit].csv"}


def test_id_form_cascade_is_resolved() -> None:
    listing = [
        rf("f0", "a.csv", 0),
        rf("f1", "a.csv", 1),
        rf("g", "a [f1].csv", 0),
        rf("h", "a [f1] [g].csv", 0),
        rf("k", "a [f1] [g] [h].csv", 0),
    ]
    got = names(listing)
    assert got == {
        "f0": "a.csv",
        "f1": "a [f1].csv",
        "g": "a [f1] [g].csv",
        "h": "a [f1] [g] [h].csv",
        "k": "a [f1] [g] [h] [k].csv",
    }
    assert names(reversed(listing)) == got


def test_id_form_that_is_a_folder_takes_the_fallback() -> None:
    # A folder named like f1's id form: folders win, f1 takes 'a [f1~2].csv'.
    got = names([rf("f0", "a.csv", 0), rf("f1", "a.csv", 1), rf("x", "a [f1].csv/in", 0)])
    assert got == {"f0": "a.csv", "f1": "a [f1~2].csv", "x": "a [f1].csv/in"}


def test_file_under_a_folder_path_that_is_a_folder_id_form_is_unique() -> None:
    # The oldest 'd' is demoted by the folder 'd'; its id form is itself a folder, and
    # the fallback name is taken by a literal file: the next k is used.
    listing = [
        rf("f", "d", 0),
        rf("g", "d/x", 0),
        rf("h", "d [f]/y", 0),
        rf("i", "d [f~2]", 0),
    ]
    got = names(listing)
    assert got == {"f": "d [f~3]", "g": "d/x", "h": "d [f]/y", "i": "d [f~2]"}


def test_identical_id_forms_from_odd_ids_stay_unique() -> None:
    # with_id('a [b].csv', 'c') == with_id('a.csv', 'b] [c'): the older keeps it.
    listing = [
        rf("p", "a [b].csv", 0),
        rf("c", "a [b].csv", 1),
        rf("q", "a.csv", 0),
        rf("b] [c", "a.csv", 2),
    ]
    lay = layout(listing)
    assert_consistent(lay, listing)
    assert lay.files["c"] == ("a [b] [c].csv",)
    assert lay.files["b] [c"] == ("a [b] [c~2].csv",)


def test_repeated_id_counts_once_and_picks_deterministically() -> None:
    a = rf("f1", "x.txt", 0)
    b = rf("f1", "y.txt", 0)
    assert layout([a, b, a]) == layout([b, a])
    assert layout([a, b]).files == {"f1": ("x.txt",)}


def test_adding_an_older_duplicate_moves_the_plain_name() -> None:
    before = names([rf("f2", "a.csv", 5)])
    after = names([rf("f2", "a.csv", 5), rf("f1", "a.csv", 1)])
    assert before == {"f2": "a.csv"}
    assert after == {"f1": "a.csv", "f2": "a [f2].csv"}


# --- layout: properties -----------------------------------------------------------------

_ANY_CHAR = st.characters(exclude_categories=())
_NO_BRACKET = st.characters(exclude_categories=(), exclude_characters="]")
_TRICKY = ["", ".", "..", "\0", "\uff0e", "a", "a.csv", "[", "]", " ", "é", "😀", "\ud83d"]


def _components(alphabet: st.SearchStrategy[str], brackets: bool) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([t for t in _TRICKY if brackets or "]" not in t]),
        st.text(alphabet=alphabet, max_size=6),
        # Long ones that collide after shortening, with and without an extension.
        st.builds(
            lambda n, tail, ext: "é" * n + tail + ext,
            st.integers(120, 140),
            st.text(alphabet=alphabet, max_size=3),
            st.sampled_from(["", ".txt", ".😀"]),
        ),
    )


def _filenames(brackets: bool = True) -> st.SearchStrategy[str]:
    alphabet = _ANY_CHAR if brackets else _NO_BRACKET
    return st.lists(_components(alphabet, brackets), min_size=1, max_size=4).map("/".join)


@st.composite
def listings(draw: st.DrawFn, brackets: bool = True) -> list[RemoteFile]:
    """Listings rich in duplicates: names come from a small pool, ages from a few values.

    Without brackets no name can imitate an id form (they all end in ']').
    """
    pool = draw(st.lists(_filenames(brackets), min_size=1, max_size=8))
    n = draw(st.integers(0, 24))
    return [
        rf(f"or_file_{i}", draw(st.sampled_from(pool)), draw(st.integers(0, 3))) for i in range(n)
    ]


@settings(max_examples=400, deadline=None)
@given(listings(), st.lists(st.lists(_components(_ANY_CHAR, True), min_size=1, max_size=3)))
def test_layout_is_always_consistent(listing: list[RemoteFile], extra: list[list[str]]) -> None:
    folders = [tuple(encode_component(c) for c in parts) for parts in extra]
    lay = layout(listing, folders)
    assert_consistent(lay, listing)
    assert set(folders) <= lay.folders


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_layout_ignores_listing_order(data: st.DataObject) -> None:
    listing = data.draw(listings())
    shuffled = data.draw(st.permutations(listing))
    assert layout(shuffled) == layout(listing)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_layout_built_page_by_page_is_the_layout_of_the_whole(data: st.DataObject) -> None:
    # What a listing does: records added as pages arrive, some ids repeated across a
    # shifted page boundary (possibly with other values), local folders at the end.
    listing = data.draw(listings())
    repeats = data.draw(st.lists(st.sampled_from(listing), max_size=3)) if listing else []
    repeats = [rf(r.id, data.draw(st.sampled_from(["x.txt", r.filename])), 0)
               for r in repeats]
    records = data.draw(st.permutations(listing + repeats))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=4)))
    extra = data.draw(st.lists(st.sampled_from([("a",), ("a", "b"), ("x.txt",)]),
                               max_size=2))
    builder = LayoutBuilder()
    for start, end in zip([0, *cuts], [*cuts, len(records)], strict=True):
        builder.add(records[start:end])
    assert builder.finish(extra) == layout(records, extra)


def _model(listing: Sequence[RemoteFile]) -> dict[str, DisplayPath]:
    """The rules 1 and 2 written plainly (exact when no name can imitate an id form)."""
    natural = {r.id: display_path(r.filename) for r in listing}
    folders = {p[:i] for p in natural.values() for i in range(1, len(p))}
    out: dict[str, DisplayPath] = {}
    for r in sorted(listing, key=lambda r: (r.created_at, r.id)):
        path = natural[r.id]
        if path in folders or path in out.values():
            path = (*path[:-1], with_id(path[-1], r.id))
        out[r.id] = path
    return out


@settings(max_examples=400, deadline=None)
@given(listings(brackets=False))
def test_layout_matches_the_plain_model(listing: list[RemoteFile]) -> None:
    assert layout(listing).files == _model(listing)


@settings(max_examples=400, deadline=None)
@given(listings(brackets=False), _filenames(brackets=False), st.integers(-1, 4))
def test_adding_a_file_renames_only_its_group(
    listing: list[RemoteFile], filename: str, age: int
) -> None:
    new = rf("or_file_new", filename, age)
    before = layout(listing).files
    after = layout([*listing, new]).files
    new_path = display_path(filename)
    new_folders = {new_path[:i] for i in range(1, len(new_path))}
    group = [r for r in listing if display_path(r.filename) == new_path]
    holder = min(group, key=lambda r: (r.created_at, r.id), default=None)
    # Only the holder of the plain name can lose it, and only to an older newcomer.
    moved = holder is not None and (new.created_at, new.id) < (holder.created_at, holder.id)
    for record in listing:
        if display_path(record.filename) in new_folders or (moved and record is holder):
            continue
        assert after[record.id] == before[record.id]


def test_layout_of_100k_files_stays_light() -> None:
    # Memory, not time: speed is the benchmark's business, never a timed test.
    listing = _big_listing(100_000)
    lay = layout(listing)
    assert len(lay.files) == 100_000
    tracemalloc.start()
    try:
        layout(listing)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A generous bound: a regression to copies per file trips it.
    assert peak < 200 * 2**20


def _big_listing(n: int) -> list[RemoteFile]:
    """Realistic: 1000 folders two deep, 1 in 50 names a duplicate, some long names."""
    out = []
    for i in range(n):
        # 1000 = 40 * 25, so file i - 1000 lives in the same folder: a duplicate.
        name = f"reports/team{i % 40}/q{i % 25}/file{i - 1000 if i % 50 == 0 else i}.csv"
        if i % 997 == 0:
            name = f"long/{'x' * 300}{i}.txt"
        out.append(rf(f"or_file_{i:08d}", name, i % 1000))
    return out


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_relayout_of_one_change_is_the_layout_of_the_changed_listing(
        data: st.DataObject) -> None:
    # What the namespace does after an upload or a delete through the mount: only the
    # folder of the file is worked out again; the result must be the whole layout.
    listing = data.draw(listings())
    extra = data.draw(st.lists(st.sampled_from([("a",), ("a", "b"), ("x.txt",)]),
                               max_size=2))
    aged = data.draw(st.lists(st.sampled_from(listing), max_size=3)) if listing else []
    # Inherited ages: a time and the id of the file replaced, never the same for two.
    ages = {r.id: (T0 + timedelta(seconds=data.draw(st.integers(-1, 4))), f"{r.id}~old")
            for r in aged}
    before = layout(listing, extra, ages)
    if listing and data.draw(st.booleans()):
        gone = data.draw(st.sampled_from(listing)).id
        changed = [r for r in listing if r.id != gone]
        got = relayout(before, drop=gone, ages=ages)
    else:
        known = [r.filename for r in listing] or ["a.csv"]
        name = data.draw(st.one_of(st.sampled_from(known), _filenames()))
        new = rf("or_file_new", name, data.draw(st.integers(-1, 4)))
        changed = [*listing, new]
        got = relayout(before, add=new, ages=ages)
        folder = parent_of(new)
        if not folder or folder in before.folders:
            assert got is not None  # an add into a folder that exists stays local
    if got is not None:
        after, folder = got
        assert after == layout(changed, extra, ages)
        # Only that folder's names changed.
        assert {k: v for k, v in after.children.items() if k != folder} == {
            k: v for k, v in before.children.items() if k != folder}


def test_relayout_gives_up_where_folders_change() -> None:
    lay = layout([rf("f1", "a/b.txt"), rf("f2", "top.txt")])
    assert relayout(lay, add=rf("f3", "new/c.txt")) is None  # a new folder
    assert relayout(lay, drop="f1") is None  # a/ may go with its last file
    assert relayout(lay, drop="nope") is None
    assert relayout(lay, add=rf("f1", "a/b.txt")) is None  # an id it holds
    assert relayout(lay, drop="f2") is not None
