"""``subscriptions/listen`` (2026-07-28): the stateless era's stream of change notifications.

A client opts in to ``toolsListChanged``, ``promptsListChanged`` and ``resourcesListChanged``;
the gateway acknowledges the subset it honours (the first message on the stream), then sends
``notifications/<kind>/list_changed`` whenever the aggregated catalog's list of that kind
changes, each tagged with the subscription's id. ``resourceSubscriptions`` (per-resource
updates) names URIs: each is checked on the guarded path as ``resources/subscribe`` is, and
relayed from its upstream (:mod:`gateway.mcp.listen_resources`); the acknowledgment names only
the URIs that were accepted, and ``notifications/resources/updated`` comes for those alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.mcp.catalog import Catalog

SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"
# filter field -> (catalog kinds whose change it reports, notification method)
LIST_FILTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "toolsListChanged": (("tools",), "notifications/tools/list_changed"),
    "promptsListChanged": (("prompts",), "notifications/prompts/list_changed"),
    "resourcesListChanged": (("resources", "resourceTemplates"), "notifications/resources/list_changed"),
}
# Notifications waiting for a slow listener. Each only says "this changed" (re-list, re-read), so
# one waiting copy of each is enough: repeats are merged while waiting (Listener.offer), which bounds
# the queue by three list kinds plus the resource URIs a stream may hold (MAX_LISTEN_URIS); nothing
# is dropped below that.
MAX_LISTEN_URIS = 64
QUEUE_LIMIT = len(LIST_FILTERS) + MAX_LISTEN_URIS


def accepted_filter(requested: Any) -> dict[str, Any]:
    """The part of the client's ``notifications`` filter the gateway honours."""
    if not isinstance(requested, dict):
        return {}
    return {name: True for name in LIST_FILTERS if requested.get(name) is True}


def changed_kinds(old: Catalog, new: Catalog) -> set[str]:
    """The filter fields whose lists differ between two catalogs."""
    changed: set[str] = set()
    for name, (kinds, _method) in LIST_FILTERS.items():
        if any(old.page(kind, None) != new.page(kind, None) for kind in kinds):
            changed.add(name)
    return changed


class Listener:
    """One open ``subscriptions/listen`` stream."""

    def __init__(self, subscription_id: Any, accepted: dict[str, Any]) -> None:
        self.subscription_id = subscription_id
        self.accepted = accepted
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._waiting: set[tuple[str, str]] = set()  # (method, uri) of what is queued, to merge repeats
        self.closed = False  # the client's stream ended: whatever it held is let go

    def acknowledgment(self, uris: list[str]) -> dict[str, Any]:
        """The stream's first message: the list filters honoured and the resource URIs accepted."""
        honoured = {**self.accepted, "resourceSubscriptions": uris} if uris else self.accepted
        return self.tagged("notifications/subscriptions/acknowledged", {"notifications": honoured})

    def tagged(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A notification for this stream, carrying its subscription id."""
        body = {**(params or {}), "_meta": {SUBSCRIPTION_ID_KEY: self.subscription_id}}
        return {"jsonrpc": "2.0", "method": method, "params": body}

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a notification unless the same one is already waiting (then the client learns it once)."""
        key = (str(message.get("method")), str((message.get("params") or {}).get("uri", "")))
        if key in self._waiting:
            return
        if self.queue.full():  # only past the bound above (a misuse): the oldest goes, as a last resort
            dropped = self.queue.get_nowait()
            self._waiting.discard((str(dropped.get("method")), str((dropped.get("params") or {}).get("uri", ""))))
        self._waiting.add(key)
        self.queue.put_nowait(message)

    async def next(self) -> dict[str, Any]:
        """The next notification to send (waits for one)."""
        message = await self.queue.get()
        self._waiting.discard((str(message.get("method")), str((message.get("params") or {}).get("uri", ""))))
        return message


class SubscriptionHub:
    """The open listen streams, told of every catalog change (registered on the upstream pool)."""

    def __init__(self) -> None:
        self.listeners: set[Listener] = set()

    async def on_catalog_change(self, old: Catalog, new: Catalog) -> None:
        if not self.listeners:
            return
        changed = changed_kinds(old, new)
        for listener in list(self.listeners):
            for name in changed & listener.accepted.keys():
                listener.offer(listener.tagged(LIST_FILTERS[name][1]))
