"""Several worker processes behind one listening socket (``server.workers > 1``).

The parent binds the socket once and starts N copies of ``python -m adapters.http.workers``,
each handed the socket's file descriptor; the kernel spreads new connections among them.
Each worker builds its own app from an import string (``module:attribute``, called when it
is a factory) and serves it with :mod:`adapters.http.server`.

The parent only supervises: it forwards SIGINT/SIGTERM to the workers and waits for them.
Every worker reports readiness by closing its end of a pipe after writing one byte, so the
parent learns without polling whether all of them started. If a worker fails to start, or
one dies while the others run, the parent stops the rest and exits non-zero (a process
manager restarts the service; a half-dead service is not hidden). Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
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


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` that worker processes can inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


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
    """Run ``workers`` processes serving ``app_ref``; returns the exit status for the command."""
    limits = limits or Limits()
    check_open_file_limit(limits.max_connections)
    sock = bind(host, port)
    ready_r, ready_w = os.pipe()
    cmd = [
        sys.executable, "-m", "adapters.http.workers",
        "--app", app_ref, "--fd", str(sock.fileno()), "--ready-fd", str(ready_w), "--log-level", log_level,
        "--limits", json.dumps(dataclasses.asdict(limits)), "--graceful-timeout", str(graceful_timeout),
    ]  # fmt: skip
    if factory:
        cmd.append("--factory")
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
            proc = subprocess.Popen(cmd, pass_fds=(sock.fileno(), ready_w))
            procs[proc.pid] = proc
        os.close(ready_w)
        sock.close()  # the workers hold it now
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
        # A worker that ends without being told to takes the others down with it.
        failed = _reap(procs, on_first_exit=lambda: None if signalled else signal_all(signal.SIGTERM),
                       stopping=lambda: signalled)
        return 0 if signalled and not failed else 1
    finally:
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


def worker_main(argv: list[str] | None = None) -> int:
    """One worker: serve the app on the inherited socket until SIGINT/SIGTERM."""
    import uvloop

    from adapters.http.server import LifespanFailure, Server, serve_until_signalled

    parser = argparse.ArgumentParser(prog="python -m adapters.http.workers")
    parser.add_argument("--app", required=True)
    parser.add_argument("--factory", action="store_true")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--limits", default="{}", help="adapters.http.limits.Limits as a JSON object")
    parser.add_argument("--graceful-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    ready_fd: int | None = args.ready_fd

    async def main() -> None:
        nonlocal ready_fd
        server = Server(
            load_app(args.app, args.factory),
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
    sys.exit(worker_main())
