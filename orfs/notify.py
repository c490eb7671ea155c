"""A tiny sd_notify(3): tell systemd (or anything listening on $NOTIFY_SOCKET) how we are.

`orfs mount -f` under a `Type=notify` unit (contrib/orfs@.service) sends `READY=1` once
the mount is live, so `systemctl --user start orfs@x` returns only when `ls ~/x` works,
and `STOPPING=1` when it begins to unmount. Without $NOTIFY_SOCKET every call is a
no-op, so callers never need to ask whether they run under systemd.

The protocol is one datagram of newline-separated `KEY=VALUE` lines on an AF_UNIX
socket; a path starting with '@' names a socket in the abstract namespace.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address(path: str) -> str | bytes | None:
    if path.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@', and no trailing NUL.
        return b"\0" + path[1:].encode()
    if path.startswith("/"):
        return path
    return None  # systemd also knows vsock:... addresses; not worth supporting here


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=...") as one datagram.

    Returns True when a datagram was sent, False when there is no socket to send to or
    sending failed. Never raises: a mount must not fail because its supervisor went away.
    """
    env = os.environ if environ is None else environ
    path = env.get(NOTIFY_SOCKET)
    if not path or not fields:
        return False
    address = _address(path)
    if address is None:
        log.debug("ignoring unsupported NOTIFY_SOCKET %r", path)
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as e:
        log.debug("sd_notify to %r failed: %s", path, e)
        return False
    return True


def notify_ready(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """The mount is live (`READY=1`). Send it from the process systemd started
    (`orfs mount -f`): with `NotifyAccess=main` systemd ignores any other sender."""
    fields = ["READY=1"]
    if status:
        fields.append(f"STATUS={status}")
    return notify(*fields, environ=environ)


def notify_stopping(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """We are unmounting (`STOPPING=1`)."""
    fields = ["STOPPING=1"]
    if status:
        fields.append(f"STATUS={status}")
    return notify(*fields, environ=environ)


def notify_status(status: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """A one-line status shown by `systemctl status` (e.g. "3 uploads pending")."""
    return notify(f"STATUS={status}", environ=environ)
