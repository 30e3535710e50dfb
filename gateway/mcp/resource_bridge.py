"""The gateway's one ``subscriptions/listen`` per upstream it speaks 2026-07-28 to.

It carries two things. **List changes**: a 2026-07-28 upstream has no session GET stream, so its
``list_changed`` reach the gateway only on a listen asking ``toolsListChanged`` /
``promptsListChanged`` / ``resourcesListChanged`` (those its capabilities advertise as
``listChanged``); each one refreshes the catalog as a session-era upstream's does (the catalog
change then reaches clients of both eras). The listen is opened once the upstream is up, kept
while it is, and opened again (with a catalog refresh: changes may have fallen in the gap) when
it ends. **Resource updates**, below.

2026-07-28 removed ``resources/subscribe``: a client that wants ``notifications/resources/updated``
opens a ``subscriptions/listen`` stream naming the URIs (``resourceSubscriptions``). A session-era
client still subscribes the old way, so the gateway bridges the two: the listen (on its own
catalog session, shared by every client) has as ``resourceSubscriptions`` the union of the URIs
its subscribers want, and relays each update to every subscriber of that URI, and to no other: a
session client's GET stream, or a 2026-07-28 client's own listen stream
(:mod:`gateway.mcp.listen_resources`). The client's ``resources/subscribe`` is
answered ``{}`` once the upstream has acknowledged a listen that covers the URI (an upstream that
cannot be reached, or does not acknowledge the URI, gets the client an error instead: it is not
subscribed). Changing the set opens the new listen first and closes the old one once the new one
is acknowledged, so no update falls between them.

One stream for both (rather than a second keeper): one connection per upstream, one place that
re-opens it; a change of URIs replaces it (list changes both report while they overlap are
coalesced by the catalog refresh).

The request reaches this module through the guarded path (the router resolves ``resources/
subscribe`` to a Target like ``resources/read``), so it is authorized, decided and audited first.

Bounded: at most :data:`MAX_PER_SESSION` subscriptions per session. A session that ended (DELETE,
idle expiry, shutdown) is noticed within :data:`SWEEP_SECONDS` and its subscriptions dropped; the
upstream listen closes when no session needs it. A listen the upstream ends (graceful close,
network failure, the :data:`LISTEN_SECONDS` deadline) is opened again, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from gateway.mcp.catalog import Catalog
from gateway.mcp.sessions import DownstreamSession
from gateway.mcp.subscriptions import SUBSCRIPTION_ID_KEY, Listener
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.ports.upstream import MODERN_ERA, UpstreamError, UpstreamSession

log = logging.getLogger("triplock.resources")

MAX_PER_SESSION = 64  # resource subscriptions one downstream session may hold across upstreams
LISTEN_SECONDS = 3600.0  # one upstream listen request's deadline; it is opened again when it passes
SWEEP_SECONDS = 5.0  # how often ended sessions are looked for, and a dropped listen at the latest re-opened
_MAX_BACKOFF = 30.0
UPDATED = "notifications/resources/updated"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
# the upstream's capability -> the listen filter field that reports its list changes
LIST_FILTER_OF = (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"),
                  ("resources", "resourcesListChanged"))
_listen_ids = itertools.count(1)
Subscriber = DownstreamSession | Listener  # a session client's session, or a 2026-07-28 client's listen stream


class _Listen:
    """One ``subscriptions/listen`` request to the upstream: fixed list filters and URIs."""

    def __init__(self, uris: frozenset[str], filters: frozenset[str]) -> None:
        self.uris = uris
        self.filters = filters
        self.id = f"triplock-listen-{next(_listen_ids)}"
        self.acked: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self.session: UpstreamSession | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def message(self) -> dict[str, Any]:
        notifications: dict[str, Any] = {name: True for name in sorted(self.filters)}
        if self.uris:
            notifications["resourceSubscriptions"] = sorted(self.uris)
        return {"jsonrpc": "2.0", "id": self.id, "method": "subscriptions/listen",
                "params": {"notifications": notifications}}

    def close(self) -> None:
        """Close the stream (on the 2026-07-28 wire, closing the response is the cancellation)."""
        if self.task is not None:
            self.task.cancel()


def _acknowledged_uris(params: dict[str, Any]) -> frozenset[str]:
    notifications = params.get("notifications")
    uris = notifications.get("resourceSubscriptions") if isinstance(notifications, dict) else None
    return frozenset(u for u in uris if isinstance(u, str)) if isinstance(uris, list) else frozenset()


def without_subscription_id(params: dict[str, Any]) -> dict[str, Any]:
    """An update's params without the upstream listen stream's subscription id (it names Triplock's stream)."""
    out = {k: v for k, v in params.items() if k != "_meta"}
    meta = params.get("_meta")
    if isinstance(meta, dict) and (rest := {k: v for k, v in meta.items() if k != SUBSCRIPTION_ID_KEY}):
        out["_meta"] = rest
    return out


class UpstreamResources:
    """One upstream's listen stream: its list filters, and its subscribers' resource subscriptions."""

    def __init__(self, name: str, pool: UpstreamPool, sweep_seconds: float) -> None:
        self.name = name
        self.pool = pool
        self.sweep_seconds = sweep_seconds
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.listen: _Listen | None = None  # the acknowledged listen whose updates are relayed
        self.pending: _Listen | None = None  # a listen opened to replace it, until acknowledged
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()  # a listen ended: the keeper re-opens it now
        self.keeper: asyncio.Task[None] | None = None
        self.honoured: frozenset[str] = frozenset()  # the URIs the current listen's acknowledgment named

    def wanted_filters(self) -> frozenset[str]:
        """The list filters to ask for: those the upstream advertises ``listChanged`` for, while it is up."""
        session = self._current_session()
        if session is None or session.era != MODERN_ERA:
            return frozenset()  # down, or a session-era upstream (it sends list_changed on its GET stream)
        caps = session.initialize_result.get("capabilities") or {}
        return frozenset(name for cap, name in LIST_FILTER_OF
                         if isinstance(c := caps.get(cap), dict) and c.get("listChanged"))

    def _current_session(self) -> UpstreamSession | None:
        try:
            return self.pool.catalog_session(self.name)
        except UpstreamError:
            return None

    # -- the set of URIs -------------------------------------------------------------------------
    async def sync(self) -> str | None:
        """Make the upstream listen cover exactly the subscribed URIs (under ``lock``); None, or why not."""
        wanted, filters = frozenset(self.subscribers), self.wanted_filters()
        current = self.listen
        if (current is not None and current.alive and current.uris == wanted and current.filters == filters
                and (current.session is None or current.session is self._current_session())):
            return None
        if not wanted and not filters:
            self.listen = None
            if current is not None:
                current.close()
            return None
        new = _Listen(wanted, filters)
        self.pending = new
        new.task = asyncio.get_running_loop().create_task(self._run(new), name=f"listen:{self.name}")
        timeout = self.pool.config(self.name).connect_timeout
        try:
            async with asyncio.timeout(timeout):
                honoured = await asyncio.shield(new.acked)
        except TimeoutError:
            new.close()
            return f"it did not acknowledge subscriptions/listen within {timeout:g}s"
        except UpstreamError as exc:
            new.close()
            return f"{exc.kind}: {exc.detail}"
        finally:
            self.pending = None
        self.listen, self.honoured = new, honoured
        if current is not None:
            current.close()
        if filters and (current is None or not current.alive):
            self.pool.schedule_refresh(self.name)  # a list may have changed while no listen was open
        missing = wanted - honoured
        if missing:
            return f"its subscriptions/listen did not take resourceSubscriptions for {sorted(missing)[0]!r}"
        return None

    async def _run(self, listen: _Listen) -> None:
        """One listen request, until the upstream ends it or it is closed."""
        try:
            session = self.pool.catalog_session(self.name)
            listen.session = session

            async def on_message(message: dict[str, Any]) -> None:
                await self._on_message(listen, message)

            reply = await session.request(listen.message(), on_message=on_message, timeout=LISTEN_SECONDS)
            if not listen.acked.done():
                error = reply.get("error")
                why = error.get("message") if isinstance(error, dict) else "it ended the stream first"
                listen.acked.set_exception(UpstreamError(self.name, "protocol", f"subscriptions/listen: {why}"))
        except UpstreamError as exc:
            if not listen.acked.done():
                listen.acked.set_exception(exc)
            else:
                log.info("upstream %s ended its resource subscription stream (%s); listening again", self.name,
                         exc.detail)
        finally:
            if not listen.acked.done():
                listen.acked.cancel()
            elif not listen.acked.cancelled():
                listen.acked.exception()  # retrieved: sync() may have stopped waiting
            self.wake.set()

    async def _on_message(self, listen: _Listen, message: dict[str, Any]) -> None:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        method = message.get("method")
        if method == ACKNOWLEDGED:
            if not listen.acked.done():
                listen.acked.set_result(_acknowledged_uris(params))
            return
        if isinstance(method, str) and method.endswith("/list_changed"):
            if listen.filters:
                self.pool.schedule_refresh(self.name)  # coalesced: two overlapping listens refresh once
            return
        if method != UPDATED:
            return  # nothing else was asked for on this stream
        uri = params.get("uri")
        if not isinstance(uri, str) or uri not in listen.uris:
            return
        current = self.listen
        if listen is not current and not (listen is self.pending and (current is None or uri not in current.uris)):
            return  # the old and the new stream both report it while they overlap: once is enough
        plain = without_subscription_id(params)
        note = {"jsonrpc": "2.0", "method": UPDATED, "params": plain}
        for subscriber in list(self.subscribers.get(uri, ())):
            if subscriber.closed:
                continue
            if isinstance(subscriber, Listener):
                subscriber.offer(subscriber.tagged(UPDATED, plain))
            elif listen.session is not None:
                await self.pool.relay(subscriber, listen.session, note)

    # -- keeping it running ---------------------------------------------------------------------------
    def ensure_keeper(self) -> None:
        if self.keeper is None or self.keeper.done():
            self.keeper = asyncio.get_running_loop().create_task(self._keep(), name=f"resources:{self.name}")

    async def _keep(self) -> None:
        """Drop ended sessions; re-open a listen that ended; stop when nothing is wanted of it."""
        delay = 0.5
        while True:
            wait = self.sweep_seconds if self.listen is not None and self.listen.alive else delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()
            self.wake.clear()
            async with self.lock:
                self.prune()
                why = await self.sync()
                if not self.subscribers and not self.wanted_filters():
                    self.keeper = None
                    return
            if why is None:
                delay = 0.5
            else:
                log.warning("upstream %s: cannot listen for resource updates (%s); retrying", self.name, why)
                delay = min(delay * 2, _MAX_BACKOFF)

    def prune(self) -> None:
        """Forget the subscriptions of sessions that have ended."""
        for uri in list(self.subscribers):
            live = {s for s in self.subscribers[uri] if not s.closed}
            if live:
                self.subscribers[uri] = live
            else:
                del self.subscribers[uri]

    def close(self) -> None:
        for listen in (self.listen, self.pending):
            if listen is not None:
                listen.close()
        if self.keeper is not None:
            self.keeper.cancel()


class ResourceBridge:
    """2026-07-28 upstreams' listen streams: their list changes, and the resource subscriptions they carry."""

    def __init__(self, pool: UpstreamPool, *, per_session: int = MAX_PER_SESSION,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.pool = pool
        self.per_session = per_session
        self.sweep_seconds = sweep_seconds
        self._upstreams: dict[str, UpstreamResources] = {}
        pool.on_catalog_change(self._on_catalog_change)

    async def _on_catalog_change(self, old: Catalog, new: Catalog) -> None:
        """An upstream came up, went down or changed: its keeper listens for list changes, or re-checks."""
        for name, health in self.pool.health().items():
            state = self._upstreams.get(name)
            if health["up"] and (state is None or state.keeper is None):
                state = self._of(name)
                if state.wanted_filters():
                    state.ensure_keeper()
            if state is not None and state.keeper is not None:
                state.wake.set()  # a new catalog session, or changed capabilities: the keeper re-syncs

    def _of(self, upstream: str) -> UpstreamResources:
        state = self._upstreams.get(upstream)
        if state is None:
            state = self._upstreams[upstream] = UpstreamResources(upstream, self.pool, self.sweep_seconds)
        return state

    def held_by(self, downstream: Subscriber) -> int:
        """How many resource subscriptions ``downstream`` holds here, across upstreams."""
        return sum(1 for s in self._upstreams.values() for subs in s.subscribers.values() if downstream in subs)

    async def subscribe(self, downstream: DownstreamSession, upstream: str, uri: str) -> str | None:
        """Subscribe ``downstream`` to ``uri`` of ``upstream``; None when done, else why it is not subscribed."""
        state = self._of(upstream)
        async with state.lock:
            subs = state.subscribers.get(uri)
            if subs is not None and downstream in subs:
                return None  # already subscribed: a session-era server answers {} again
            if self.held_by(downstream) >= self.per_session:
                return (f"Too many resource subscriptions: this session holds {self.per_session} (the limit);"
                        " unsubscribe from one first")
            state.subscribers.setdefault(uri, set()).add(downstream)
            why = await state.sync()
            if why is not None:
                subs = state.subscribers.get(uri)
                if subs is not None:
                    subs.discard(downstream)
                    if not subs:
                        del state.subscribers[uri]
                if state.subscribers:
                    state.ensure_keeper()  # the old listen serves the others; if it ended, the keeper re-opens it
                return f"Upstream {upstream!r} could not subscribe to {uri}: {why}"
        state.ensure_keeper()
        return None

    async def subscribe_many(self, subscriber: Listener, upstream: str, uris: list[str]) -> list[str]:
        """Add a 2026-07-28 client's listen to ``uris`` of ``upstream`` in one change of the upstream listen.

        Returns the URIs the upstream acknowledged (in the given order); the others are not held.
        """
        state = self._of(upstream)
        async with state.lock:
            for uri in uris:
                state.subscribers.setdefault(uri, set()).add(subscriber)
            why = await state.sync()
            listen = state.listen
            live = listen.uris & state.honoured if listen is not None and listen.alive else frozenset()
            accepted = [uri for uri in uris if uri in live]
            for uri in set(uris) - set(accepted):
                subs = state.subscribers.get(uri)
                if subs is not None:
                    subs.discard(subscriber)
                    if not subs:
                        del state.subscribers[uri]
        if why is not None:
            log.warning("upstream %s: a listen's resource subscriptions were not all taken (%s)", upstream, why)
        state.ensure_keeper()  # narrows the upstream listen to what is held, if the upstream refused some
        if len(accepted) < len(uris):
            state.wake.set()
        return accepted

    async def unsubscribe(self, downstream: DownstreamSession, upstream: str, uri: str) -> None:
        """Drop ``downstream``'s subscription to ``uri``; the upstream listen narrows or closes."""
        state = self._upstreams.get(upstream)
        if state is None:
            return
        async with state.lock:
            subs = state.subscribers.get(uri)
            if subs is None or downstream not in subs:
                return
            subs.discard(downstream)
            if subs:
                return
            del state.subscribers[uri]
            why = await state.sync()
        if why is not None:  # the client is unsubscribed here whatever the upstream says; the keeper retries
            log.warning("upstream %s: could not narrow its resource subscription stream (%s)", upstream, why)
            state.wake.set()

    def forget_session(self, downstream: Subscriber) -> None:
        """A session (or listen stream) ended: its subscriptions go now (the sweep would find it within
        SWEEP_SECONDS)."""
        for state in self._upstreams.values():
            held = [uri for uri, subs in state.subscribers.items() if downstream in subs]
            for uri in held:
                state.subscribers[uri].discard(downstream)
                if not state.subscribers[uri]:
                    del state.subscribers[uri]
            if held:
                state.wake.set()  # the keeper narrows or closes the listen

    def listening(self, upstream: str) -> frozenset[str] | None:
        """The URIs the open listen to ``upstream`` covers (None: no listen open)."""
        state = self._upstreams.get(upstream)
        listen = state.listen if state is not None else None
        return listen.uris if listen is not None and listen.alive else None

    def aclose(self) -> None:
        for state in self._upstreams.values():
            state.close()
