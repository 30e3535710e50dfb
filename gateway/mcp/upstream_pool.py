"""The upstream pool: connections to every configured MCP server and the catalog built from them.

Each upstream has one gateway-owned *catalog session* (listing, health,
stateless-era calls). Handshake-era downstream sessions get their own upstream
session per upstream, opened lazily on first use and reused, so requests the
upstream sends to its client reach the right agent (when they should: see
:mod:`gateway.mcp.server_requests`; a request sent to the catalog session has no
client and is refused). A dead upstream drops out of the catalog and is retried
with backoff until it comes back.

The catalog session declares the capabilities the gateway relays, so an upstream lists all its tools
(which need which capabilities: :mod:`gateway.mcp.capability_catalog`); a shared (stdio) session
serves every client and declares none, so its tools that need a capability stay unlisted.

"Down", precisely: the catalog session is closed (a stdio process exited, an HTTP
upstream forgot the session), or the health check failed: every ``health_interval``
seconds (2 s) the pool pings each live upstream on its catalog session, and any failure
to answer within ``min(connect_timeout, 5 s)`` (refused connection, timeout, broken
stream; a JSON-RPC error is an answer) marks it down at once. A down upstream's tools
leave the catalog (clients hear ``list_changed``), its last error is its health, and it
is reconnected with backoff (0.5 s doubling to 30 s) until its tools come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config import UpstreamConfig
from gateway.mcp.capability_catalog import RELAYED, declaration, list_pages, tools_by_capabilities
from gateway.mcp.catalog import CapabilitySet, Catalog, Collision, ToolView, UpstreamListing, Withhold
from gateway.mcp.server_requests import is_server_request
from gateway.mcp.sessions import DownstreamSession, Emit, OnServerRequest, screen_request
from gateway.ports.upstream import (
    ClientIdentity,
    MessageHandler,
    UpstreamConnector,
    UpstreamError,
    UpstreamSession,
)

log = logging.getLogger("triplock.upstreams")

_LIST_METHODS = (
    ("tools/list", "tools", "tools"),
    ("prompts/list", "prompts", "prompts"),
    ("resources/list", "resources", "resources"),
    ("resources/templates/list", "resources", "resourceTemplates"),
)
HEALTH_INTERVAL = 2.0  # seconds between pings of a live upstream
_HEALTH_TIMEOUT = 5.0  # at most this long for a ping's answer (less when connect_timeout is shorter)
_MAX_BACKOFF = 30.0


@dataclass
class UpstreamState:
    config: UpstreamConfig
    connector: UpstreamConnector
    session: UpstreamSession | None = None
    listing: UpstreamListing | None = None
    error: str | None = "not connected yet"
    shared_sessions: bool = False  # stdio: one process serves every downstream session
    last_tools: frozenset[str] = frozenset()  # what it published when last up: names a call may still use
    connecting: asyncio.Lock = field(default_factory=asyncio.Lock)  # one connect (with its probes) at a time

    @property
    def up(self) -> bool:
        return self.session is not None and not self.session.closed and self.listing is not None


CatalogListener = Callable[[Catalog, Catalog], Awaitable[None]]
WithSession = Callable[[UpstreamSession], Awaitable[None]]
ListingHook = Callable[[str, UpstreamListing], Awaitable[None]]
"""Told of each upstream's fresh listing before the catalog is rebuilt from it (pins load here)."""
CollisionHook = Callable[[Collision], object]


class UpstreamPool:
    """Owns upstream connectors, their catalog sessions, and the merged :class:`Catalog`."""

    def __init__(self, configs: Sequence[UpstreamConfig], connectors: Mapping[str, UpstreamConnector], *,
                 shared: frozenset[str] = frozenset(), on_server_request: OnServerRequest | None = None,
                 health_interval: float = HEALTH_INTERVAL) -> None:
        self._states = {c.name: UpstreamState(c, connectors[c.name], shared_sessions=c.name in shared) for c in configs}
        # Told of every request an upstream sends toward a client, relayed or refused (the app audits them).
        self.on_server_request = on_server_request
        self._deferred: set[asyncio.Task[None]] = set()
        self.catalog = Catalog([])
        self.tool_view: ToolView | None = None  # set by the app: the policy's view of each tool
        self.withhold: Withhold | None = None  # set by the app: tools whose pinned definition changed
        self.on_listing: ListingHook | None = None
        self.on_collision: CollisionHook | None = None  # a newly seen name clash (the app audits it)
        self.on_resource_updated: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self.health_interval = health_interval
        self._listeners: list[CatalogListener] = []
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def on_catalog_change(self, listener: CatalogListener) -> None:
        self._listeners.append(listener)

    def config(self, name: str) -> UpstreamConfig:
        return self._states[name].config

    def is_shared(self, name: str) -> bool:
        return name in self._states and self._states[name].shared_sessions

    def health(self) -> dict[str, dict[str, Any]]:
        """Per upstream: up or not, and the last error."""
        return {n: {"up": s.up, "error": None if s.up else s.error} for n, s in self._states.items()}

    def known_tools(self, name: str) -> frozenset[str]:
        """The names ``name`` published when it was last up (its own names, not the exposed ones)."""
        return self._states[name].last_tools

    async def start(self, *, wait: float = 10.0) -> None:
        """Connect every upstream; waits up to ``wait`` seconds, then keeps retrying in the background."""
        for name in self._states:
            self._watchers[name] = asyncio.create_task(self._keep_connected(name), name=f"upstream:{name}")
        first = [asyncio.create_task(self.connect_now(n)) for n in self._states]
        if first:
            await asyncio.wait(first, timeout=wait)

    async def aclose(self) -> None:
        for task in [*self._watchers.values(), *self._refreshing.values(), *self._deferred]:
            task.cancel()
        for state in self._states.values():
            with contextlib.suppress(Exception):
                if state.session:
                    await state.session.aclose()
            with contextlib.suppress(Exception):
                await state.connector.aclose()

    async def connect_now(self, name: str) -> None:
        """Connect ``name`` if it is down, now; serialised with its watcher's retry (never a second session)."""
        async with self._states[name].connecting:
            await self._connect(name)

    async def _connect(self, name: str) -> None:
        state = self._states[name]
        if state.up:
            return
        opened: asyncio.Future[UpstreamSession] = asyncio.get_running_loop().create_future()
        # A shared session serves every client, capable or not: it promises nothing on their behalf.
        identity = ClientIdentity() if state.shared_sessions else ClientIdentity(capabilities=declaration(RELAYED))
        try:
            session = await state.connector.open_session(identity, self._catalog_handler(name, opened))
            opened.set_result(session)
            state.session = session
            await self._refresh(name)
            state.error = None
            log.info("upstream %s is up: %d tools", name, len(state.listing.tools if state.listing else []))
        except UpstreamError as exc:
            state.error = f"{exc.kind}: {exc.detail}"
            log.warning("upstream %s is down (%s); it is out of the catalog until it recovers", name, state.error)
            await self._drop(name)
        finally:
            if not opened.done():
                opened.cancel()

    async def _keep_connected(self, name: str) -> None:
        delay = 0.5
        while True:
            state = self._states[name]
            await asyncio.sleep(self.health_interval if state.up else delay)
            if state.up and await self._healthy(name):
                delay = 0.5
                continue
            if state.listing is not None:
                await self._drop(name)
            await self.connect_now(name)
            delay = 0.5 if state.up else min(delay * 2, _MAX_BACKOFF)

    async def _healthy(self, name: str) -> bool:
        """Ping ``name`` on its catalog session; on any failure, record why and close the session."""
        state = self._states[name]
        if (session := state.session) is None:
            return False
        timeout = min(state.config.connect_timeout, _HEALTH_TIMEOUT)
        try:
            await session.request({"jsonrpc": "2.0", "id": 1, "method": "ping"}, on_message=None, timeout=timeout)
            return True
        except UpstreamError as exc:
            state.error = f"{exc.kind}: {exc.detail}"
        log.warning("upstream %s is down (%s); its tools leave the catalog until it recovers", name, state.error)
        with contextlib.suppress(Exception):
            await session.aclose()
        return False

    async def _drop(self, name: str) -> None:
        state = self._states[name]
        if state.listing is not None:
            state.listing = None
            await self._rebuild()

    def _catalog_handler(self, name: str, opened: asyncio.Future[UpstreamSession],
                         probe: bool = False) -> MessageHandler:
        """Messages to the gateway's own session outside any call (``opened`` resolves to that session): list_changed
        refreshes (not a probe's); resource updates go to ``on_resource_updated``; requests (no client) are refused."""

        async def handle(msg: dict[str, Any]) -> None:
            if str(msg.get("method", "")).endswith("/list_changed") and not probe:
                self.schedule_refresh(name)
            elif msg.get("method") == "notifications/resources/updated" and self.on_resource_updated is not None:
                await self.on_resource_updated(name, msg)  # stateless clients' subscriptions (listen_resources.py)
            elif is_server_request(msg):

                async def refuse(session: UpstreamSession) -> None:
                    await self.screen(session, msg, capabilities=None)

                await self._once_open(opened, refuse)

        return handle

    async def _once_open(self, opened: asyncio.Future[UpstreamSession], then: WithSession) -> None:
        """``then(session)`` once ``opened`` resolves; at once if it has (else later, in a task).

        A session's GET stream runs before ``open_session`` returns, so a message can come first.
        """
        if not opened.done():
            task = asyncio.get_running_loop().create_task(self._after_open(opened, then))
            self._deferred.add(task)
            task.add_done_callback(self._deferred.discard)
        elif not opened.cancelled() and opened.exception() is None:
            await then(opened.result())

    async def _after_open(self, opened: asyncio.Future[UpstreamSession], then: WithSession) -> None:
        await asyncio.wait([opened])
        await self._once_open(opened, then)

    def allows_unsolicited(self, name: str) -> bool:
        """The operator lets ``name``'s requests reach clients outside their calls (``unsolicited_requests``)."""
        state = self._states.get(name)
        return state is not None and state.config.unsolicited_requests

    async def screen(
        self,
        upstream: UpstreamSession,
        msg: dict[str, Any],
        *,
        capabilities: dict[str, Any] | None,
        in_flight: bool = False,
        principal: str | None = None,
        session: str | None = None,
    ) -> bool:
        """``sessions.screen_request`` with the upstream's setting and the pool's reporter.

        For messages that reach no downstream session: stateless calls, the gateway's own sessions.
        """
        return await screen_request(
            upstream,
            msg,
            capabilities=capabilities,
            in_flight=in_flight,
            allow_unsolicited=self.allows_unsolicited(upstream.upstream),
            principal=principal,
            session=session,
            report=self.on_server_request,
        )

    async def relay(
        self, downstream: DownstreamSession, upstream: UpstreamSession, msg: dict[str, Any], emit: Emit | None = None
    ) -> None:
        """``downstream.relay`` with the upstream's setting and the pool's reporter."""
        await downstream.relay(
            upstream,
            msg,
            emit,
            allow_unsolicited=self.allows_unsolicited(upstream.upstream),
            report=self.on_server_request,
        )

    def schedule_refresh(self, name: str) -> None:
        """Refresh one upstream's listing soon (coalesces bursts of list_changed)."""
        task = self._refreshing.get(name)
        if task is None or task.done():
            self._refreshing[name] = asyncio.create_task(self._refresh_quietly(name))

    async def _refresh_quietly(self, name: str) -> None:
        try:
            await self._refresh(name)
        except UpstreamError as exc:
            self._states[name].error = f"{exc.kind}: {exc.detail}"
            await self._drop(name)

    async def _refresh(self, name: str) -> None:
        state = self._states[name]
        session = state.session
        if session is None:
            return
        caps = session.initialize_result.get("capabilities") or {}
        listing = UpstreamListing()
        for method, capability, key in _LIST_METHODS:
            if capability in caps:
                items = await list_pages(session, method, key, state.config.call_timeout)
                setattr(listing, {"resourceTemplates": "templates"}.get(key, key), items)
        if "tools" in caps and not state.shared_sessions:
            listing.tools, listing.offered = await tools_by_capabilities(
                listing.tools, lambda capabilities: self._probe_tools(name, capabilities)
            )
        if self.on_listing is not None:
            await self.on_listing(name, listing)
        state.listing = listing
        state.last_tools = frozenset(str(t.get("name")) for t in listing.tools)
        await self._rebuild()

    async def _probe_tools(self, name: str, capabilities: CapabilitySet) -> list[dict[str, Any]]:
        """``name``'s tools as listed to a client that declares exactly ``capabilities`` (a probe session)."""
        state, opened = self._states[name], asyncio.get_running_loop().create_future()
        identity = ClientIdentity(capabilities=declaration(capabilities))
        session = await state.connector.open_session(identity, self._catalog_handler(name, opened, probe=True))
        opened.set_result(session)
        try:
            return await list_pages(session, "tools/list", "tools", state.config.call_timeout)
        finally:
            with contextlib.suppress(Exception):
                await session.aclose()

    async def rebuild(self) -> None:
        """Recompute the catalog (after a listing change or a policy reload) and tell listeners."""
        await self._rebuild()

    async def _rebuild(self) -> None:
        old = self.catalog
        self.catalog = Catalog(
            [(n, s.config.namespace, s.listing) for n, s in self._states.items() if s.listing is not None],
            self.tool_view,
            namespaces={n: s.config.namespace for n, s in self._states.items()},
            withhold=self.withhold,
        )
        self._report_collisions(old.collisions, self.catalog.collisions)
        for listener in self._listeners:
            await listener(old, self.catalog)

    def _report_collisions(self, before: list[Collision], now: list[Collision]) -> None:
        """Log (and hand to ``on_collision``) each clash not already reported by the last catalog."""
        reported = {(c.kind, c.exposed, c.upstreams) for c in before}  # the same parties, whatever the reason
        for collision in now:
            if (collision.kind, collision.exposed, collision.upstreams) in reported:
                continue
            log.error("name collision: %s; it is exposed from none of them", collision.describe())
            if self.on_collision is not None:
                try:
                    self.on_collision(collision)
                except Exception:  # reporting must never stop the catalog from being served
                    log.exception("collision report failed")

    def upstream_capabilities(self) -> list[dict[str, Any]]:
        """The capabilities each live upstream declared."""
        return [
            s.session.initialize_result.get("capabilities") or {}
            for s in self._states.values()
            if s.up and s.session is not None
        ]

    def catalog_session(self, name: str) -> UpstreamSession:
        """The gateway's own session with ``name`` (used for stateless-era requests)."""
        state = self._states[name]
        if not state.up or state.session is None:
            raise UpstreamError(name, "unreachable", state.error or "down")
        return state.session

    async def session_for(self, downstream: DownstreamSession, name: str) -> UpstreamSession:
        """The upstream session serving ``downstream``, opened on first use and then reused."""
        state = self._states[name]
        if state.shared_sessions:
            return self.catalog_session(name)
        existing = downstream.upstreams.get(name)
        if existing is not None and not existing.closed:
            return existing
        pending = downstream.opening.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[UpstreamSession] = asyncio.get_running_loop().create_future()
        downstream.opening[name] = future

        async def on_server_message(msg: dict[str, Any]) -> None:
            # Outside any call (the upstream's GET stream): a request from here is unsolicited.
            if str(msg.get("method", "")).endswith("/list_changed"):
                self.schedule_refresh(name)
                return
            await self._once_open(future, lambda session: self.relay(downstream, session, msg))

        try:
            identity = ClientIdentity(client_info=downstream.client_info, capabilities=downstream.capabilities,
                                      principal=downstream.principal)
            session = await state.connector.open_session(identity, on_server_message)
            downstream.upstreams[name] = session
            future.set_result(session)
            return session
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            downstream.opening.pop(name, None)
