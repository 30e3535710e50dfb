"""Serve the gateway with uvicorn instead of Triplock's own server (``server.runtime = "uvicorn"``).

uvicorn is the conservative choice: widely deployed and reviewed. It runs here with the same
event loop and parser as the own server (uvloop, httptools), and with uvicorn's own worker
supervisor when ``workers > 1`` (each worker builds its app from the factory import string).
Of :class:`~adapters.http.limits.Limits` only the keep-alive timeout and the connection
limit map onto uvicorn settings (``timeout_keep_alive``, ``limit_concurrency``: 503 beyond
it); uvicorn has no request head or body timeouts and no header size limit with httptools.
"""

from __future__ import annotations

import math
from typing import Any

from adapters.http.limits import Limits


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
        uvicorn.run(factory_ref, factory=True, workers=workers, **options)
    else:
        uvicorn.run(app, **options)
