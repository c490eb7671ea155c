"""orfs.notify speaks sd_notify to a real AF_UNIX datagram socket, path or abstract."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from orfs import notify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"orfs-test-notify-{os.getpid()}-{id(sock)}"
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def _lines(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_to_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify.notify_ready(environ={"NOTIFY_SOCKET": path})
    assert _lines(sock) == ["READY=1"]


def test_ready_with_status(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify.notify_ready("mounted /mnt/x", environ={"NOTIFY_SOCKET": path})
    assert _lines(sock) == ["READY=1", "STATUS=mounted /mnt/x"]


def test_stopping_and_status(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify.notify_stopping("finishing 2 uploads", environ={"NOTIFY_SOCKET": path})
    assert _lines(sock) == ["STOPPING=1", "STATUS=finishing 2 uploads"]
    assert notify.notify_status("idle", environ={"NOTIFY_SOCKET": path})
    assert _lines(sock) == ["STATUS=idle"]


def test_a_newline_cannot_inject_a_field(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify.notify_status("a\nREADY=1", environ={"NOTIFY_SOCKET": path})
    assert _lines(sock) == ["STATUS=a READY=1"]


def test_abstract_socket(abstract_listener: tuple[socket.socket, str]) -> None:
    sock, name = abstract_listener
    assert notify.notify_ready(environ={"NOTIFY_SOCKET": name})
    assert _lines(sock) == ["READY=1"]


def test_reads_the_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify.notify_ready()
    assert _lines(sock) == ["READY=1"]


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify_ready() is False
    assert notify.notify_stopping(environ={}) is False
    assert notify.notify_status("x", environ={"NOTIFY_SOCKET": ""}) is False


def test_a_dead_socket_never_raises(tmp_path: Path) -> None:
    # The supervisor went away: the mount must carry on.
    assert notify.notify_ready(environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False
    assert notify.notify_ready(environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False
