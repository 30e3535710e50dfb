"""Tools an upstream lists only to clients that declare some capabilities, and who may see them.

Some servers list a tool only to a client that can serve it: a tool that samples the client's
model only when the client declared ``sampling`` (the reference "everything" server does this for
13 of its 15 tools). The gateway relays sampling, elicitation and roots to the clients that
declared them (:mod:`gateway.mcp.server_requests`), so its own catalog session toward an upstream
declares all three (:data:`RELAYED`) and sees every tool. Which of those tools need which
capabilities is measured by listing again on short-lived probe sessions that declare less:

* first with no capabilities: when that lists the same names, nothing is gated (the common case:
  one extra session per refresh);
* otherwise under each of the other capability sets too (2^3 sets in all, 6 more sessions), so a
  tool carries exactly the sets under which its upstream lists it, whatever rule the upstream uses.

A client then sees a gated tool only if the capabilities it declared (:func:`client_capabilities`)
are one of those sets. Probing happens at refresh time (startup, ``list_changed``), never per call.

Stdio upstreams are not probed, on purpose. Their one process is one session shared by every client
(:mod:`gateway.mcp.upstream_pool`), and it declares no capabilities, so it cannot run a gated tool
whoever calls it: knowing the tool exists (a short-lived probe process per capability set would tell)
does not make it callable. Declaring the capabilities on the shared session would not be sound
either: a sampling, elicitation or roots request on stdio carries nothing that ties it to the call
it belongs to, so with calls of two principals in flight the gateway could not tell whose client
should see it (one principal's data shown to another's model or user). Sound ways cost a process per
capable client session (its calls to gated tools run there) or serialise the gated calls on the
shared process; until one of those is chosen, a stdio upstream's gated tools stay unlisted, as the
upstream would list them to a client without those capabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.mcp.catalog import NO_CAPABILITIES, CapabilitySet
from gateway.mcp.server_requests import CAPABILITY_OF, declared
from gateway.ports.upstream import UpstreamSession

RELAYED: CapabilitySet = frozenset(CAPABILITY_OF.values())
"""The client capabilities the gateway can relay, which its catalog sessions declare."""

_MAX_PAGES = 100
ListTools = Callable[[CapabilitySet], Awaitable[list[dict[str, Any]]]]
"""Lists an upstream's tools on a session that declares exactly these capabilities."""


def declaration(capabilities: CapabilitySet) -> dict[str, Any]:
    """The ``capabilities`` object of an ``initialize`` that declares ``capabilities`` (plain, no sub-features)."""
    return {name: {} for name in sorted(capabilities)}


def client_capabilities(capabilities: Mapping[str, Any] | None) -> CapabilitySet:
    """Which relayed capabilities a client declared (the key its tool listing depends on)."""
    if not capabilities:
        return NO_CAPABILITIES
    return frozenset(c for c in RELAYED if declared(capabilities, c))


def capability_sets() -> list[CapabilitySet]:
    """Every subset of :data:`RELAYED`, the full set first and the empty set second."""
    ordered = sorted(RELAYED)
    subsets = [frozenset(c) for n in range(len(ordered) + 1) for c in itertools.combinations(ordered, n)]
    return [RELAYED, NO_CAPABILITIES, *(s for s in subsets if s not in (RELAYED, NO_CAPABILITIES))]


async def list_pages(session: UpstreamSession, method: str, key: str, timeout: float) -> list[dict[str, Any]]:
    """Every page of one list method's ``key`` items (at most 100 pages)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params = {"cursor": cursor} if cursor else {}
        reply = await session.request(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, on_message=None, timeout=timeout
        )
        result = reply.get("result")
        if not isinstance(result, dict):
            break  # a method the server declares but refuses: list nothing rather than fail
        items.extend(i for i in result.get(key, []) if isinstance(i, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return items


def _names(tools: list[dict[str, Any]]) -> set[str]:
    return {t["name"] for t in tools if isinstance(t.get("name"), str)}


async def tools_by_capabilities(
    full: list[dict[str, Any]], list_tools: ListTools
) -> tuple[list[dict[str, Any]], dict[str, frozenset[CapabilitySet]]]:
    """Every tool the upstream lists under some capability set, and the gated ones' sets.

    ``full``: the listing under :data:`RELAYED` (the catalog session's). Returns the union of the
    listings (a tool's definition as first seen, full set first) and, for each tool that is not
    listed under every set, the sets under which it is.
    """
    sets = capability_sets()
    listings: dict[CapabilitySet, list[dict[str, Any]]] = {RELAYED: full}
    listings[NO_CAPABILITIES] = await list_tools(NO_CAPABILITIES)
    if _names(listings[NO_CAPABILITIES]) != _names(full):
        for capabilities in sets[2:]:
            listings[capabilities] = await list_tools(capabilities)
    union: dict[str, dict[str, Any]] = {}
    for tools in listings.values():
        for tool in tools:
            name = tool.get("name")
            if isinstance(name, str):
                union.setdefault(name, tool)
    named = {caps: _names(tools) for caps, tools in listings.items()}
    offered: dict[str, frozenset[CapabilitySet]] = {}
    for name in union:
        under = frozenset(caps for caps, names in named.items() if name in names)
        if len(under) != len(listings):  # only when the listings differ, so every set was probed
            offered[name] = under
    return list(union.values()), offered
