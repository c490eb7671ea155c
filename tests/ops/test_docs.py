"""docs/OPERATIONS.md stays in step with the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

from orfs import cli, config

from .test_cli import _mount_actions

ROOT = Path(__file__).resolve().parents[2]
OPS = (ROOT / "docs" / "OPERATIONS.md").read_text()


def test_every_mount_flag_is_in_the_options_table() -> None:
    for action in _mount_actions():
        flag = action.option_strings[-1]
        name = flag.lstrip("-").replace("-", "_")
        assert re.search(rf"^\| `{name}[=` ]", OPS, re.M), f"-o {name} is not in the table"
        assert f"`{flag}`" in OPS or f"`{action.option_strings[0]}`" in OPS, flag


def test_every_ignored_option_is_listed() -> None:
    section = OPS.split("accepts and ignores", 1)[1].split("\n\n", 1)[0]
    atime_family = {"atime", "noatime", "relatime", "strictatime", "nodiratime"}
    assert "the `atime` family" in section
    for opt in config._IGNORED_OPTIONS - atime_family:
        assert f"`{opt}`" in section, opt
    for prefix in ("x-", "comment=", "fsname=", "subtype=", "user="):
        assert prefix in section, prefix


def test_the_fstab_recipe() -> None:
    assert 'ln -s "$(command -v mount.orfs)" /sbin/mount.fuse.orfs' in OPS
    line = next(line for line in OPS.splitlines() if line.startswith("orfs  /mnt/openrouter"))
    source, target, fstype, options, *_ = line.split()
    assert (source, fstype) == ("orfs", "fuse.orfs")
    for opt in ("_netdev", "nofail", "api_key_file="):
        assert opt in options
    assert 'ln -s "$(command -v mount.orfs)" /sbin/mount.fuse.orfs' in cli._MOUNT_EPILOG


def test_the_systemd_recipe() -> None:
    assert (ROOT / "contrib" / "orfs@.service").is_file()
    for text in ("cp ~/src/orfs/contrib/orfs@.service ~/.config/systemd/user/",
                 "systemctl --user enable --now orfs@openrouter",
                 "journalctl --user -u orfs@openrouter", "loginctl enable-linger"):
        assert text in OPS, text


def test_troubleshooting_covers_the_usual_errors() -> None:
    trouble = OPS.split("## 7. Troubleshooting", 1)[1]
    for text in ("Transport endpoint is not connected", "fusermount3 -u -z",
                 "user_allow_other", "Permission denied", "Operation not supported",
                 "File too large", "100 MiB"):
        assert text in trouble, text


def test_readme_links_here() -> None:
    assert "docs/OPERATIONS.md" in (ROOT / "README.md").read_text()


# ------------------------------------------------- the repository cites only itself

_CITE = re.compile(r'docs/([A-Z][A-Za-z_-]*\.md)(?:,? "([^"]+)")?')
_SOURCES = [p for d in ("orfs", "tests", "scripts") for p in (ROOT / d).rglob("*")
            if p.is_file() and p.suffix in ("", ".py", ".sh") and "__pycache__" not in p.parts]
_DOCS = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines()
            if line.startswith("#")]


def test_every_docs_page_and_section_cited_in_the_code_exists() -> None:
    cited = 0
    for src in _SOURCES:
        text = src.read_text(errors="replace")
        for page, section in _CITE.findall(text):
            cited += 1
            doc = ROOT / "docs" / page
            assert doc.is_file(), f"{src.relative_to(ROOT)} cites docs/{page}, which is missing"
            section = " ".join(section.split())  # a citation may wrap across lines
            if section:
                assert any(section in h for h in _headings(doc)), (
                    f"{src.relative_to(ROOT)} cites section {section!r} of docs/{page}, "
                    f"which has no such heading")
    assert cited > 20  # the pattern still finds the citations


def test_every_page_linked_from_the_docs_exists() -> None:
    for doc in _DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)", doc.read_text()):
            assert (doc.parent / target).is_file(), f"{doc.name} links {target}"


# Documents that live outside the repository (the project's planning notes), and the
# numbers of an issue tracker a clone does not have.
_OUTSIDE = re.compile(r"DESIGN\.md|FUSE-NOTES|files-api\.md|CORE-REVIEW|STYLE\.md|\.\./shared"
                      r"|\bissues? #?\d+\b")


def test_nothing_cites_what_a_clone_does_not_have() -> None:
    for path in [*_SOURCES, *_DOCS, ROOT / "pyproject.toml"]:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if path.name == "test_docs.py" and ("_OUTSIDE" in line or "DESIGN\\.md" in line):
                continue
            assert not _OUTSIDE.search(line), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
