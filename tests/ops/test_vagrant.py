"""The Vagrantfile: valid for Debian's vagrant, provisioned by exactly ./scripts/setup.

No box can be downloaded here, so `vagrant validate` is what CI can check. The test
fails (never skips) in CI when vagrant is missing: scripts/setup installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"


def _vagrant() -> str:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        if in_ci():
            pytest.fail("vagrant is missing (scripts/setup installs Debian's vagrant)")
        pytest.skip("vagrant is not installed (scripts/setup installs it)")
    return vagrant


def _validate(vagrantfile_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAGRANT_CWD": str(vagrantfile_dir),
           "VAGRANT_HOME": str(tmp_path / "vagrant.d"),  # leave ~/.vagrant.d alone
           "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1"}
    return subprocess.run([_vagrant(), "validate"], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def test_vagrant_validate(tmp_path: Path) -> None:
    # A copy, so that vagrant's .vagrant/ state lands in tmp_path, not the work tree.
    work = tmp_path / "vm"
    work.mkdir()
    shutil.copy(VAGRANTFILE, work / "Vagrantfile")
    r = _validate(work, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validated successfully" in r.stdout


def test_vagrant_validate_catches_mistakes(tmp_path: Path) -> None:
    # The check above means something: a misspelt setting fails validation.
    work = tmp_path / "vm"
    work.mkdir()
    text = VAGRANTFILE.read_text()
    assert "config.vm.hostname" in text
    (work / "Vagrantfile").write_text(text.replace("config.vm.hostname", "config.vm.hostnme"))
    r = _validate(work, tmp_path)
    assert r.returncode != 0
    assert "hostnme" in r.stdout + r.stderr


def _code_lines() -> list[str]:
    return [line.split("#", 1)[0].rstrip() for line in VAGRANTFILE.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def test_provisioning_is_exactly_scripts_setup() -> None:
    provisions = [line for line in _code_lines() if ".provision" in line]
    assert len(provisions) == 1, provisions
    m = re.fullmatch(r'\s*config\.vm\.provision\s+"shell",\s*privileged:\s*true,\s*'
                     r'inline:\s*"cd /vagrant && \./scripts/setup"', provisions[0])
    assert m, f"provisioning must run exactly ./scripts/setup, found: {provisions[0]}"


def test_box_is_debian_12_and_the_tree_is_at_vagrant() -> None:
    code = "\n".join(_code_lines())
    assert re.search(r'config\.vm\.box\s*=\s*"debian/bookworm64"', code)
    assert re.search(r'synced_folder\s+"\.",\s*"/vagrant"', code)
    assert (ROOT / "scripts" / "setup").is_file()
    assert os.access(ROOT / "scripts" / "setup", os.X_OK)


def test_readme_says_how_to_run_the_tests_in_the_vm() -> None:
    line = "vagrant up && vagrant ssh -c 'cd /vagrant && ./scripts/test'"
    assert line in (ROOT / "README.md").read_text()
    assert line in VAGRANTFILE.read_text()
