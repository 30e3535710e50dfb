"""Assemble the gateway: upstream pool, sessions, router, guarded path, MCP endpoint, health routes.

The MCP path is routed to the raw-ASGI :class:`~gateway.mcp.endpoint.McpEndpoint`
before anything else (it is the hot path); the remaining routes are Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.audit_sinks import build_sinks
from adapters.notifiers import notifier_from_env
from adapters.upstreams.oauth_authorization_code import AuthorizationCodeTokenSource
from adapters.upstreams.oauth_signin import AuthorizationCodeSignIn
from adapters.upstreams.stdio import StdioUpstream
from adapters.upstreams.streamable_http import HttpUpstream
from gateway.approvals.api import ApprovalsUISettings
from gateway.approvals.api import build_routes as approval_routes
from gateway.approvals.pins_api import PinAdmins, PinsApi
from gateway.config import Settings, StoreConfig, UpstreamConfig
from gateway.guard.hold import Approvals, HoldSettings
from gateway.guard.pin_book import PinBook
from gateway.guard.pipeline import GuardedPath
from gateway.guard.policy_runtime import PolicyRuntime
from gateway.identity import oauth_metadata, state_api, suspension_api, upstream_signin_api
from gateway.identity.authenticators import build_authenticator
from gateway.identity.origin import OriginGuard, OriginPolicy
from gateway.identity.roles import AccessPolicy
from gateway.mcp.catalog import Catalog
from gateway.mcp.endpoint import McpEndpoint, Receive, Scope, Send
from gateway.mcp.rate_limit import RateLimiter
from gateway.mcp.router import Router
from gateway.mcp.sessions import SessionRegistry
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.ports.grants import GrantStore, UpstreamSignIn
from gateway.ports.store import PendingApproval, Store, StoreUnavailable
from gateway.ports.upstream import UpstreamConnector
from gateway.telemetry.audit import EventType
from gateway.telemetry.observers import Observability, build_observability
from policy import PolicyError

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


def build_store(cfg: StoreConfig) -> Store:
    """The configured state store adapter (not started)."""
    if cfg.kind == "redis":
        from adapters.stores.redis_store import RedisStore

        return RedisStore(cfg.redis_url, socket_timeout=cfg.timeout, connect_timeout=min(1.0, cfg.timeout),
                          health_interval=cfg.health_interval)
    if cfg.kind == "memory":
        from adapters.stores.memory_store import MemoryStore

        return MemoryStore()
    from adapters.stores.sqlite_store import SqliteStore

    return SqliteStore(cfg.path, busy_timeout=cfg.timeout, health_interval=cfg.health_interval)


def build_connector(config: UpstreamConfig, on_limit: Callable[[str, str], None] | None = None,
                    grants: GrantStore | None = None) -> UpstreamConnector:
    """The upstream's transport; ``on_limit(limit, upstream)`` hears of every answer a size limit refused;
    ``grants`` is where an authorization code upstream's grant lives (the store)."""
    if config.transport == "http":
        return HttpUpstream(config, on_limit, grants)
    return StdioUpstream(config, on_limit)


def build_signins(connectors: dict[str, UpstreamConnector], store: Store, base_url: str) -> dict[str, UpstreamSignIn]:
    """The sign-in of every upstream with ``oauth_grant = 'authorization_code'``, sharing its token source."""
    served = base_url + upstream_signin_api.METADATA_PATH if base_url.startswith("https://") else None
    return {name: AuthorizationCodeSignIn(c.config, store, c.token_source, metadata_url=served)
            for name, c in connectors.items()
            if isinstance(c, HttpUpstream) and isinstance(c.token_source, AuthorizationCodeTokenSource)}


@dataclass
class Gateway:
    """Everything one gateway process runs; the instance itself is the ASGI app the HTTP server serves."""

    settings: Settings
    pool: UpstreamPool
    sessions: SessionRegistry
    router: Router
    endpoint: McpEndpoint
    web: Starlette
    store: Store
    policy: PolicyRuntime
    guard: GuardedPath
    obs: Observability | None = None
    pins: PinBook | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]] | None] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.settings.server.path:
            await self.endpoint(scope, receive, send)
            return
        if scope["type"] == "lifespan" and self.obs is not None:
            # Triplock's own HTTP server offers its counters here (adapters.http.limits.LIFESPAN_EXTENSION).
            server = scope.get("extensions", {}).get("triplock.http_server")
            if server is not None:
                self.obs.telemetry.metrics.observe_http_server(server["connections"], server["refusals"])
        await self.web(scope, receive, send)  # type: ignore[arg-type]

    async def startup(self) -> None:
        if self.obs is not None:
            await self.obs.startup()  # audit chain tail + OTLP metrics thread
        await self.store.start()
        await self.pool.start()
        self.sessions.start()
        self.background.append(asyncio.create_task(self._expire_approvals(), name="approval-expiry"))
        self.background.append(asyncio.create_task(self._watch_policy(), name="policy-watch"))
        if self.pins is not None:
            self.background.append(asyncio.create_task(self._watch_pins(self.pins), name="pin-watch"))

    async def _watch_pins(self, pins: PinBook, interval: float = 1.0) -> None:
        """Pins re-approved through another process (or the CLI against it) reach this catalog within a second."""
        while True:
            await asyncio.sleep(interval)
            await pins.watch()

    async def shutdown(self) -> None:
        for task in self.background:
            task.cancel()
        self.router.forwarder.resources.aclose()  # the listen keepers of 2026-07-28 upstreams, before the pool goes
        # Sessions stay in the store (with their legs): clients continue on the next process or replica.
        await self.sessions.aclose()
        await self.pool.aclose()
        await self.store.aclose()
        for close in self.closers:
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _watch_policy(self, interval: float = 1.0) -> None:
        """Hot reload: when the policy file changes, load it and swap it in; a bad file keeps the old one."""
        stamp = self.policy.file_stamp()
        while True:
            await asyncio.sleep(interval)
            now = self.policy.file_stamp()
            if now is None or now == stamp:
                continue
            stamp = now
            try:
                old, new = self.policy.reload()
            except PolicyError as exc:
                log.error("policy file changed but is invalid; keeping revision %s:\n%s", self.policy.revision, exc)
                if self.obs is not None:
                    self.obs.audit.emit(EventType.CONFIG_RELOADED, ok=False, policy_revision=self.policy.revision,
                                        reason=str(exc)[:500])
                continue
            log.info("policy reloaded: %s -> %s", old, new)
            self.guard.state.forget_pins()
            await self.pool.rebuild()  # tools/list now shows the new policy's view
            if self.obs is not None:
                self.obs.audit.emit(EventType.CONFIG_RELOADED, ok=True, policy_revision=new, previous_revision=old)

    async def _expire_approvals(self) -> None:
        """Undecided approvals past their expiry count as denied; sweep them regularly."""
        while True:
            await asyncio.sleep(30)
            try:
                expired = await self.store.expire_due(time.time())
            except StoreUnavailable:
                continue
            for approval in expired:
                log.info("approval %s expired undecided", approval.id)
                if self.obs is not None:
                    self.obs.audit.emit(
                        EventType.APPROVAL_EXPIRED,
                        approval_id=approval.id,
                        principal=approval.principal,
                        session=approval.session_id,
                        upstream=approval.upstream,
                        tool=approval.tool,
                        args_hash=approval.args_hash,
                        policy_revision=approval.policy_revision,
                    )


def build_gateway(settings: Settings) -> Gateway:
    """Wire a gateway from validated settings (no I/O until startup)."""
    configs = upstream_configs(settings)
    # Size limits are counted in the metrics built below (called only once serving).
    store = build_store(settings.store)
    connectors = {c.name: build_connector(c, lambda lim, up: obs.telemetry.metrics.limit_exceeded(lim, up), store)
                  for c in configs}
    pool = UpstreamPool(configs, connectors, shared=frozenset(c.name for c in configs if c.transport == "stdio"))
    srv = settings.server
    base_url = upstream_signin_api.gateway_base_url(srv.public_url, srv.host, srv.port, srv.path)
    signins = build_signins(connectors, store, base_url)
    policy = PolicyRuntime(settings.policy)
    pool.tool_view = policy.tool_view
    sessions = SessionRegistry(
        settings.server.session_idle_seconds, owns_upstream_sessions=lambda n: not pool.is_shared(n), store=store,
        max_per_principal=settings.limits.sessions_per_principal,
    )
    access = AccessPolicy.from_config(settings.auth)
    authenticator = build_authenticator(settings, access)
    # Approvers are principals: approver tokens, plus (unless auth.mode is none) any principal whose roles approve.
    ui = ApprovalsUISettings.from_settings(settings, authenticator=authenticator, access=access)
    notifier = notifier_from_env()
    hold = HoldSettings(
        hold_wait=settings.approvals.hold_wait,
        approval_ttl=settings.approvals.ttl,
        console_url=ui.console_url,
        end_user_categories=frozenset(settings.approvals.end_user_categories),
    )
    on_created = None
    if notifier is not None:
        active = notifier

        def on_created(approval: PendingApproval) -> None:
            active.approval_requested(approval, ui.console_url)

    approvals = Approvals(store, hold, on_created=on_created)
    obs = build_observability(settings, build_sinks(settings.audit, settings.store.redis_url))
    obs.watch_approvals(store)  # hold metrics read the store calls are held in (pending, every decision)
    approvals.audit = obs.audit.emit  # a hold the client abandoned is audited (triplock.approval.abandoned)
    obs.telemetry.metrics.observe_sessions(lambda: len(sessions))
    # Every request an upstream sends toward a client (sampling...), relayed or refused, is audited.
    pool.on_server_request = lambda **fields: obs.audit.emit(EventType.UPSTREAM_REQUEST, **fields)
    router = Router(pool, telemetry=obs.telemetry)
    guard = GuardedPath(router.forwarder.forward_raw, policy, store, approvals, access=access, observers=obs.observers,
                        after_record=obs.after_record,  # durable audit: an answer waits for its record
                        on_state_write_failed=obs.telemetry.metrics.state_write_failed)
    router.guard = guard
    sessions.on_closed = guard.forget_session  # a closed session's legs leave the store with it
    sessions.on_ended = router.forwarder.resources.forget_session  # and its subscriptions at once
    router.visibility_key = access.roles_of  # what the guard lets a caller see depends on its roles only
    endpoint = McpEndpoint(settings.server, router, sessions, authenticator)
    if settings.limits.requests_per_second:
        endpoint.limiter = RateLimiter(settings.limits.requests_per_second, settings.limits.request_burst)
    # Pins: a tool whose definition changed is withheld from listings until an admin re-approves it.
    pins = PinBook(store, policy, entries=lambda: pool.catalog.tools.values(), rebuild=pool.rebuild,
                   repin=guard.state.set_pin, forget_cached=guard.state.forget_pins, audit=obs.audit.emit)
    pool.withhold, pool.on_listing = pins.withhold, pins.on_listing
    pool.on_collision = lambda c: obs.audit.emit(EventType.CATALOG_COLLISION, kind=c.kind, name=c.exposed,
                                                 upstreams=list(c.upstreams), reason=c.reason)
    pin_admins = PinAdmins(authenticator, access, local_dev=settings.auth.mode == "none")

    async def announce_changes(old: Catalog, new: Catalog) -> None:
        for name in sorted(set(new.upstreams) - set(old.upstreams)):
            obs.audit.emit(EventType.UPSTREAM_ADDED, upstream=name, tools=len(new.tools))
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
        store_ok = await store.ping()
        # A full audit backlog refuses guarded calls (fail closed): not ready either.
        ready = store_ok and all(u["up"] for u in ups.values()) and not obs.audit.full
        # Why not: each down upstream by name and reason, each refused name collision by its upstreams.
        problems = [f"upstream {n!r} is down: {u['error']}" for n, u in ups.items() if not u["up"]]
        problems += [c.describe() for c in pool.catalog.collisions]
        if not configs:
            # Nothing to serve: a balancer must not send agents to a gateway without tools.
            problems.append("no upstreams configured: add an [[upstreams]] entry (or demo_upstream = true)")
        ready = ready and not problems
        body: dict[str, Any] = {
            "status": "ready" if ready else "not ready",
            "problems": problems,
            "upstreams": ups,
            "collisions": [{"kind": c.kind, "name": c.exposed, "upstreams": list(c.upstreams)}
                           for c in pool.catalog.collisions],
            "store": {"kind": settings.store.kind, "ok": store_ok},
            "audit": obs.audit.health(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    reconnecting: set[asyncio.Task[None]] = set()

    def reconnect_now(name: str) -> None:
        """An upstream was just signed in for: connect it now instead of at its next backoff retry."""
        task = asyncio.get_running_loop().create_task(pool.connect_now(name))
        reconnecting.add(task)
        task.add_done_callback(reconnecting.discard)

    gateway: Gateway

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *approval_routes(store, ui, notifier=notifier, audit=obs.audit.emit, pins=pins, pin_admins=pin_admins,
                         session_history=guard.memory.history),
        *PinsApi(pins, pin_admins).routes(),
        Route(settings.telemetry.metrics_path, obs.telemetry.metrics.endpoint),
        *oauth_metadata.routes(settings),
        *suspension_api.routes(store, authenticator, access, audit=obs.audit.emit),
        *state_api.routes(guard.memory.show, guard.memory.clear, authenticator, access, audit=obs.audit.emit),
        *upstream_signin_api.routes(signins, store, base_url, authenticator, access, audit=obs.audit.emit,
                                    on_connected=reconnect_now),
    ]
    # Host, Origin and cross-site writes are checked before any route runs, in every auth mode.
    web_origins = OriginPolicy.from_config(settings.server, urls=(ui.console_url,))
    web = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(OriginGuard, policy=web_origins)])
    gateway = Gateway(settings, pool, sessions, router, endpoint, web, store, policy, guard)
    gateway.obs, gateway.pins = obs, pins
    gateway.closers.append(obs.shutdown)
    gateway.closers.append(getattr(authenticator, "aclose", None))
    gateway.closers.extend(s.aclose for s in signins.values())
    if notifier is not None:
        gateway.closers.append(notifier.aclose)
    return gateway


def app_from_env() -> Gateway:
    """ASGI factory for worker processes (adapters.http.workers): the config file named by TRIPLOCK_CONFIG_FILE."""
    from pathlib import Path

    from gateway.config import load_settings

    path = os.environ.get("TRIPLOCK_CONFIG_FILE") or None
    return build_gateway(load_settings(Path(path) if path else None))
