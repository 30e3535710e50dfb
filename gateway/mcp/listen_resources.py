"""``resourceSubscriptions`` of 2026-07-28 clients' ``subscriptions/listen`` streams.

A listen may name up to :data:`MAX_PER_LISTEN` URIs (the rest are left out). Each is checked on
the guarded path exactly as ``resources/subscribe`` is: ``modern.py`` has the router handle one
``resources/subscribe`` per URI (resolved to its upstream, authorized, decided, audited). That
request never reaches the upstream: the guarded path's last step (:func:`admit`, from
``UpstreamForwarder.forward_raw``) only notes which upstream owns the URI. Once every URI is
checked, the accepted ones are subscribed at their upstreams:

* a 2026-07-28 upstream: added to the union of its one listen stream
  (:meth:`gateway.mcp.resource_bridge.ResourceBridge.subscribe_many`);
* a session-era upstream: ``resources/subscribe`` on the gateway's catalog session, which every
  stateless client shares, so once per URI however many listeners hold it. The upstream's
  ``notifications/resources/updated`` on that session (``UpstreamPool.on_resource_updated``) go
  to the listeners holding that URI and to no other; the last one to let go sends
  ``resources/unsubscribe``. When the catalog session is replaced (the upstream reconnected),
  the held URIs are subscribed again on the new one.

A URI the guard refuses (unknown, not the caller's, denied or held by policy) or its upstream does
not take is left out of the acknowledgment, and nothing is relayed for it. A closed listen stream
lets go of everything it held at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from contextvars import ContextVar
from typing import Any

from gateway.mcp.catalog import Catalog
from gateway.mcp.jsonrpc import INTERNAL_ERROR, error_response, result_response
from gateway.mcp.resource_bridge import UPDATED, ResourceBridge
from gateway.mcp.subscriptions import MAX_LISTEN_URIS, Listener
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.ports.upstream import MODERN_ERA, UpstreamError, UpstreamSession

log = logging.getLogger("triplock.resources")

MAX_PER_LISTEN = MAX_LISTEN_URIS  # resource URIs one listen stream may hold (as many as a session may subscribe)
CHECK_METHOD = "resources/subscribe"  # what each URI is checked as (2026-07-28 clients cannot send it themselves)
# While a listen's URIs are checked: URI -> the upstream that owns it, filled by the guarded path's last step.
ADMITTED: ContextVar[dict[str, str] | None] = ContextVar("triplock_listen_admitted", default=None)
_ids = itertools.count(1)


def requested_uris(notifications: Any) -> list[str]:
    """The URIs a listen's filter names: strings, each once, in order, at most :data:`MAX_PER_LISTEN`."""
    uris = notifications.get("resourceSubscriptions") if isinstance(notifications, dict) else None
    if not isinstance(uris, list):
        return []
    return list(dict.fromkeys(u for u in uris if isinstance(u, str)))[:MAX_PER_LISTEN]


def check_request(uri: str, n: int) -> dict[str, Any]:
    """The ``resources/subscribe`` request one URI of a listen is checked as."""
    return {"jsonrpc": "2.0", "id": f"listen-check-{n}", "method": CHECK_METHOD, "params": {"uri": uri}}


def admit(upstream: str, msg: dict[str, Any]) -> dict[str, Any]:
    """The guarded path's last step for a listen's check: the URI's owner is noted, nothing is sent upstream."""
    admitted = ADMITTED.get()
    params = msg.get("params")
    uri = params.get("uri") if isinstance(params, dict) else None
    if admitted is None or not isinstance(uri, str):  # fail closed: only a listen's check may get here
        return error_response(msg.get("id"), INTERNAL_ERROR, f"{CHECK_METHOD} is not part of 2026-07-28")
    admitted[uri] = upstream
    return result_response(msg.get("id"), {})


class CatalogSessionSubscriptions:
    """Listeners' subscriptions to session-era upstreams, held on the gateway's shared catalog sessions."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.holders: dict[tuple[str, str], set[Listener]] = {}  # (upstream, uri) -> the listeners holding it
        self.subscribed_on: dict[str, UpstreamSession] = {}  # the catalog session each upstream's URIs are on
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        pool.on_resource_updated = self.on_updated
        pool.on_catalog_change(self._on_catalog_change)

    def _lock(self, upstream: str) -> asyncio.Lock:
        return self._locks.setdefault(upstream, asyncio.Lock())

    async def add(self, listener: Listener, upstream: str, uris: list[str]) -> list[str]:
        """Hold ``uris`` of ``upstream`` for ``listener``; the ones the upstream took (others: not held)."""
        accepted = []
        async with self._lock(upstream):
            for uri in uris:
                key = (upstream, uri)
                if key not in self.holders:
                    why = await self._send(upstream, "resources/subscribe", uri)
                    if why is not None:
                        log.warning("upstream %s did not take a listen's resource subscription (%s)", upstream, why)
                        continue
                    self.holders[key] = set()
                self.holders[key].add(listener)
                accepted.append(uri)
        return accepted

    def release(self, listener: Listener) -> None:
        """``listener`` ended: each URI nobody else holds is unsubscribed (in the background)."""
        for key, holders in list(self.holders.items()):
            if listener in holders:
                holders.discard(listener)
                if not holders:
                    del self.holders[key]
                    self._spawn(self._unsubscribe(*key))

    async def on_updated(self, upstream: str, msg: dict[str, Any]) -> None:
        """An update on ``upstream``'s catalog session: to the listeners holding its URI, and no other."""
        params = msg.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        if not isinstance(params, dict) or not isinstance(uri, str):
            return
        for listener in list(self.holders.get((upstream, uri), ())):
            if not listener.closed:
                listener.offer(listener.tagged(UPDATED, params))

    async def _unsubscribe(self, upstream: str, uri: str) -> None:
        async with self._lock(upstream):
            if (upstream, uri) in self.holders:
                return  # held again meanwhile: it stays subscribed
            why = await self._send(upstream, "resources/unsubscribe", uri)
        if why is not None:
            log.info("upstream %s: resources/unsubscribe failed (%s)", upstream, why)

    async def _send(self, upstream: str, method: str, uri: str) -> str | None:
        """``method`` for ``uri`` on ``upstream``'s catalog session; None, or why it failed."""
        message = {"jsonrpc": "2.0", "id": f"triplock-{next(_ids)}", "method": method, "params": {"uri": uri}}
        try:
            session = self.pool.catalog_session(upstream)
            reply = await session.request(message, on_message=None, timeout=self.pool.config(upstream).call_timeout)
        except UpstreamError as exc:
            return f"{exc.kind}: {exc.detail}"
        self.subscribed_on[upstream] = session
        error = reply.get("error")
        if error is not None:
            return f"{method}: {error.get('message') if isinstance(error, dict) else error}"
        return None

    async def _on_catalog_change(self, old: Catalog, new: Catalog) -> None:
        """A replaced catalog session (the upstream reconnected) forgot its subscriptions: subscribe again."""
        for upstream, was in list(self.subscribed_on.items()):
            try:
                now = self.pool.catalog_session(upstream)
            except UpstreamError:
                continue
            if now is not was:
                self.subscribed_on[upstream] = now
                self._spawn(self._resubscribe(upstream))

    async def _resubscribe(self, upstream: str) -> None:
        async with self._lock(upstream):
            for held_upstream, uri in list(self.holders):
                if held_upstream == upstream and (why := await self._send(upstream, "resources/subscribe", uri)):
                    log.warning("upstream %s: could not subscribe %s again after reconnecting (%s)", upstream,
                                uri, why)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ListenResources:
    """The per-resource part of 2026-07-28 clients' listen streams, at upstreams of either era."""

    def __init__(self, pool: UpstreamPool, bridge: ResourceBridge) -> None:
        self.pool = pool
        self.bridge = bridge
        self.session_era = CatalogSessionSubscriptions(pool)

    def _speaks_modern(self, upstream: str) -> bool:
        try:
            return self.pool.catalog_session(upstream).era == MODERN_ERA
        except UpstreamError:
            return False  # down: the session-era path answers "unreachable", and the URI is left out

    async def accept(self, listener: Listener, uris: list[str], admitted: dict[str, str]) -> list[str]:
        """Subscribe the guard-admitted ``uris`` (owner in ``admitted``); those now held, in ``uris``' order."""
        by_upstream: dict[str, list[str]] = {}
        for uri in uris:
            if uri in admitted:
                by_upstream.setdefault(admitted[uri], []).append(uri)
        held: set[str] = set()
        for upstream, owned in by_upstream.items():
            if self._speaks_modern(upstream):
                held.update(await self.bridge.subscribe_many(listener, upstream, owned))
            else:
                held.update(await self.session_era.add(listener, upstream, owned))
        if listener.closed:  # the stream ended while its URIs were being subscribed
            self.release(listener)
            return []
        return [uri for uri in uris if uri in held]

    def release(self, listener: Listener) -> None:
        """The listen stream ended: everything it held is let go at once."""
        listener.closed = True
        self.bridge.forget_session(listener)
        self.session_era.release(listener)
