"""Odd names on a real mount: duplicates and shortened names rewritten with `cp` and `>`,
names with control characters, names that are not UTF-8, and a property test of random
names (any bytes but ``/`` and NUL, 1 to 300 bytes) before and after a refresh and a
remount."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mount.conftest import Mount

pytestmark = pytest.mark.fuse


def _refresh(m: Mount) -> None:
    r = subprocess.run([sys.executable, "-m", "orfs", "refresh", str(m.path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_cp_over_a_duplicate_and_over_a_shortened_name(
        mount_factory: Callable[..., Mount], tmp_path: Path) -> None:
    m = mount_factory()
    first = m.output("report.csv", b"a,first\n")["id"]
    twin = m.output("report.csv", b"b,twin\n")["id"]
    long = "y" * 300 + ".txt"
    m.output(long, b"old\n")
    names = os.listdir(m.path)
    shown_twin = f"report [{twin}].csv"
    (shown_long,) = [n for n in names if n.startswith("yyy")]
    assert shown_twin in names and "report.csv" in names
    src = tmp_path / "new.csv"
    src.write_bytes(b"c,new,longer\n")
    subprocess.run(["cp", str(src), str(m.path / shown_twin)], check=True, timeout=60)
    with open(m.path / shown_long, "wb") as f:  # a shell's `>`
        f.write(b"brand new\n")
    remote = {f["id"]: f for f in m.remote_named("report.csv")}
    assert len(remote) == 2 and first in remote and twin not in remote
    (new_id,) = remote.keys() - {first}
    assert remote[new_id]["size_bytes"] == len(b"c,new,longer\n")
    assert m.remote_named(shown_twin) == [] and m.remote_named(shown_long) == []
    assert [f["size_bytes"] for f in m.remote_named(long)] == [len(b"brand new\n")]
    _refresh(m)
    assert (m.path / "report.csv").read_bytes() == b"a,first\n"   # the twin, untouched
    assert (m.path / f"report [{new_id}].csv").read_bytes() == b"c,new,longer\n"
    assert (m.path / shown_long).read_bytes() == b"brand new\n"   # the same short name


def test_names_with_control_characters_keep_resolving(
        mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory()
    names = ["a\nb.txt", "tab\there.md", "cr\r"]
    for name in names:
        (m.path / name).write_bytes(name.encode() + b"\n")
    for name in names:  # after the upload: the name it was created with
        assert (m.path / name).read_bytes() == name.encode() + b"\n"
    _refresh(m)
    assert sorted(os.listdir(m.path)) == sorted(names)
    m.stop()
    m.start()  # the same cache directory: the created names are kept there
    for name in names:
        assert (m.path / name).read_bytes() == name.encode() + b"\n"
    assert sorted(f["filename"] for f in m.remote_files()) == sorted(
        ["a%0Ab.txt", "tab%09here.md", "cr%0D"])


def test_a_name_that_is_not_utf8_is_einval_to_create_and_enoent_to_look_up(
        mnt: Mount) -> None:
    path = bytes(mnt.path) + b"/caf\xe9.txt"
    for make in (lambda: open(path, "wb"), lambda: os.mkdir(path)):
        with pytest.raises(OSError) as e:
            make()
        assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.stat(path)
    assert e.value.errno == errno.ENOENT
    (mnt.path / "ok.txt").write_bytes(b"x\n")
    with pytest.raises(OSError) as e:
        os.rename(bytes(mnt.path) + b"/ok.txt", path)
    assert e.value.errno == errno.EINVAL
    assert (mnt.path / "ok.txt").read_bytes() == b"x\n"


# ---------------------------------------------------------------- random names, property

# Mostly UTF-8 (any code point, controls included; up to 300 bytes, so over 255 too),
# sometimes arbitrary bytes (usually not UTF-8), sometimes one of a few names on purpose
# (duplicates within a case).
NAME = st.one_of(
    st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
            min_size=1, max_size=100).map(str.encode),
    st.sampled_from([b"dup.txt", b"a\nb", b"%0A", b"x" * 256, b"report [or_file_1].csv"]),
    st.binary(min_size=1, max_size=300),
).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


def _check(root: bytes, want: dict[bytes, bytes]) -> None:
    for name, data in want.items():
        with open(root + b"/" + name, "rb") as f:
            assert f.read() == data, name


def _fresh_dir(base: Path, n: int) -> bytes:
    d = base / f"case{n}"
    d.mkdir()
    return bytes(d)


def test_random_names_read_their_own_bytes(
        mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory()
    made: dict[bytes, bytes] = {}
    counter = [0]

    @settings(max_examples=int(os.environ.get("ORFS_NAME_EXAMPLES", "30")), deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(names=st.lists(NAME, min_size=1, max_size=4), again=st.booleans())
    def case(names: list[bytes], again: bool) -> None:
        counter[0] += 1
        root = _fresh_dir(m.path, counter[0])
        want: dict[bytes, bytes] = {}
        for i, name in enumerate(names):
            path = root + b"/" + name
            data = b"bytes %d of %r\n" % (i, name)
            try:
                name.decode("utf-8")
            except UnicodeDecodeError:
                with pytest.raises(OSError) as e:
                    open(path, "wb")
                assert e.value.errno == errno.EINVAL
                continue
            if len(name) > 255:
                with pytest.raises(OSError) as e:
                    open(path, "wb")
                assert e.value.errno == errno.ENAMETOOLONG
                continue
            with open(path, "wb") as f:  # a duplicate name on purpose: O_TRUNC rewrite
                f.write(data)
            want[name] = data
        _check(root, want)
        if want and again:  # rename one, rewrite another
            old = next(iter(want))
            new = b"renamed-" + old[:200].decode("utf-8", "ignore").encode()
            os.rename(root + b"/" + old, root + b"/" + new)
            want[new] = want.pop(old)
            last = list(want)[-1]
            with open(root + b"/" + last, "wb") as f:
                f.write(b"rewritten\n")
            want[last] = b"rewritten\n"
            _check(root, want)
        for name, data in want.items():
            made[root + b"/" + name] = data

    case()
    assert len(made) >= 10  # the strategy still makes files, not only refusals
    _refresh(m)
    for path, data in made.items():
        with open(path, "rb") as f:
            assert f.read() == data, path
    m.stop()
    m.start()
    for path, data in made.items():
        with open(path, "rb") as f:
            assert f.read() == data, path
    shutil.rmtree(m.path / "case1", ignore_errors=True)


def test_rewriting_the_plain_named_duplicate_keeps_its_bytes_under_its_name(
        mount_factory: Callable[..., Mount], tmp_path: Path) -> None:
    m = mount_factory()
    first = m.output("report.csv", b"a,first\n")["id"]
    twin = m.output("report.csv", b"b,twin\n")["id"]
    shown_twin = f"report [{twin}].csv"
    assert sorted(os.listdir(m.path)) == sorted(["report.csv", shown_twin])
    src = tmp_path / "new.csv"
    src.write_bytes(b"c,copied\n")

    def both(plain: bytes) -> None:
        assert (m.path / "report.csv").read_bytes() == plain
        assert (m.path / shown_twin).read_bytes() == b"b,twin\n"
        assert sorted(os.listdir(m.path)) == sorted(["report.csv", shown_twin])

    subprocess.run(["cp", str(src), str(m.path / "report.csv")], check=True, timeout=60)
    both(b"c,copied\n")
    _refresh(m)
    both(b"c,copied\n")
    with open(m.path / "report.csv", "wb") as f:  # a shell's `>`
        f.write(b"d,redirected\n")
    both(b"d,redirected\n")
    _refresh(m)
    both(b"d,redirected\n")
    remote = {f["id"]: f for f in m.remote_named("report.csv")}
    assert len(remote) == 2 and twin in remote and first not in remote  # the twin: kept
    m.stop()
    m.start()  # the same cache directory: the rewritten file keeps its place there
    both(b"d,redirected\n")
    # The newer duplicate rewritten: it stays the newer one, under its new id.
    with open(m.path / shown_twin, "wb") as f:
        f.write(b"e,the twin, again\n")
    remote = {f["id"]: f for f in m.remote_named("report.csv")}
    assert len(remote) == 2 and twin not in remote
    (new_twin,) = [i for i, f in remote.items()
                   if f["size_bytes"] == len(b"e,the twin, again\n")]
    _refresh(m)
    assert (m.path / "report.csv").read_bytes() == b"d,redirected\n"
    assert (m.path / f"report [{new_twin}].csv").read_bytes() == b"e,the twin, again\n"
    assert sorted(os.listdir(m.path)) == sorted(["report.csv", f"report [{new_twin}].csv"])


def test_an_editors_save_over_the_plain_named_duplicate_keeps_its_name(
        mount_factory: Callable[..., Mount]) -> None:
    m = mount_factory()
    m.output("report.csv", b"a,first\n")
    twin = m.output("report.csv", b"b,twin\n")["id"]
    shown_twin = f"report [{twin}].csv"
    assert sorted(os.listdir(m.path)) == sorted(["report.csv", shown_twin])
    (m.path / "report.csv.new").write_bytes(b"c,saved\n")  # write a new file, then
    os.rename(m.path / "report.csv.new", m.path / "report.csv")  # move it over the old
    for _ in range(2):
        assert (m.path / "report.csv").read_bytes() == b"c,saved\n"
        assert (m.path / shown_twin).read_bytes() == b"b,twin\n"
        assert sorted(os.listdir(m.path)) == sorted(["report.csv", shown_twin])
        _refresh(m)
    assert twin in {f["id"] for f in m.remote_named("report.csv")}
