"""Real tools on a real mount: mv, rsync, tar, editors' save cycles, cp -p,
install, >>, sed -i, and reading/removing by id. Asserts on bytes (the emulator's stored
blobs) and on the emulator's request counts."""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mount.conftest import Mount

pytestmark = pytest.mark.fuse

Counts = dict[str, int]


def run(*cmd: str | Path, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False,
                       **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}: {r.stderr}")
    return r  # type: ignore[no-any-return]


def requests(mnt: Mount, action: Callable[[], object]) -> Counts:
    """The emulator's requests made while action ran (upload, delete, download, ...)."""
    mnt.emu.reset_stats()
    action()
    got = {k: v for k, v in mnt.emu.stats().items() if v}
    print("requests:", got)  # shown when a test fails
    return got


def blob(mnt: Mount, filename: str) -> bytes:
    """The bytes the service stores under filename (exactly one such file)."""
    found = mnt.remote_named(filename)
    assert len(found) == 1, (filename, found)
    return (mnt.emu.data_dir / "blobs" / str(found[0]["id"])).read_bytes()


def refresh_until_visible(mnt: Mount, path: Path) -> None:
    """SIGHUP drops the listing cache; wait until an output made outside shows."""
    assert mnt.proc is not None
    os.kill(mnt.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def text_tree(root: Path, count: int, seed: int) -> dict[str, bytes]:
    """count text files in nested folders under root; relative path -> bytes."""
    rng = random.Random(seed)
    made: dict[str, bytes] = {}
    for i in range(count):
        depth = i % 4
        rel = "/".join([f"d{(i + k) % 3}" for k in range(depth)] + [f"file{i:02d}.txt"])
        data = "".join(f"line {j} of {rel} {rng.random()}\n"
                       for j in range(rng.randrange(1, 200))).encode()
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made[rel] = data
    return made


def test_mv_uploads_once_and_deletes_once(mnt: Mount) -> None:
    d = mnt.path / "mv"
    d.mkdir()
    (d / "a.txt").write_bytes(b"the bytes of a\n")
    old_id = mnt.remote_named("mv/a.txt")[0]["id"]
    got = requests(mnt, lambda: run("mv", d / "a.txt", d / "b.txt"))
    assert got == {"upload": 1, "delete": 1}, got
    assert blob(mnt, "mv/b.txt") == b"the bytes of a\n"
    assert mnt.remote_named("mv/a.txt") == []
    assert not (d / "a.txt").exists()
    assert (d / "b.txt").read_bytes() == b"the bytes of a\n"
    assert os.getxattr(d / "b.txt", "user.openrouter.id").decode() != old_id
    # across folders, onto an existing name: the target is replaced
    (mnt.path / "mv2").mkdir()
    (mnt.path / "mv2" / "b.txt").write_bytes(b"to be replaced\n")
    got = requests(mnt, lambda: run("mv", d / "b.txt", mnt.path / "mv2" / "b.txt"))
    assert got == {"upload": 1, "delete": 2}, got
    assert blob(mnt, "mv2/b.txt") == b"the bytes of a\n"
    assert mnt.remote_named("mv/b.txt") == []
    # a folder with files in it cannot be renamed
    r = run("mv", mnt.path / "mv2", mnt.path / "mv3", check=False)
    assert r.returncode != 0 and "not permitted" in r.stderr.lower()


def test_rsync_uploads_each_file_once_then_nothing_then_deletes_one(
        mnt: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree = text_tree(src, 49, seed=1)
    big = b"".join(b"a big line %08d\n" % i for i in range(200_000))  # 3.2 MB
    (src / "d1" / "big.txt").write_bytes(big)  # past the streamed-upload threshold
    tree["d1/big.txt"] = big
    dest = mnt.path / "sub"
    got = requests(mnt, lambda: run("rsync", "-a", "--delete", f"{src}/", f"{dest}/"))
    assert got.get("upload") == 50 and got.get("delete", 0) == 0, got
    for rel, data in tree.items():
        assert blob(mnt, f"sub/{rel}") == data
        assert (dest / rel).read_bytes() == data
        assert int(os.stat(dest / rel).st_mtime) == int(os.stat(src / rel).st_mtime)
    got = requests(mnt, lambda: run("rsync", "-a", "--delete", f"{src}/", f"{dest}/"))
    assert "upload" not in got and "delete" not in got and "download" not in got, got
    out = run("rsync", "-a", "--delete", "--itemize-changes", f"{src}/", f"{dest}/").stdout
    assert not any(line.startswith((">f", "<f")) for line in out.splitlines()), out
    gone = sorted(tree)[7]
    (src / gone).unlink()
    got = requests(mnt, lambda: run("rsync", "-a", "--delete", f"{src}/", f"{dest}/"))
    assert got.get("delete") == 1 and "upload" not in got, got
    assert mnt.remote_named(f"sub/{gone}") == []


def test_tar_x_into_the_mount_and_c_back_out(mnt: Mount, tmp_path: Path) -> None:
    tree = text_tree(tmp_path / "t", 30, seed=2)
    archive = tmp_path / "t.tar"
    run("tar", "-cf", archive, "-C", tmp_path / "t", ".")
    dest = mnt.path / "untar"
    dest.mkdir()
    got = requests(mnt, lambda: run("tar", "-xf", archive, "-C", dest))
    assert got.get("upload") == 30 and "delete" not in got, got
    back = {}

    def tar_c() -> None:
        out = subprocess.run(["tar", "-cf", "-", "-C", str(dest), "."], capture_output=True,
                             check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(out)) as tf:
            for m in tf.getmembers():
                if m.isfile():
                    f = tf.extractfile(m)
                    assert f is not None
                    back[m.name.removeprefix("./")] = f.read()

    got = requests(mnt, tar_c)
    assert back == tree
    assert "download" not in got and "upload" not in got, got
    for rel, data in tree.items():
        assert blob(mnt, f"untar/{rel}") == data


def test_an_editors_save_cycle_uploads_once_and_deletes_the_old(mnt: Mount) -> None:
    d = mnt.path / "edit"
    d.mkdir()
    (d / "x.txt").write_bytes(b"version 1\n")
    script = ("import os, sys\n"
              "p = sys.argv[1]\n"
              "with open(p + '.tmp', 'wb') as f:\n"
              "    f.write(b'version 2\\n'); f.flush(); os.fsync(f.fileno())\n"
              "os.replace(p + '.tmp', p)\n")
    got = requests(mnt, lambda: run(sys.executable, "-c", script, d / "x.txt"))
    assert got == {"upload": 1, "delete": 1}, got
    assert blob(mnt, "edit/x.txt") == b"version 2\n"
    assert sorted(os.listdir(d)) == ["x.txt"]
    # Python's own atomic-write idiom: tempfile in the same folder, then os.replace
    script = ("import os, sys, tempfile\n"
              "fd, tmp = tempfile.mkstemp(dir=os.path.dirname(sys.argv[1]))\n"
              "os.write(fd, b'version 3\\n'); os.close(fd)\n"
              "os.replace(tmp, sys.argv[1])\n")
    got = requests(mnt, lambda: run(sys.executable, "-c", script, d / "x.txt"))
    assert got == {"upload": 1, "delete": 1}, got
    assert blob(mnt, "edit/x.txt") == b"version 3\n"


def test_vim_saves_with_one_upload(mnt: Mount) -> None:
    d = mnt.path / "vim"
    d.mkdir()
    (d / "v.txt").write_bytes(b"a line with a\n")
    got = requests(mnt, lambda: run("vim", "-u", "NONE", "-i", "NONE", "-es",
                                    "-c", "s/a line/the line/", "-c", "wq", d / "v.txt",
                                    stdin=subprocess.DEVNULL, timeout=30))
    assert got == {"upload": 1, "delete": 1}, got
    assert blob(mnt, "vim/v.txt") == b"the line with a\n"
    assert sorted(os.listdir(d)) == ["v.txt"]  # the swap file never uploaded


def test_cp_p_and_install_succeed(mnt: Mount, tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_bytes(b"keep my times\n")
    os.chmod(src, 0o640)
    os.utime(src, (1_100_000_000, 1_100_000_000))
    (mnt.path / "cpp").mkdir()
    got = requests(mnt, lambda: run("cp", "-p", src, mnt.path / "cpp" / "p.txt"))
    assert got == {"upload": 1}, got
    st = os.stat(mnt.path / "cpp" / "p.txt")
    assert int(st.st_mtime) == 1_100_000_000 and st.st_mode & 0o777 == 0o640
    got = requests(mnt, lambda: run("install", "-m", "644", src,
                                    mnt.path / "cpp" / "i.txt"))
    assert got.get("upload") == 1, got
    assert os.stat(mnt.path / "cpp" / "i.txt").st_mode & 0o777 == 0o644
    assert blob(mnt, "cpp/i.txt") == b"keep my times\n"
    # cp -p over an existing file: replaced, once
    got = requests(mnt, lambda: run("cp", "-p", src, mnt.path / "cpp" / "p.txt"))
    assert got == {"upload": 1, "delete": 1}, got


def test_append_to_a_downloadable_output(mnt: Mount) -> None:
    old = mnt.output("appends/output.csv", b"a,b\n1,2\n")
    target = mnt.path / "appends" / "output.csv"
    refresh_until_visible(mnt, target)
    got = requests(mnt, lambda: run("sh", "-c", f"echo 3,4 >> '{target}'"))
    assert got.get("upload") == 1 and got.get("delete") == 1 and got.get("download") == 1, got
    assert blob(mnt, "appends/output.csv") == b"a,b\n1,2\n3,4\n"
    assert all(f["id"] != old["id"] for f in mnt.remote_files())
    assert target.read_bytes() == b"a,b\n1,2\n3,4\n"


def test_cat_and_rm_by_id(mnt: Mount) -> None:
    out = mnt.output("byid/report.md", b"# report\n")
    path = mnt.path / ".by-id" / out["id"]
    assert run("cat", path).stdout == "# report\n"
    assert os.getxattr(path, "user.openrouter.filename") == b"byid/report.md"
    got = requests(mnt, lambda: run("rm", path))
    assert got == {"delete": 1}, got
    assert mnt.remote_named("byid/report.md") == []
    assert not path.exists()
    assert os.listdir(mnt.path / ".by-id") == []


def test_sed_i_on_a_file_written_here(mnt: Mount) -> None:
    (mnt.path / "sed").mkdir()
    f = mnt.path / "sed" / "file.txt"
    f.write_bytes(b"a cat and a hat\n")
    got = requests(mnt, lambda: run("sed", "-i", "s/a/b/", f))
    assert got == {"upload": 1, "delete": 1}, got
    assert blob(mnt, "sed/file.txt") == b"b cat and a hat\n"
    assert os.listdir(mnt.path / "sed") == ["file.txt"]


def test_links_and_special_files_are_eperm_but_files_and_folders_work(mnt: Mount) -> None:
    d = mnt.path / "special"
    d.mkdir()
    (d / "f.txt").write_bytes(b"f\n")
    calls: list[Callable[[], None]] = [lambda: os.symlink("f.txt", d / "sym"),
                                       lambda: os.link(d / "f.txt", d / "hard"),
                                       lambda: os.mkfifo(d / "fifo")]
    for call in calls:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    assert sorted(os.listdir(d)) == ["f.txt"]



def test_request_counts_of_everyday_tools(mnt: Mount, tmp_path: Path) -> None:
    """The counts docs/SEMANTICS.md promises in its tool table."""
    d = mnt.path / "everyday"
    d.mkdir()
    src = tmp_path / "e.txt"
    src.write_bytes(b"everyday\n")
    assert requests(mnt, lambda: run("cp", src, d / "e.txt")) == {"upload": 1}
    assert requests(mnt, lambda: run("cp", src, d / "e.txt")) == {"upload": 1, "delete": 1}
    assert requests(mnt, lambda: run("ls", "-l", d)) == {}
    assert requests(mnt, lambda: run("stat", d / "e.txt")) == {}
    assert requests(mnt, lambda: run("cat", d / "e.txt")) == {}  # written here: cached
    assert requests(mnt, lambda: run("rm", d / "e.txt")) == {"delete": 1}
    mnt.output("everyday/cold.txt", b"cold\n")
    refresh_until_visible(mnt, d / "cold.txt")
    assert requests(mnt, lambda: run("cat", d / "cold.txt")) == {"download": 1}
    assert requests(mnt, lambda: run("cat", d / "cold.txt")) == {}
