"""Assemble the gateway: upstream pool, sessions, dispatcher, MCP endpoint, health routes.

The MCP path is routed to the raw-ASGI :class:`~gateway.transport.McpEndpoint`
before anything else (it is the hot path); the remaining routes are Starlette.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.upstream_http import HttpUpstream
from adapters.upstream_stdio import StdioUpstream
from gateway.catalog import Catalog
from gateway.config import Settings, UpstreamConfig
from gateway.dispatch import Dispatcher
from gateway.identity import NoAuth
from gateway.sessions import SessionRegistry
from gateway.transport import McpEndpoint, Receive, Scope, Send
from gateway.upstream import UpstreamConnector
from gateway.upstreams import UpstreamPool

log = logging.getLogger("triplock")


def demo_upstream_config() -> UpstreamConfig:
    """The bundled demo workspace server, run as a stdio child of the gateway."""
    return UpstreamConfig(
        name="demo",
        transport="stdio",
        command=sys.executable,
        args=("-m", "gateway.cli", "demo-upstream", "--transport", "stdio"),
    )


def upstream_configs(settings: Settings) -> list[UpstreamConfig]:
    configs = list(settings.upstreams)
    if settings.demo_upstream and not any(c.name == "demo" for c in configs):
        configs.append(demo_upstream_config())
    return configs


def build_connector(config: UpstreamConfig) -> UpstreamConnector:
    if config.transport == "http":
        return HttpUpstream(config)
    return StdioUpstream(config)


@dataclass
class Gateway:
    """Everything one gateway process runs; ``asgi`` is what uvicorn serves."""

    settings: Settings
    pool: UpstreamPool
    sessions: SessionRegistry
    dispatcher: Dispatcher
    endpoint: McpEndpoint
    web: Starlette

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.settings.server.path:
            await self.endpoint(scope, receive, send)
            return
        await self.web(scope, receive, send)  # type: ignore[arg-type]

    async def startup(self) -> None:
        await self.pool.start()
        self.sessions.start()

    async def shutdown(self) -> None:
        await self.sessions.aclose()
        await self.pool.aclose()


def build_gateway(settings: Settings) -> Gateway:
    """Wire a gateway from validated settings (no I/O until startup)."""
    configs = upstream_configs(settings)
    connectors = {c.name: build_connector(c) for c in configs}
    pool = UpstreamPool(configs, connectors, shared=frozenset(c.name for c in configs if c.transport == "stdio"))
    sessions = SessionRegistry(
        settings.server.session_idle_seconds, owns_upstream_sessions=lambda n: not pool.is_shared(n)
    )
    dispatcher = Dispatcher(pool)
    endpoint = McpEndpoint(settings.server, dispatcher, sessions, NoAuth())

    async def announce_changes(old: Catalog, new: Catalog) -> None:
        # Tell every live session what changed, so clients re-list.
        for kind, method in (
            ("tools", "notifications/tools/list_changed"),
            ("prompts", "notifications/prompts/list_changed"),
        ):
            if old.page(kind, None) != new.page(kind, None):
                for s in sessions.all():
                    with contextlib.suppress(Exception):
                        s.outbox.put_nowait({"jsonrpc": "2.0", "method": method})

    pool.on_catalog_change(announce_changes)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ups = pool.health()
        ready = all(u["up"] for u in ups.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "upstreams": ups}
        return JSONResponse(body, status_code=200 if ready else 503)

    gateway: Gateway

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    web = Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)], lifespan=lifespan)
    gateway = Gateway(settings, pool, sessions, dispatcher, endpoint, web)
    return gateway
