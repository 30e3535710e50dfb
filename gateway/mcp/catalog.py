"""The aggregated catalog: every upstream's tools, prompts and resources under one namespace.

Tools and prompts are exposed as ``PREFIX__NAME`` (or the bare name when an
upstream's prefix is empty). Exposed names must be valid OpenAI function names
(``[A-Za-z0-9_-]``, at most 64 characters): a name that is too long or carries
other characters is shortened/cleaned and suffixed with 8 hex digits of the
SHA-256 of the full name, so it stays unique and stable across restarts.
Resources keep their URIs (they are already global); the catalog remembers
which upstream owns each URI and each URI template.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ToolView = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""Shapes a tool for agents (policy annotations) or hides it (None)."""

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


@dataclass
class UpstreamListing:
    """What one upstream offered at its last refresh."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)


class Catalog:
    """Immutable-after-build view of all live upstreams; rebuilt (and swapped) on any change."""

    def __init__(
        self, listings: Sequence[tuple[str, str, UpstreamListing]], tool_view: ToolView | None = None
    ) -> None:
        """``listings``: (upstream name, prefix, listing) in configuration order."""
        self.tools: dict[str, CatalogEntry] = {}
        self.prompts: dict[str, CatalogEntry] = {}
        self.resource_owner: dict[str, str] = {}
        self._templates: list[tuple[re.Pattern[str], str]] = []
        self._resources: list[dict[str, Any]] = []
        self._template_defs: list[dict[str, Any]] = []
        self.template_owner: dict[str, str] = {}
        for upstream, prefix, listing in listings:
            self._add(self.tools, upstream, prefix, listing.tools, tool_view)
            self._add(self.prompts, upstream, prefix, listing.prompts, None)
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
        self._tool_list = [self._expose(e) for e in sorted(self.tools.values(), key=lambda e: e.exposed)]
        self._prompt_list = [self._expose(e) for e in sorted(self.prompts.values(), key=lambda e: e.exposed)]
        self._resources.sort(key=lambda r: r["uri"])
        self._template_defs.sort(key=lambda t: t["uriTemplate"])

    @staticmethod
    def _add(
        target: dict[str, CatalogEntry],
        upstream: str,
        prefix: str,
        items: Iterable[dict[str, Any]],
        view: ToolView | None,
    ) -> None:
        for item in items:
            name = item.get("name")
            if not isinstance(name, str) or not name:
                continue
            exposed = exposed_name(prefix, name)
            if exposed in target:  # first upstream in config order wins a clash
                continue
            shown = view(upstream, item) if view is not None else item
            if shown is not None:
                target[exposed] = CatalogEntry(upstream, name, exposed, item, shown)

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

        ``keep`` filters tools per caller (roles); offsets then count the filtered list.
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

    def visible_tools(self, keep: Callable[[CatalogEntry], bool]) -> list[dict[str, Any]]:
        """The tools ``keep`` lets one caller see, as listed (cache it per caller class)."""
        entries = sorted(self.tools.values(), key=lambda e: e.exposed)
        return [self._expose(e) for e in entries if keep(e)]

    def visible(self, kind: str, keep: Callable[[str, str], bool]) -> list[dict[str, Any]]:
        """The items of ``kind`` that ``keep(upstream, upstream's own name or URI)`` lets one caller see."""
        if kind in ("tools", "prompts"):
            table = self.tools if kind == "tools" else self.prompts
            entries = sorted(table.values(), key=lambda e: e.exposed)
            return [self._expose(e) for e in entries if keep(e.upstream, e.name)]
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
