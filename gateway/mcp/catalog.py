"""The aggregated catalog: every upstream's tools, prompts and resources under one namespace.

Tools and prompts are exposed as ``PREFIX__NAME`` (or the bare name when an
upstream's prefix is empty). Exposed names must be valid OpenAI function names
(``[A-Za-z0-9_-]``, at most 64 characters): a name that is too long or carries
other characters is shortened/cleaned and suffixed with 8 hex digits of the
SHA-256 of the full name, so it stays unique and stable across restarts.
Resources keep their URIs (they are already global); the catalog remembers
which upstream owns each URI and each URI template.

Names are never silently shadowed. A name two upstreams both publish, or a name one
upstream publishes inside another configured upstream's namespace (an upstream with
prefix ``""`` publishing ``demo__read_inbox`` next to upstream ``demo``), is a
:class:`Collision`: the name is exposed from *neither* side (fail closed: which side an
agent would reach must not depend on which upstreams happen to be up) and the pool
reports it (error log, audit record, ``/readyz``).

A tool whose definition changed since it was pinned is *withheld*: still routable (so a
call gets the policy's ``pin.changed`` denial, audited) but not listed, so its new
description, the rug pull's injection vector, reaches no agent until an admin re-approves.

A tool the policy's view hides (action control) is neither listed nor routable; it is kept in
``hidden_tools`` only so that a call naming it is audited with the policy's reason, while the
caller gets the same "Unknown tool" as for a name nothing serves.

The view may make a tool's annotation hints stricter, never weaker (:func:`no_weaker_hints`): an
upstream's ``destructiveHint: true`` stays true whatever the policy classified, and a hint the
upstream left out counts as the MCP default, which is always the strict value.

A tool an upstream lists only to clients that declare some capabilities (sampling, elicitation,
roots) carries the capability sets it is offered to (``UpstreamListing.offered``, measured by the
upstream pool); :meth:`Catalog.visible` lists it only to a client that declared one of them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

ToolView = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""Shapes a tool for agents (policy annotations) or hides it (None)."""
Withhold = Callable[[str, dict[str, Any]], bool]
"""True when a tool must not be listed although it stays routable (its pinned definition changed)."""
CapabilitySet = frozenset[str]
"""Which of the relayed client capabilities (sampling, elicitation, roots) a client declared."""
NO_CAPABILITIES: CapabilitySet = frozenset()

SEPARATOR = "__"
MAX_NAME = 64
PAGE_SIZE = 200
_VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def exposed_name(prefix: str, name: str) -> str:
    """The name clients see for upstream item ``name`` under ``prefix``."""
    full = f"{prefix}{SEPARATOR}{name}" if prefix else name
    if _VALID.match(full):
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    cleaned = _INVALID_CHARS.sub("_", full)
    return f"{cleaned[: MAX_NAME - 9]}_{digest}"


# Each hint's strict value, which is also its MCP default: an absent hint is already the strict one.
STRICT_HINTS: Mapping[str, bool] = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": False,
    "openWorldHint": True,
}


def no_weaker_hints(upstream: Any, shown: dict[str, Any]) -> dict[str, Any]:
    """``shown`` (a tool as the view re-annotated it) with no hint weaker than ``upstream``'s annotations.

    A hint keeps the view's lenient value (read-only, not destructive, idempotent, closed world)
    only when the upstream stated that same value; otherwise it becomes the strict one. So
    readOnlyHint is true only if both say so, destructiveHint true if either does (or the upstream
    is silent), idempotentHint true only if both, openWorldHint true if either (or silent).
    """
    annotations = shown.get("annotations")
    if not isinstance(annotations, dict):
        return shown  # no annotations: every hint reads as its default, the strict value
    stated = upstream if isinstance(upstream, dict) else {}
    fixed = dict(annotations)
    for hint, strict in STRICT_HINTS.items():
        lenient = not strict
        if hint in fixed and not (fixed[hint] is lenient and stated.get(hint) is lenient):
            fixed[hint] = strict  # a non-boolean value is not a statement either
    return shown if fixed == annotations else {**shown, "annotations": fixed}


def _template_regex(template: str) -> re.Pattern[str]:
    # RFC 6570 level 1 is enough to route: each {var} matches one or more characters.
    parts = re.split(r"\{[^}]*\}", template)
    return re.compile("^" + ".+?".join(re.escape(p) for p in parts) + "$")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One tool or prompt: where it lives and what it is called there."""

    upstream: str
    name: str  # the upstream's own name
    exposed: str
    definition: dict[str, Any]  # as the upstream described it
    view: dict[str, Any]  # as agents see it (before renaming)
    listed: bool = True  # False: withheld from listings (a changed pinned definition), still routable
    # The capability sets a client must have declared one of to see it; None: every client.
    offered: frozenset[CapabilitySet] | None = None

    def offered_to(self, capabilities: CapabilitySet) -> bool:
        """Whether the upstream lists this to a client that declared ``capabilities``."""
        return self.offered is None or capabilities in self.offered


@dataclass(frozen=True, slots=True)
class Collision:
    """A name more than one upstream claims; it is exposed from none of them."""

    kind: str  # "tool" or "prompt"
    exposed: str
    upstreams: tuple[str, ...]  # every upstream involved, in configuration order
    reason: str

    def describe(self) -> str:
        return f"{self.kind} name {self.exposed!r} is refused: {self.reason}"


@dataclass
class UpstreamListing:
    """What one upstream offered at its last refresh."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    # Tools listed only under some capability sets: name -> those sets (every other tool: under all).
    offered: dict[str, frozenset[CapabilitySet]] = field(default_factory=dict)


class Catalog:
    """Immutable-after-build view of all live upstreams; rebuilt (and swapped) on any change."""

    def __init__(
        self,
        listings: Sequence[tuple[str, str, UpstreamListing]],
        tool_view: ToolView | None = None,
        *,
        namespaces: Mapping[str, str] | None = None,
        withhold: Withhold | None = None,
    ) -> None:
        """``listings``: (upstream name, prefix, listing) in configuration order, live upstreams only.

        ``namespaces``: upstream name -> prefix of *every* configured upstream, up or down, so a
        name in a down upstream's namespace is not handed to another one meanwhile.
        """
        self.tools: dict[str, CatalogEntry] = {}
        self.prompts: dict[str, CatalogEntry] = {}
        # Tools the policy's view hides (action control): not routable, but a call naming one is
        # refused with the policy's reason in the audit log (the caller is told only "Unknown tool").
        self.hidden_tools: dict[str, CatalogEntry] = {}
        self.collisions: list[Collision] = []
        owners = dict(namespaces) if namespaces is not None else {u: p for u, p, _ in listings}
        self._reserved = {prefix + SEPARATOR: up for up, prefix in owners.items() if prefix}
        self.resource_owner: dict[str, str] = {}
        self._templates: list[tuple[re.Pattern[str], str]] = []
        self._resources: list[dict[str, Any]] = []
        self._template_defs: list[dict[str, Any]] = []
        self.template_owner: dict[str, str] = {}
        self._add("tool", self.tools, [(u, p, li.tools) for u, p, li in listings], tool_view, withhold,
                  self.hidden_tools)
        self._gate({u: li.offered for u, _, li in listings if li.offered})
        self._add("prompt", self.prompts, [(u, p, li.prompts) for u, p, li in listings], None, None, {})
        for upstream, _prefix, listing in listings:
            for res in listing.resources:
                uri = res.get("uri")
                if isinstance(uri, str) and uri not in self.resource_owner:
                    self.resource_owner[uri] = upstream
                    self._resources.append(res)
            for tpl in listing.templates:
                uri_template = tpl.get("uriTemplate")
                if isinstance(uri_template, str):
                    self._templates.append((_template_regex(uri_template), upstream))
                    self._template_defs.append(tpl)
                    self.template_owner.setdefault(uri_template, upstream)
        self.upstreams = tuple(u for u, _, _ in listings)
        # Deterministic order: by exposed name, whatever order upstreams answered in.
        self._tool_list = [
            self._expose(e)
            for e in sorted(self.tools.values(), key=lambda e: e.exposed)
            if e.listed and e.offered_to(NO_CAPABILITIES)
        ]
        self._prompt_list = [self._expose(e) for e in sorted(self.prompts.values(), key=lambda e: e.exposed)]
        self._resources.sort(key=lambda r: r["uri"])
        self._template_defs.sort(key=lambda t: t["uriTemplate"])

    def _add(
        self,
        kind: str,
        target: dict[str, CatalogEntry],
        sources: Sequence[tuple[str, str, Iterable[dict[str, Any]]]],
        view: ToolView | None,
        withhold: Withhold | None,
        hidden: dict[str, CatalogEntry],
    ) -> None:
        claims: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for upstream, prefix, items in sources:
            for item in items:
                name = item.get("name")
                if not isinstance(name, str) or not name:
                    continue
                claim = claims.setdefault(exposed_name(prefix, name), [])
                if not any(u == upstream for u, _, _ in claim):  # one upstream listing a name twice: its first
                    claim.append((upstream, name, item))
        for exposed, claim in claims.items():
            refused = self._collision(kind, exposed, [u for u, _, _ in claim])
            if refused is not None:
                self.collisions.append(refused)
                continue
            upstream, name, item = claim[0]
            shown = view(upstream, item) if view is not None else item
            if shown is not None and shown is not item:
                shown = no_weaker_hints(item.get("annotations"), shown)
            if shown is not None:
                listed = withhold is None or not withhold(upstream, item)
                target[exposed] = CatalogEntry(upstream, name, exposed, item, shown, listed)
            else:
                hidden[exposed] = CatalogEntry(upstream, name, exposed, item, item, listed=False)

    def _gate(self, offered: Mapping[str, Mapping[str, frozenset[CapabilitySet]]]) -> None:
        """Mark each tool its upstream lists only under some capability sets with those sets."""
        if not offered:
            return
        for exposed, entry in self.tools.items():
            sets = offered.get(entry.upstream, {}).get(entry.name)
            if sets is not None:
                self.tools[exposed] = replace(entry, offered=sets)

    def _collision(self, kind: str, exposed: str, upstreams: list[str]) -> Collision | None:
        """Why ``exposed`` may not be exposed from any of ``upstreams``, or None."""
        if len(upstreams) > 1:
            names = " and ".join(repr(u) for u in upstreams)
            return Collision(kind, exposed, tuple(upstreams), f"upstreams {names} both publish it")
        for namespace, owner in self._reserved.items():
            if owner != upstreams[0] and exposed.startswith(namespace):
                return Collision(
                    kind, exposed, (owner, upstreams[0]),
                    f"upstream {upstreams[0]!r} publishes it inside upstream {owner!r}'s namespace {namespace!r}",
                )
        return None

    @staticmethod
    def _expose(entry: CatalogEntry) -> dict[str, Any]:
        return {**entry.view, "name": entry.exposed}

    def owner_of_uri(self, uri: str) -> str | None:
        """The upstream that serves ``uri``, from the listed resources or templates."""
        owner = self.resource_owner.get(uri)
        if owner is not None:
            return owner
        for pattern, upstream in self._templates:
            if pattern.match(uri):
                return upstream
        return self.upstreams[0] if len(self.upstreams) == 1 else None

    def page(
        self, kind: str, cursor: str | None, keep: Callable[[CatalogEntry], bool] | None = None
    ) -> dict[str, Any]:
        """One page of ``tools``, ``prompts``, ``resources`` or ``resourceTemplates``.

        ``keep`` filters tools per caller (roles); offsets then count the filtered list. Tools are
        those offered to a client without capabilities (:meth:`visible` takes a client's).
        """
        if keep is not None and kind == "tools":
            return self._slice("tools", self.visible_tools(keep), cursor)
        items = {
            "tools": self._tool_list,
            "prompts": self._prompt_list,
            "resources": self._resources,
            "resourceTemplates": self._template_defs,
        }[kind]
        return self._slice(kind, items, cursor)

    def visible_tools(
        self, keep: Callable[[CatalogEntry], bool], capabilities: CapabilitySet = NO_CAPABILITIES
    ) -> list[dict[str, Any]]:
        """The tools ``keep`` lets one caller see, as listed (cache it per caller class)."""
        entries = sorted(self.tools.values(), key=lambda e: e.exposed)
        return [self._expose(e) for e in entries if e.listed and e.offered_to(capabilities) and keep(e)]

    def visible(
        self, kind: str, keep: Callable[[str, str], bool], capabilities: CapabilitySet = NO_CAPABILITIES
    ) -> list[dict[str, Any]]:
        """The items of ``kind`` that ``keep(upstream, upstream's own name or URI)`` lets one caller see.

        ``capabilities``: the relayed capabilities the caller declared
        (``capability_catalog.client_capabilities``); a tool its upstream lists only to clients with
        other capabilities is left out. Cache the result per (roles, capabilities).
        """
        if kind in ("tools", "prompts"):
            table = self.tools if kind == "tools" else self.prompts
            entries = sorted(table.values(), key=lambda e: e.exposed)
            return [
                self._expose(e)
                for e in entries
                if e.listed and e.offered_to(capabilities) and keep(e.upstream, e.name)
            ]
        if kind == "resources":
            return [r for r in self._resources if keep(self.resource_owner[r["uri"]], r["uri"])]
        return [
            t for t in self._template_defs if keep(self.template_owner[t["uriTemplate"]], t["uriTemplate"])
        ]

    def page_of(self, kind: str, items: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
        """One page of an already-filtered list (see :meth:`visible_tools`)."""
        return self._slice(kind, items, cursor)

    @staticmethod
    def _slice(kind: str, items: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
        start = decode_cursor(cursor)
        end = start + PAGE_SIZE
        result: dict[str, Any] = {kind: items[start:end]}
        if end < len(items):
            result["nextCursor"] = encode_cursor(end)
        return result


class BadCursor(ValueError):
    """The client sent a cursor this gateway never issued."""


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    """Offset from an opaque cursor; raises :class:`BadCursor` for anything we did not issue."""
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        kind, _, value = text.partition(":")
        offset = int(value)
    except (ValueError, UnicodeError):
        raise BadCursor(cursor) from None
    if kind != "o" or offset < 0:
        raise BadCursor(cursor)
    return offset
