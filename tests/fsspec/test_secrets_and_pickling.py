"""The key stays out of reprs, logs, errors and (when it came from the environment)
pickles; the errnos are the mount's."""

from __future__ import annotations

import errno
import logging
import pickle

import pytest

from orfs.api import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    Unreachable,
)
from orfs.core.errors import AccessDenied, IOFailure, NoEntry
from orfs.core.writes import upload_error as mount_upload_error
from orfs.fsspec import OpenRouterFileSystem
from orfs.fsspec._errors import read_error, upload_error
from orfs.fuse.errno_table import errno_for
from orfs.testing.processes import EmulatorProcess

SECRET = "sk-or-v1-THISKEYMUSTNEVERAPPEAR0123456789"


@pytest.mark.parametrize("exc", [BadRequest("unsupported file type"),
                                 PayloadTooLarge("too large"), Forbidden("quota"),
                                 Unauthorized("bad key"), ServerError("boom"),
                                 Unreachable("down")])
def test_upload_errnos_are_the_mounts(exc: ApiError) -> None:
    assert upload_error(exc, "p").errno == errno_for(mount_upload_error(exc))


@pytest.mark.parametrize(("exc", "core"), [(NotFound("gone"), NoEntry),
                                           (Unauthorized("bad key"), AccessDenied),
                                           (ServerError("boom"), IOFailure),
                                           (Unreachable("down"), IOFailure)])
def test_read_errnos_are_the_mounts(exc: ApiError, core: type[Exception]) -> None:
    assert read_error(exc, "p").errno == errno_for(core("x"))  # type: ignore[arg-type]


def test_a_wrong_key_is_permission_error_without_the_key(
        emu: EmulatorProcess, workspace: str, caplog: pytest.LogCaptureFixture) -> None:
    fs = OpenRouterFileSystem(api_key=SECRET, api_base=emu.url, workspace=workspace,
                              skip_instance_cache=True)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(PermissionError) as err:
            fs.ls("")
    assert err.value.errno == errno.EACCES
    seen = [repr(fs), str(fs), str(err.value), repr(err.value), caplog.text,
            str(fs.to_dict(include_password=False)), fs.to_json(include_password=False)]
    assert not any(SECRET in text for text in seen)


def test_a_key_from_the_environment_is_not_in_the_pickle(
        emu: EmulatorProcess, workspace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    emu.create_output("p.txt", b"pickled", workspace_id=workspace)
    monkeypatch.setenv("OPENROUTER_API_KEY", emu.api_key)
    fs = OpenRouterFileSystem(api_base=emu.url, workspace=workspace)
    blob = pickle.dumps(fs)
    assert emu.api_key.encode() not in blob
    # What travels: the class and the options given (here api_base and workspace).
    assert fs.storage_options == {"api_base": emu.url, "workspace": workspace}
    OpenRouterFileSystem.clear_instance_cache()
    again = pickle.loads(blob)
    assert again is not fs and again.cat_file("p.txt") == b"pickled"


def test_a_key_passed_in_travels_with_the_pickle_as_documented(
        emu: EmulatorProcess, workspace: str) -> None:
    fs = OpenRouterFileSystem(api_key=emu.api_key, api_base=emu.url, workspace=workspace,
                              skip_instance_cache=True)
    assert emu.api_key.encode() in pickle.dumps(fs)
    assert emu.api_key not in repr(fs)


def test_no_key_at_all_is_a_clear_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENROUTER_API_KEY"):
        OpenRouterFileSystem(skip_instance_cache=True)
