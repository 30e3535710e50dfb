"""A lean HTTP/1.1 server for ASGI 3 apps: asyncio.Protocol + httptools, run on uvloop.

What ``triplock serve`` runs the gateway on. It speaks the ASGI ``http`` scope and the
``lifespan`` protocol (no websockets: an Upgrade request is answered as a plain one), with
keep-alive, pipelining, ``Expect: 100-continue``, read and write flow control, bounds on
slow and idle clients (:mod:`adapters.http.limits`), and a graceful stop. Connection handling
lives in :mod:`adapters.http.protocol` and :mod:`adapters.http.cycle`; several worker
processes in :mod:`adapters.http.workers`.

Why not only uvicorn: measured against uvicorn (uvloop + httptools) on the benchmark
machines, this server costs half the CPU per request for a trivial app, but that is 13-16%
of the CPU for the whole gateway, whose own work dominates. uvicorn stays a supported,
tested choice (``server.runtime = "uvicorn"``) for those who prefer the widely used server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import traceback
from email.utils import formatdate
from typing import Any

import uvloop

from adapters.http.limits import LIFESPAN_EXTENSION, Limits, Shared, check_open_file_limit
from adapters.http.protocol import App, HttpProtocol
from adapters.http.rules import request_timeout

log = logging.getLogger("triplock.http")


# Young-generation threshold for a serving process (CPython's default is 700). See settle_heap().
YOUNG_GC_THRESHOLD = 10_000


def settle_heap(young_threshold: int = YOUNG_GC_THRESHOLD) -> None:
    """Tune the cycle collector for a process that has finished starting and now serves requests.

    Startup leaves ~100k long-lived objects (modules, pydantic schemas, the catalog);
    :func:`gc.freeze` takes them out of every later collection, and a higher young
    threshold lets the short-lived objects of requests in flight die by reference count
    before a collection has to walk them. Measured under load at 16 connections with the
    audit log on: full collections of ~50 ms each every few seconds, and ~1,300 young
    collections per 10 s, fell to almost none, about 12 µs of CPU per call. Only for
    server processes: a test process that froze its heap would never free it.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)


def enforce_timeouts(conn: HttpProtocol) -> None:
    """One sweep of one connection: the header, body and keep-alive timeouts, counted in sweeps.

    Called every ``Limits.sweep_interval()``. Why counting sweeps instead of a timer per
    request: arming and cancelling one per request measured 2-3 µs of CPU; the stores in
    the parser callbacks cost nothing. Time the server spends waiting on the app (reading
    paused, a response in progress) counts against no timeout.
    """
    if conn.closed:
        return
    ticks = conn.shared.ticks
    if conn.read_paused:
        conn.quiet_sweeps = 0  # the app has not taken what was sent: not the client's delay
    elif conn.in_head:
        conn.head_sweeps += 1
        if conn.head_sweeps > ticks.head:
            conn.reject(*request_timeout("header"))
    elif conn.parsing is not None:
        conn.body_sweeps += 1
        conn.quiet_sweeps += 1
        if conn.body_sweeps > ticks.body or conn.quiet_sweeps > ticks.body_idle:
            conn.reject(*request_timeout("body"))
    elif conn.cycle is not None:
        conn.quiet_sweeps = 0
    else:
        conn.quiet_sweeps += 1
        if conn.quiet_sweeps > (ticks.keepalive if conn.served else ticks.head):
            conn.close()  # idle (or never used): no answer is owed


class LifespanFailure(RuntimeError):
    """The app reported ``lifespan.startup.failed`` (or broke during startup): the server does not start."""


class Lifespan:
    """Runs the app's lifespan protocol in a task of its own, for the life of the server."""

    def __init__(self, app: App, state: dict[str, Any], extensions: dict[str, Any] | None = None) -> None:
        self.app = app
        self.state = state
        self.extensions = extensions or {}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failure: str | None = None
        self.sent_any = False
        self.complete = False  # lifespan.startup.complete seen
        self.supported = True
        self.task: asyncio.Task[None] | None = None

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
            "extensions": self.extensions,
        }
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:
            if not self.sent_any:
                # Apps without lifespan support raise on the unknown scope type: carry on without it.
                self.supported = False
                log.info("the ASGI app does not support the lifespan protocol (%r); continuing without it", exc)
            elif self.failure is not None:
                pass  # reported as lifespan.startup.failed, traceback included: serve() raises with it
            elif not self.complete:
                self.failure = "".join(traceback.format_exception(exc))
            else:
                log.error("lifespan raised", exc_info=exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            if not self.sent_any:
                self.supported = False  # returned at once: nothing to run
        finally:
            self.started.set()
            self.stopped.set()

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent_any = True
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.complete = True
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = str(message.get("message") or "lifespan.startup.failed")
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            log.error("lifespan shutdown failed: %s", message.get("message", ""))
            self.stopped.set()

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer; raise :class:`LifespanFailure` on failure."""
        self.task = asyncio.create_task(self._main(), name="lifespan")
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failure is not None:
            raise LifespanFailure(self.failure)
        if self.supported and not self.complete:
            raise LifespanFailure("the app's lifespan ended during startup without lifespan.startup.complete")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the app to finish it."""
        if self.task is None or not self.supported or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Server:
    """One listening socket serving ``app``; :meth:`serve` runs it until ``stop`` is set."""

    def __init__(
        self,
        app: App,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        sock: socket.socket | None = None,
        limits: Limits | None = None,
        graceful_timeout: float = 5.0,
        settle: bool = False,
    ) -> None:
        self.app = app
        self.settle = settle  # settle_heap() once started: for the process's one server
        self.host = host
        self._port = port
        self.sock = sock
        self.limits = limits or Limits()
        self.graceful_timeout = graceful_timeout
        self.state: dict[str, Any] = {}
        self.shared = Shared(app, self.limits, self.state)
        self._server: asyncio.Server | None = None
        self._date_timer: asyncio.TimerHandle | None = None
        self._sweep_timer: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with ``port=0``), once serving."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    def _tick_date(self) -> None:
        # The date header costs one formatdate a second, not one per request.
        self.shared.date = b"date: %s\r\n" % formatdate(usegmt=True).encode()
        self._date_timer = asyncio.get_running_loop().call_later(1.0, self._tick_date)

    def _sweep(self) -> None:
        # The timeouts of every connection in one pass instead of a timer per request.
        for conn in list(self.shared.connections):
            enforce_timeouts(conn)
        self._sweep_timer = asyncio.get_running_loop().call_later(self.limits.sweep_interval(), self._sweep)

    async def serve(self, started: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
        """Start (lifespan, then listen), set ``started``, run until ``stop`` is set, then stop gracefully.

        Raises :class:`LifespanFailure` if the app's startup fails, ``OSError`` if the address is taken.
        """
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        # The app may read the server's counters (open connections, refusals) for its metrics.
        lifespan = Lifespan(self.app, self.state, {LIFESPAN_EXTENSION: self.shared.counters.extension()})
        await lifespan.startup()
        self._tick_date()
        self._sweep_timer = loop.call_later(self.limits.sweep_interval(), self._sweep)
        try:
            shared = self.shared
            if self.sock is not None:
                self._server = await loop.create_server(lambda: HttpProtocol(shared), sock=self.sock, backlog=2048)
            else:
                self._server = await loop.create_server(
                    lambda: HttpProtocol(shared), self.host, self._port, reuse_address=True, backlog=2048
                )
            # Only now, with the socket bound (a taken port raised above): what the operator reads as "up".
            host, port = self._server.sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            log.info("Triplock listening on http://%s:%d (process %d)", shown, port, os.getpid())
            if self.settle:
                settle_heap()
            if started is not None:
                started.set()
            await stop.wait()
            await self._drain()
        finally:
            for timer in (self._date_timer, self._sweep_timer):
                if timer is not None:
                    timer.cancel()
            await lifespan.shutdown()

    async def _drain(self) -> None:
        """Stop accepting, close idle connections, let requests in flight finish (up to the graceful timeout)."""
        assert self._server is not None
        self._server.close()
        shared = self.shared
        shared.shutting_down = True
        for conn in list(shared.connections):
            conn.shutdown()
        if shared.tasks:
            _, pending = await asyncio.wait(set(shared.tasks), timeout=self.graceful_timeout)
            if pending:
                log.warning("graceful stop: cancelling %d request(s) still running", len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
        for conn in list(shared.connections):
            conn.close()


async def serve_until_signalled(server: Server, started: asyncio.Event | None = None) -> None:
    """Run ``server`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.serve(started=started, stop=stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
    limits: Limits | None = None,
    graceful_timeout: float = 5.0,
) -> None:
    """Serve ``app`` on uvloop until SIGINT/SIGTERM. Raises :class:`LifespanFailure` if startup fails."""
    limits = limits or Limits()
    check_open_file_limit(limits.max_connections)
    server = Server(app, host=host, port=port, sock=sock, limits=limits, graceful_timeout=graceful_timeout, settle=True)
    uvloop.run(serve_until_signalled(server))
