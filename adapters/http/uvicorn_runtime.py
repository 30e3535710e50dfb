"""Serve the gateway with uvicorn instead of Triplock's own server (``server.runtime = "uvicorn"``).

uvicorn is the conservative choice: widely deployed and reviewed. It runs here with the same
event loop and parser as the own server (uvloop, httptools), and with uvicorn's own worker
supervisor when ``workers > 1`` (each worker builds its app from the factory import string).
Of :class:`~adapters.http.limits.Limits` only the keep-alive timeout and the connection
limit map onto uvicorn settings (``timeout_keep_alive``, ``limit_concurrency``: 503 beyond
it); uvicorn has no request head or body timeouts and no header size limit with httptools.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
from typing import Any

from adapters.http.limits import Limits

log = logging.getLogger("triplock.http")


def _announce(sock: socket.socket) -> None:
    """Log "listening" for a bound socket: only ever after the bind succeeded."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("Triplock listening on http://%s:%d (uvicorn, process %d)", shown, port, os.getpid())


def run_uvicorn(
    app: Any,
    *,
    factory_ref: str,
    host: str,
    port: int,
    workers: int,
    limits: Limits,
    graceful_timeout: float,
    log_level: str,
) -> None:
    """Run ``app`` (one process) or ``workers`` processes of ``factory_ref`` under uvicorn until SIGINT/SIGTERM."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    class AnnouncingServer(uvicorn.Server):
        """uvicorn's server, saying "listening" once its sockets are bound (a failed bind exits in startup)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit and self.servers and self.servers[0].sockets:
                _announce(self.servers[0].sockets[0])

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "on",
        "log_level": log_level,
        "access_log": False,  # as the own server: requests are recorded by the gateway's telemetry
        "server_header": False,
        "timeout_keep_alive": math.ceil(limits.keepalive_timeout),
        "limit_concurrency": limits.max_connections,
        "timeout_graceful_shutdown": math.ceil(graceful_timeout),
    }
    if workers > 1:
        # As uvicorn.run does for workers, with the announcement between the bind and the workers.
        config = uvicorn.Config(factory_ref, factory=True, workers=workers, **options)
        sock = config.bind_socket()  # a taken port logs and exits here
        _announce(sock)
        Multiprocess(config, sockets=[sock]).run()
        return
    server = AnnouncingServer(uvicorn.Config(app, **options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(1)  # as uvicorn.run: the start failed (uvicorn logged why)
