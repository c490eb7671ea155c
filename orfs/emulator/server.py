"""``orfs emulator``: the command line and the uvicorn server around the app.

The listening socket is bound here (so ``--port 0`` works and the port is known
before uvicorn starts); once uvicorn accepts connections, exactly one line goes
to stdout: ``orfs emulator listening on http://HOST:PORT/api/v1``.
SIGINT and SIGTERM shut it down gracefully with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Generator
from pathlib import Path

import uvicorn

from orfs.emulator.app import API_PREFIX, EmulatorConfig, create_app
from orfs.emulator.store import DEFAULT_QUOTA
from orfs.units import parse_size

DEMO_API_KEY = "orfs-demo-key"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
# Seconds open connections (a slow download) get to finish after a stop signal.
GRACEFUL_SHUTDOWN_TIMEOUT = 2

log = logging.getLogger(__name__)


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``orfs emulator``."""
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where files and metadata persist (default: a fresh temporary"
                             " directory, removed at exit)")
    parser.add_argument("--api-key", default=None,
                        help="the bearer key clients must send (default: $OPENROUTER_API_KEY,"
                             f" else {DEMO_API_KEY!r})")
    parser.add_argument("--quota", type=_size, default=DEFAULT_QUOTA,
                        help="storage per workspace, e.g. 10G (default 10 GiB)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay added to every API request, in milliseconds")
    parser.add_argument("--fail-rate", type=_rate, default=0.0,
                        help="fraction of operation requests answered 500")
    parser.add_argument("--throttle-rate", type=_rate, default=0.0,
                        help="fraction of operation requests answered 429 (with retry-after-ms)")
    parser.add_argument("--bandwidth", type=_size, default=None,
                        help="cap on each upload and download, bytes per second (e.g. 1M)")
    parser.add_argument("--no-ranges", action="store_true",
                        help="ignore Range on downloads: always 200 with the whole body and"
                             " no Accept-Ranges (a server without range support)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the fault-injection random source (reproducible faults)")
    parser.add_argument("--seed-demo", action="store_true",
                        help="store a small demo workspace (once per data directory)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="server log level (default warning; never logs the key)")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            family = socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a keep-alive client waits
    # ~40 ms per request (Nagle on our small writes meets its delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{API_PREFIX}"


class _Server(uvicorn.Server):
    """uvicorn's server, announcing itself once started and exiting 0 on signals.

    uvicorn re-raises a captured SIGINT/SIGTERM after shutdown (so the process
    dies of it, with a KeyboardInterrupt traceback for SIGINT); an emulator
    stopped on purpose should just exit cleanly.
    """

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        def stop(signum: int, frame: object) -> None:
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(f"orfs emulator listening on {self.url}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the exit status."""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = args.api_key or os.environ.get("OPENROUTER_API_KEY") or DEMO_API_KEY
    temp_dir: Path | None = None
    data_dir: Path = args.data_dir
    if data_dir is None:
        temp_dir = data_dir = Path(tempfile.mkdtemp(prefix="orfs-emulator-"))
    try:
        sock = _bind(args.host, args.port)
    except OSError as e:
        print(f"orfs emulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    try:
        config = EmulatorConfig(
            data_dir=data_dir, api_key=api_key, quota=args.quota, latency_ms=args.latency_ms,
            fail_rate=args.fail_rate, throttle_rate=args.throttle_rate,
            bandwidth=args.bandwidth, rng=random.Random(args.seed), seed_demo=args.seed_demo,
            ranges=not args.no_ranges,
        )
        app = create_app(config)
        port = sock.getsockname()[1]
        server = _Server(
            uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level == "debug",
                           lifespan="on", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT),
            _url(args.host, port),
        )
        asyncio.run(server.serve(sockets=[sock]))
        return 0
    finally:
        sock.close()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
