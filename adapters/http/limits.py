"""What keeps the HTTP server bounded: its timeouts and size limits, and what it counts when they bite.

:class:`Limits` are the settings (``[server]`` in the gateway's config maps onto them);
:class:`Counters` are what the server counts for metrics (open connections, refusals by
reason), handed to the app in the lifespan scope (see :data:`LIFESPAN_EXTENSION`).

Timeouts are enforced by one sweep over all connections every :meth:`Limits.sweep_interval`
seconds, not by a timer per request: arming and cancelling a timer measured 2-3 µs of CPU
per request, while counting sweeps costs an attribute store. :class:`Ticks` turns each
timeout into a number of sweeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("triplock.http")

# The ASGI lifespan scope's ``extensions`` key under which the server offers its counters.
LIFESPAN_EXTENSION = "triplock.http_server"
# Why the server refused or cut a connection (the label values of the refusal counter).
REFUSAL_REASONS = ("header_timeout", "body_timeout", "header_too_large", "bad_request", "too_many_connections")

# A response sent before its request body was read (a 401, a 413): the rest of a body up to
# this size is read and discarded so the connection can be kept (Go's net/http uses 256 KiB);
# a larger or unsized body closes the connection instead.
DRAIN_LIMIT = 256 * 1024
# Closing with unread input makes the kernel send a reset, and a client that is still sending
# may then never see the answer. So the server shuts its write side and keeps reading (and
# discarding) until the client closes or this many seconds pass.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """The server's bounds. Defaults are those of ``[server]`` in the gateway's config (see its docs)."""

    header_timeout: float = 10.0  # first byte of a request head to its end: then 408 and close
    body_idle_timeout: float = 10.0  # silence in the middle of a request body: then 408 and close
    body_timeout: float = 30.0  # a whole request body (time the server waits on the app is not counted)
    keepalive_timeout: float = 75.0  # an idle kept-alive connection is closed after this
    max_connections: int = 4096  # open connections per process; beyond: 503 with Retry-After
    max_header_bytes: int = 65536  # request line and header fields; beyond: 431

    def sweep_interval(self) -> float:
        """Seconds between two sweeps: a quarter of the shortest timeout, at most one second."""
        shortest = min(self.header_timeout, self.body_idle_timeout, self.body_timeout, self.keepalive_timeout)
        return max(0.01, min(1.0, shortest / 4))

    def ticks(self) -> Ticks:
        """Each timeout as the number of sweeps after which it has certainly passed."""
        interval = self.sweep_interval()

        def n(seconds: float) -> int:
            return math.ceil(seconds / interval)

        return Ticks(n(self.header_timeout), n(self.body_idle_timeout), n(self.body_timeout),
                     n(self.keepalive_timeout))


@dataclass(frozen=True)
class Ticks:
    """Timeouts in sweeps. A count that exceeds one means at least that timeout has passed (at most two sweeps more)."""

    head: int
    body_idle: int
    body: int
    keepalive: int


class Counters:
    """What one server counts for metrics; read by the app through :meth:`extension`."""

    def __init__(self, connections: set[Any]) -> None:
        self._connections = connections  # the server's live connection set
        self.refusals = dict.fromkeys(REFUSAL_REASONS, 0)

    def refused(self, reason: str) -> None:
        """One connection refused or cut for ``reason`` (one of :data:`REFUSAL_REASONS`)."""
        self.refusals[reason] += 1

    def open_connections(self) -> int:
        """Client connections open right now (lingering ones included)."""
        return len(self._connections)

    def refusal_counts(self) -> dict[str, int]:
        """A copy of the refusal counts by reason."""
        return dict(self.refusals)

    def extension(self) -> dict[str, Any]:
        """The lifespan scope extension: ``connections()`` and ``refusals()`` callables."""
        return {"connections": self.open_connections, "refusals": self.refusal_counts}


class Shared:
    """What every connection of one server shares: the app, limits, counters, live connections and tasks."""

    def __init__(self, app: Callable[..., Any], limits: Limits, state: dict[str, Any]) -> None:
        self.app = app
        self.limits = limits
        self.max_header_bytes = limits.max_header_bytes
        self.ticks = limits.ticks()
        self.state = state
        self.date = b""  # the whole "date: ...\r\n" line, refreshed once a second by the server
        self.connections: set[Any] = set()  # the HttpProtocol instances
        self.counters = Counters(self.connections)
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False


def check_open_file_limit(max_connections: int) -> None:
    """Warn when the process may not open ``max_connections`` sockets: each one is a file descriptor."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < max_connections + 256:
        log.warning(
            "the open-file limit (%d) is below server.max_connections (%d) plus room for upstreams and files:"
            " raise it (ulimit -n, LimitNOFILE=) or lower max_connections", soft, max_connections
        )
