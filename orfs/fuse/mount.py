"""`run_mount(config)`: check the key, daemonize, mount, serve, unmount.

Order matters (docs/FUSE.md, "Starting in the background"): the key is read and the
stale-mount check done before the fork; the fork happens before any trio, thread or httpx use; the
child checks the key with one request, calls `pyfuse3.init`, then writes "ok" to
the pipe and the parent exits 0. Any failure before "ok" travels up the pipe as one
line, the parent prints it and exits 1, and nothing is left mounted.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyfuse3
import trio

from orfs import mountinfo
from orfs.api.client import FilesClient
from orfs.api.credentials import ENV_VAR, ApiKey, ApiKeyError, read_api_key
from orfs.api.errors import ApiError, Forbidden, Unauthorized, Unreachable
from orfs.api.retry import policies
from orfs.config import MountConfig
from orfs.core.cache import ContentCache
from orfs.core.fs import Filesystem
from orfs.core.state import State, make_private_dir
from orfs.fuse.ops import Operations
from orfs.fuse.tuning import tune_after_init, tune_http_reads
from orfs.notify import notify_ready, notify_stopping

log = logging.getLogger(__name__)


# How long an unmount waits for uploads in flight before leaving them to the journal.
DRAIN_TIMEOUT = 120.0


class MountError(Exception):
    """A reason not to mount, for the user, in one line."""


def run_mount(config: MountConfig) -> int:
    """Mount and serve until unmounted; 0 on success. See the module docstring."""
    os.umask(0o077)  # cache and staging files 0600, directories 0700
    mountpoint = Path(os.path.abspath(config.mountpoint))
    try:
        key = read_api_key(config.api_key_file)
        # Held in `key` from here on; no child (fusermount3, helpers) inherits it.
        os.environ.pop(ENV_VAR, None)
        _prepare_mountpoint(mountpoint)
    except (ApiKeyError, MountError) as exc:
        print(f"orfs: {exc}", file=sys.stderr)
        return 1
    if config.foreground:
        _setup_logging(config, background=False)
        return _serve(config, mountpoint, key, notify_fd=None)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read()
        if answer == b"ok":
            return 0
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        message = answer.decode("utf-8", "replace").strip() or "the mount process died"
        print(f"orfs: {message}", file=sys.stderr)
        return 1
    os.close(read_fd)
    os.setsid()
    code = 1
    try:
        _setup_logging(config, background=True)
        code = _serve(config, mountpoint, key, notify_fd=write_fd)
    finally:
        os._exit(code)


def _serve(config: MountConfig, mountpoint: Path, key: ApiKey, notify_fd: int | None) -> int:
    try:
        trio.run(_main, config, mountpoint, key, notify_fd)
    except MountError as exc:
        if notify_fd is None:
            print(f"orfs: {exc}", file=sys.stderr)
        else:
            os.write(notify_fd, str(exc).encode())
            os.close(notify_fd)
        return 1
    except BaseException:
        log.exception("the mount stopped on an unexpected error")
        if notify_fd is not None:
            try:
                os.write(notify_fd, b"unexpected error; see the log")
                os.close(notify_fd)
            except OSError:
                pass
        return 1
    return 0


async def _main(config: MountConfig, mountpoint: Path, key: ApiKey,
                notify_fd: int | None) -> None:
    tune_http_reads()  # larger socket reads for downloads (tuning.py)
    upload_retry, read_retry = policies(config.retry_budget)
    try:
        client = FilesClient(config.api_base, key, workspace=config.workspace,
                             provider=config.provider, chunked_upload=config.chunked_upload,
                             retry=upload_retry, read_retry=read_retry)
    except ValueError as exc:
        raise MountError(str(exc)) from None
    try:
        await _check(client, config)
        root = config.cache_root()
        make_private_dir(root)
        state = State(root)
        content = ContentCache(root, config.cache_max_size, client, state,
                               download_streams=config.download_streams)
        info = {"mountpoint": str(mountpoint), "api_base": config.api_base,
                "workspace": config.workspace, "provider": config.provider,
                "pid": os.getpid()}  # after the fork: the serving process
        fs = Filesystem(client, content, state, staging_dir=root / "staging",
                        dir_cache_ttl=config.dir_cache_ttl, read_only=config.read_only,
                        info=info, stream_uploads=config.chunked_upload,
                        temp_grace=config.temp_grace,
                        api_down_window=config.api_down_window,
                        async_uploads=config.uploads == "async",
                        upload_streams=config.upload_streams)
        todo = fs.restore_journal()
        ops = Operations(fs, kernel_ttl=config.kernel_ttl, xattrs=config.xattrs)
        options = {"fsname=orfs", "subtype=orfs", "default_permissions"}
        if config.allow_other:
            options.add("allow_other")
        if config.read_only:
            options.add("ro")
        try:
            pyfuse3.init(ops, str(mountpoint), options)
        except Exception as exc:
            raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
        log.info("mounted %s on %s (workspace %s)", config.api_base, mountpoint,
                 config.workspace or "default")
        notify_ready(f"mounted {mountpoint}")  # systemd Type=notify; no-op elsewhere
        if notify_fd is not None:
            os.write(notify_fd, b"ok")
            os.close(notify_fd)
            _detach_stdio()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(fs.run)  # downloads, streamed and held uploads
                nursery.start_soon(fs.resume_uploads, todo)
                nursery.start_soon(_watch_signals, fs)
                nursery.start_soon(tune_after_init, ops.initialized, mountpoint)
                await pyfuse3.main()
                # Unmounted (fusermount3 -u, orfs unmount, a signal): uploads in flight
                # need no kernel, so let them finish; what cannot stays journaled.
                await _drain(fs)
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
            state.close()
            log.info("unmounted %s", mountpoint)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def _check(client: FilesClient, config: MountConfig) -> None:
    try:
        await client.check()
    except Unauthorized:
        raise MountError(f"the API key was refused by {config.api_base} (401); "
                         "check OPENROUTER_API_KEY or --api-key-file") from None
    except Forbidden as exc:
        raise MountError(f"{config.api_base} refused access (403): {exc.message}") from None
    except Unreachable as exc:
        raise MountError(f"cannot reach {config.api_base}: {exc.message}") from None
    except ApiError as exc:
        raise MountError(f"{config.api_base} does not answer like the Files API: {exc}"
                         ) from None


async def _drain(fs: Filesystem) -> None:
    fs.stop_queue()  # queued uploads not started stay journaled for the next mount
    busy = fs.uploads_in_flight()
    if not busy:
        return
    log.info("unmounted with %d upload(s) in flight: waiting up to %.0f s for them",
             busy, DRAIN_TIMEOUT)
    await fs.wait_uploads(DRAIN_TIMEOUT)
    left = fs.uploads_in_flight()
    if left:
        log.warning("%d upload(s) still in flight after %.0f s; they stay journaled in the "
                    "cache directory and resume at the next mount", left, DRAIN_TIMEOUT)


async def _watch_signals(fs: Filesystem) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                   signal.SIGUSR1) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: dropping the listing cache")
                fs.drop_listing()
                continue
            if signum == signal.SIGUSR1:
                log.info("SIGUSR1: trying failed uploads again")
                fs.retry_failed()
                continue
            log.info("signal %d: finishing uploads, then unmounting", signum)
            notify_stopping()
            await fs.upload_held()  # temporary names still in their grace period
            await fs.drain_queue(DRAIN_TIMEOUT)  # --uploads async: the queue
            await fs.wait_uploads()
            pyfuse3.terminate()
            return


def _mounted_here(mountpoint: Path) -> bool:
    """Listed in /proc/self/mountinfo (also true of a dead FUSE mount)."""
    return mountinfo.is_listed(mountpoint)


def _prepare_mountpoint(mountpoint: Path) -> None:
    """Clear a dead mount left by a crash; refuse a live one; require a directory."""
    if _mounted_here(mountpoint):
        try:
            # statfs always reaches the filesystem; a stat may be answered from the
            # kernel's attribute cache for a second after the process died.
            os.statvfs(mountpoint)
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
                raise MountError(f"{mountpoint}: {exc.strerror}") from None
            result = subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise MountError(f"{mountpoint} is a dead mount and fusermount3 -u -z failed: "
                                 f"{result.stderr.strip()}") from None
            print(f"orfs: cleared a dead mount on {mountpoint} (fusermount3 -u -z)",
                  file=sys.stderr)
        else:
            raise MountError(f"{mountpoint} is already mounted")
    if not mountpoint.is_dir():
        raise MountError(f"{mountpoint} is not a directory")


def _setup_logging(config: MountConfig, background: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if config.debug else logging.INFO)
    handler: logging.Handler
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if not background:
        handler = logging.StreamHandler(sys.stderr)
    elif config.log_file is not None:
        handler = logging.FileHandler(config.log_file)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        fmt = "orfs[%(process)d]: %(levelname)s %(name)s: %(message)s"
    else:
        make_private_dir(config.cache_root())
        handler = logging.FileHandler(config.cache_root() / "orfs.log")
    handler.setFormatter(logging.Formatter(fmt))
    root.handlers[:] = [handler]
    # Their DEBUG lines are the transport's; the client logs one line per request itself.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
