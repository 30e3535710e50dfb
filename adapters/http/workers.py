"""Several worker processes on one port (``server.workers > 1``), each with its own listening socket.

The supervisor is small on purpose: it imports none of the gateway (``triplock serve`` validates
the config, then replaces itself with ``python -m adapters.http.workers supervise``), reserves
the port, starts N copies of ``python -m adapters.http.workers`` and waits for them. Each worker
builds its own app from an import string (``module:attribute``, called when it is a factory)
and serves it with :mod:`adapters.http.server`.

Load spreading: every worker binds its own socket with ``SO_REUSEPORT`` and the kernel picks
the listening socket of each new connection by a hash of its addresses and ports, so workers
get equal shares of the connections (in expectation: a handful of connections can still split
unevenly). One socket shared by all workers lets whichever worker wakes first accept a whole
burst instead: measured 29/71% of the CPU with two workers. Any process of the same user can
join a ``SO_REUSEPORT`` group, so run the gateway as a user of its own. The supervisor keeps
the port bound but never listens on it, so a worker cannot be started on a port another program
holds, and no connection waits on the supervisor. A worker listens only once its app has
started: a connection never queues behind a worker that is still starting.

The supervisor forwards SIGINT/SIGTERM to the workers and waits for them. Every worker reports
readiness by closing its end of a pipe after writing one byte, so the supervisor learns without
polling whether all of them started. If a worker fails to start, or one dies while the others
run, the supervisor stops the rest and exits non-zero (a process manager restarts the service;
a half-dead service is not hidden). Linux only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from adapters.http.limits import Limits, check_open_file_limit

log = logging.getLogger("triplock.http")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_KILLED_BY_STOP = frozenset(-int(s) for s in _STOP_SIGNALS)  # waitstatus_to_exitcode of a signal death
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` with ``SO_REUSEPORT``, not yet listening.

    Every worker binds one (the server listens on it once its app has started); the supervisor
    binds one and never listens, to hold the port. Only sockets of the same user may join.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def supervisor_argv(
    app_ref: str,
    *,
    host: str,
    port: int,
    workers: int,
    factory: bool = True,
    log_level: str = "info",
    limits: Limits | None = None,
    graceful_timeout: float = 5.0,
) -> list[str]:
    """The command line that runs :func:`supervise` in a fresh interpreter (for ``os.execv``)."""
    return [sys.executable, "-m", "adapters.http.workers", "supervise", "--workers", str(workers),
            *_common_argv(app_ref, host, port, factory, log_level, limits or Limits(), graceful_timeout)]


def _common_argv(app_ref: str, host: str, port: int, factory: bool, log_level: str, limits: Limits,
                 graceful_timeout: float) -> list[str]:
    argv = [
        "--app", app_ref, "--host", host, "--port", str(port), "--log-level", log_level,
        "--limits", json.dumps(dataclasses.asdict(limits)), "--graceful-timeout", str(graceful_timeout),
    ]  # fmt: skip
    return [*argv, "--factory"] if factory else argv


def supervise(
    app_ref: str,
    *,
    host: str,
    port: int,
    workers: int,
    factory: bool = True,
    log_level: str = "info",
    limits: Limits | None = None,
    graceful_timeout: float = 5.0,
) -> int:
    """Run ``workers`` processes serving ``app_ref``; returns the exit status for the command.

    Raises ``OSError`` if ``host``:``port`` cannot be bound (taken by another program).
    """
    limits = limits or Limits()
    check_open_file_limit(limits.max_connections)
    reserved = bind(host, port)  # holds the port (and resolves port 0) without taking connections
    port = int(reserved.getsockname()[1])
    ready_r, ready_w = os.pipe()
    cmd = [sys.executable, "-m", "adapters.http.workers", "--ready-fd", str(ready_w),
           *_common_argv(app_ref, host, port, factory, log_level, limits, graceful_timeout)]
    procs: dict[int, subprocess.Popen[bytes]] = {}
    signalled = False

    def signal_all(signum: int) -> None:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    def forward(signum: int, frame: Any) -> None:
        nonlocal signalled
        signalled = True
        signal_all(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}
    try:
        for _ in range(workers):
            proc = subprocess.Popen(cmd, pass_fds=(ready_w,))
            procs[proc.pid] = proc
        os.close(ready_w)
        # EOF comes once every worker has written its byte and closed the pipe, or died.
        ready = 0
        while chunk := os.read(ready_r, 64):
            ready += len(chunk)
        os.close(ready_r)
        if ready < workers and not signalled:
            log.error("%d of %d worker processes failed to start", workers - ready, workers)
            signal_all(signal.SIGTERM)
            _reap(procs)
            return 1
        if not signalled:
            log.info("%d worker processes listening on %s:%d", workers, host, port)
        # A worker that ends without being told to takes the others down with it.
        failed = _reap(procs, on_first_exit=lambda: None if signalled else signal_all(signal.SIGTERM),
                       stopping=lambda: signalled)
        return 0 if signalled and not failed else 1
    finally:
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
def _reap(
    procs: dict[int, subprocess.Popen[bytes]], on_first_exit: Any = None, stopping: Any = lambda: False
) -> bool:
    """Wait for every worker; call ``on_first_exit`` when the first one ends. True if any failed.

    While ``stopping()``, a worker killed by the stop signal it was sent is a clean stop: one still
    starting up (before it installs its handlers) dies of the signal's default action.
    """
    failed = False
    first = True
    while any(p.returncode is None for p in procs.values()):
        pid, status = os.wait()
        proc = procs.get(pid)
        if proc is None:
            continue
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode in _KILLED_BY_STOP and stopping():
            log.info("worker process %d stopped before it finished starting", pid)
        elif proc.returncode != 0:
            failed = True
            log.error("worker process %d exited with status %d", pid, proc.returncode)
        if first and on_first_exit is not None:
            first = False
            on_first_exit()
    return failed


def load_app(ref: str, factory: bool) -> Any:
    """Import ``module:attribute``; call it when ``factory``."""
    module_name, _, attr = ref.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    return obj() if factory else obj


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--app", required=True)
    parser.add_argument("--factory", action="store_true")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--limits", default="{}", help="adapters.http.limits.Limits as a JSON object")
    parser.add_argument("--graceful-timeout", type=float, default=5.0)
    return parser


def supervisor_main(argv: list[str]) -> int:
    """``python -m adapters.http.workers supervise ...``: :func:`supervise` from the command line."""
    parser = _parser("python -m adapters.http.workers supervise")
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    try:
        return supervise(args.app, host=args.host, port=args.port, workers=args.workers, factory=args.factory,
                         log_level=args.log_level, limits=Limits(**json.loads(args.limits)),
                         graceful_timeout=args.graceful_timeout)
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", args.host, args.port, exc)
        return 1


def worker_main(argv: list[str] | None = None) -> int:
    """One worker: serve the app on its own ``SO_REUSEPORT`` socket until SIGINT/SIGTERM."""
    import asyncio

    import uvloop

    from adapters.http.server import LifespanFailure, Server, serve_until_signalled

    parser = _parser("python -m adapters.http.workers")
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    ready_fd: int | None = args.ready_fd
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        log.error("worker %d: cannot bind %s:%d: %s", os.getpid(), args.host, args.port, exc)
        return 1

    async def main() -> None:
        nonlocal ready_fd
        try:
            app = load_app(args.app, args.factory)
        except Exception as exc:  # a config the supervisor did not build: one line, not a traceback
            raise LifespanFailure(f"cannot build {args.app}: {exc}") from exc
        server = Server(
            app,
            sock=sock,
            limits=Limits(**json.loads(args.limits)),
            graceful_timeout=args.graceful_timeout,
            settle=True,
        )
        started = asyncio.Event()
        serving = asyncio.create_task(serve_until_signalled(server, started))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if started.is_set() and ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
            ready_fd = None
        waiting.cancel()
        await serving

    try:
        uvloop.run(main())
    except LifespanFailure as exc:
        log.error("worker %d: startup failed: %s", os.getpid(), exc)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["supervise"]:
        sys.exit(supervisor_main(sys.argv[2:]))
    sys.exit(worker_main())
