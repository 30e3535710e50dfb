"""Route one MCP request: answer it from the catalog, or forward it to the upstream that owns it.

``tools/call`` goes through :class:`gateway.guard.pipeline.ToolCallPipeline` (policy,
approvals, audit); everything else is routed here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from gateway.mcp.catalog import BadCursor, Catalog, CatalogEntry
from gateway.mcp.context import RequestContext
from gateway.mcp.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, ProtocolError, result_response
from gateway.mcp.tasks import TaskRegistry, client_wants_tasks
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.ports.upstream import UpstreamError, UpstreamSession
from gateway.telemetry.tracing import DISABLED as _NO_TELEMETRY
from gateway.telemetry.tracing import Telemetry

log = logging.getLogger("triplock.dispatch")

SERVER_INFO = {"name": "triplock", "title": "Triplock MCP gateway", "version": "0.1.0"}
INSTRUCTIONS = (
    "Triplock gateway: tools from several MCP servers, named UPSTREAM__TOOL. "
    "Some calls are held for a human's approval; a held call answers with an approval id."
)
_ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY})
_LIST_KINDS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}

ToolCaller = Callable[[RequestContext, dict[str, Any]], Awaitable[dict[str, Any]]]
ToolFilter = Callable[[RequestContext, CatalogEntry], bool]
"""Whether the caller may see (and so call) one catalogued tool: set by the access layer."""


def negotiate_version(requested: Any) -> str:
    """The handshake-era version to answer ``initialize`` with (the client's, when we speak it)."""
    return requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION


def strip_envelope(params: dict[str, Any]) -> dict[str, Any]:
    """Drop the stateless era's per-request envelope keys before forwarding to an upstream."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or not (_ENVELOPE_KEYS & meta.keys()):
        return params
    rest = {k: v for k, v in meta.items() if k not in _ENVELOPE_KEYS}
    out = {k: v for k, v in params.items() if k != "_meta"}
    if rest:
        out["_meta"] = rest
    return out


class Dispatcher:
    """Maps MCP methods to handlers; ``tools/call`` is delegated to ``call_tool``."""

    def __init__(
        self, pool: UpstreamPool, call_tool: ToolCaller | None = None, telemetry: Telemetry | None = None
    ) -> None:
        self.pool = pool
        self.telemetry = telemetry or _NO_TELEMETRY  # CLIENT spans + trace context toward upstreams
        # tools/call is the pipeline's (policy, approvals, audit): the app sets it once built.
        self.call_tool: ToolCaller = call_tool or _no_tool_pipeline
        self.tool_filter: ToolFilter | None = None
        # What the filter's answer depends on (e.g. the caller's roles): lists are cached per key.
        self.tool_filter_key: Callable[[RequestContext], Hashable] | None = None
        self._visible: dict[Hashable, list[dict[str, Any]]] = {}
        self._visible_for: Catalog | None = None
        self.tasks = TaskRegistry()

    def capabilities(self) -> dict[str, Any]:
        """What the gateway offers: the union of what its live upstreams offer, plus list_changed."""
        caps: dict[str, Any] = {
            "tools": {"listChanged": True},
            "prompts": {"listChanged": True},
            "resources": {"listChanged": True},
            "logging": {},
            "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}},
        }
        ups = self.pool.upstream_capabilities()
        if any((c.get("resources") or {}).get("subscribe") for c in ups):
            caps["resources"]["subscribe"] = True
        if any("completions" in c for c in ups):
            caps["completions"] = {}
        return caps

    def initialize_result(self, requested_version: Any) -> dict[str, Any]:
        return {
            "protocolVersion": negotiate_version(requested_version),
            "capabilities": self.capabilities(),
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        }

    def discover_result(self) -> dict[str, Any]:
        return {
            "resultType": "complete",
            "supportedVersions": [*MODERN_PROTOCOL_VERSIONS, *reversed(HANDSHAKE_PROTOCOL_VERSIONS)],
            "capabilities": self.capabilities(),
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
            "cacheScope": "private",
            "ttlMs": 0,
        }

    async def handle(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; protocol problems come back as JSON-RPC errors, never exceptions."""
        rid = msg.get("id")
        try:
            result = await self._route(ctx, msg)
        except ProtocolError as exc:
            exc.request_id = rid
            return exc.to_message()
        if "error" in result and "jsonrpc" in result:
            result["id"] = rid
            return result  # an upstream's JSON-RPC error, passed through
        if ctx.modern:
            result.setdefault("resultType", "complete")
        return result_response(rid, result)

    async def _route(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        method: str = msg["method"]
        params: dict[str, Any] = msg.get("params") or {}
        if method == "tools/call":
            if "task" in params and ctx.session is not None and client_wants_tasks(ctx.client_capabilities):
                return self._start_task(ctx, msg)
            return await self.call_tool(ctx, msg)
        if method.startswith("tasks/") and ctx.session is not None:
            return await self._task_method(ctx.session.id, method, params)
        if method in _LIST_KINDS:
            cursor = params.get("cursor")
            if cursor is not None and not isinstance(cursor, str):
                raise ProtocolError(INVALID_PARAMS, "Invalid params: 'cursor' must be a string")
            try:
                if method == "tools/list" and self.tool_filter is not None:
                    page = self.pool.catalog.page_of("tools", self._visible_tools(ctx), cursor)
                else:
                    page = self.pool.catalog.page(_LIST_KINDS[method], cursor)
            except BadCursor:
                raise ProtocolError(INVALID_PARAMS, "Invalid params: unknown cursor") from None
            if ctx.modern:
                page.update(cacheScope="private", ttlMs=0)
            return page
        if method == "ping":
            return {}
        if method == "server/discover":
            return self.discover_result()
        if method == "prompts/get":
            return await self._forward_named(ctx, msg, self.pool.catalog.prompts, "prompt")
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if not isinstance(uri, str):
                raise ProtocolError(INVALID_PARAMS, "Invalid params: 'uri' must be a string")
            owner = self.pool.catalog.owner_of_uri(uri)
            if owner is None:
                raise ProtocolError(-32002, f"Resource not found: {uri}", {"uri": uri})
            return await self.forward(ctx, owner, msg)
        if method == "completion/complete":
            return await self._complete(ctx, msg)
        if method == "logging/setLevel":
            for name in self.pool.catalog.upstreams:
                try:
                    await self.forward(ctx, name, msg)
                except ProtocolError as exc:
                    log.info("upstream %s did not take logging/setLevel: %s", name, exc.message)
            return {}
        if method == "initialize":
            raise ProtocolError(-32600, "Invalid Request: the session is already initialized")
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def _visible_tools(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """The caller's tool list, computed once per catalog version and filter key."""
        tool_filter = self.tool_filter
        assert tool_filter is not None
        catalog = self.pool.catalog
        if self._visible_for is not catalog:
            self._visible, self._visible_for = {}, catalog
        key = self.tool_filter_key(ctx) if self.tool_filter_key is not None else None
        cached = self._visible.get(key) if key is not None else None
        if cached is None:
            cached = catalog.visible_tools(lambda e: tool_filter(ctx, e))
            if key is not None:
                self._visible[key] = cached
        return cached

    def _start_task(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        params = dict(msg.get("params") or {})
        task_meta = params.pop("task")
        ttl = task_meta.get("ttl") if isinstance(task_meta, dict) else None
        # The POST that started it is answered now; the call runs without a response stream.
        background = replace(ctx, emit=None, in_task=True)
        call = {**msg, "params": params}
        assert ctx.session is not None
        return self.tasks.start(ctx.session.id, ttl, lambda: self.call_tool(background, call))

    async def _task_method(self, owner: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "tasks/get":
            return self.tasks.get(owner, params).describe()
        if method == "tasks/result":
            return await self.tasks.result(owner, params)
        if method == "tasks/cancel":
            return self.tasks.cancel(owner, params)
        if method == "tasks/list":
            return self.tasks.list(owner)
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}")

    async def _forward_named(
        self, ctx: RequestContext, msg: dict[str, Any], table: dict[str, Any], what: str
    ) -> dict[str, Any]:
        params = msg.get("params") or {}
        name = params.get("name")
        if not isinstance(name, str):
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: {what} 'name' must be a string")
        entry = table.get(name)
        if entry is None:
            raise ProtocolError(INVALID_PARAMS, f"Unknown {what}: {name}")
        return await self.forward(ctx, entry.upstream, {**msg, "params": {**params, "name": entry.name}})

    async def _complete(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        params = msg.get("params") or {}
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: 'ref' must be an object")
        if ref.get("type") == "ref/prompt":
            entry = self.pool.catalog.prompts.get(ref.get("name", ""))
            if entry is None:
                raise ProtocolError(INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            new_params = {**params, "ref": {**ref, "name": entry.name}}
            return await self.forward(ctx, entry.upstream, {**msg, "params": new_params})
        owner = self.pool.catalog.owner_of_uri(str(ref.get("uri", "")))
        if owner is None:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: no upstream serves that reference")
        return await self.forward(ctx, owner, msg)

    async def upstream_session(self, ctx: RequestContext, name: str) -> UpstreamSession:
        if ctx.session is None:
            return self.pool.catalog_session(name)
        return await self.pool.session_for(ctx.session, name)

    async def forward(self, ctx: RequestContext, upstream: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Send ``msg`` to ``upstream``; return its result, or its JSON-RPC error message as-is.

        Raises :class:`ProtocolError` naming the upstream when it cannot answer.
        """
        try:
            reply = await self.forward_raw(ctx, upstream, msg)
        except UpstreamError as exc:
            raise ProtocolError(INTERNAL_ERROR, f"Upstream {upstream!r} failed: {exc.kind}: {exc.detail}") from None
        if "error" in reply:
            return reply
        result = reply.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(INTERNAL_ERROR, f"Upstream {upstream!r} answered without a result object")
        return result

    async def forward_raw(self, ctx: RequestContext, upstream: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Send ``msg`` and return the upstream's response message; retries once on an expired session."""
        params = msg.get("params")
        if ctx.modern and isinstance(params, dict):
            msg = {**msg, "params": strip_envelope(params)}
        config = self.pool.config(upstream)
        # Stateless requests share the gateway's own upstream session: the caller is named per request.
        caller = ctx.principal if ctx.session is None else None
        with self.telemetry.client_span(upstream, msg, config) as span:  # CLIENT span; NOOP when off
            msg = span.inject(msg)  # W3C trace context into params._meta
            for attempt in (1, 2):
                session = await self.upstream_session(ctx, upstream)
                on_message = self._relay_to(ctx, session, upstream)
                try:
                    reply = await session.request(
                        msg, on_message=on_message, timeout=config.call_timeout, principal=caller
                    )
                    return span.reply(reply)
                except UpstreamError as exc:
                    # The upstream forgot the session, so it never saw this request: safe to retry once.
                    if exc.kind != "session_expired" or attempt == 2:
                        raise
                    if ctx.session is not None:
                        ctx.session.upstreams.pop(upstream, None)
        raise AssertionError("unreachable")

    def _relay_to(
        self, ctx: RequestContext, upstream_session: UpstreamSession, upstream: str
    ) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
        """Where messages the upstream sends during this request go: this request's response stream.

        ``list_changed`` is the gateway's own business: it refreshes the catalog, and clients hear
        about the change from the gateway (the aggregated list is what changed for them).
        """
        emit, downstream, pool = ctx.emit, ctx.session, self.pool

        async def relay(message: dict[str, Any]) -> None:
            if str(message.get("method", "")).endswith("/list_changed"):
                pool.schedule_refresh(upstream)
            elif emit is None:
                return
            elif downstream is None:
                await emit(message)
            else:
                await downstream.relay(upstream_session, message, emit)

        return relay

    def down_upstream_for(self, exposed: str) -> str | None:
        """The configured-but-down upstream whose namespace ``exposed`` falls in, if any."""
        for name, health in self.pool.health().items():
            prefix = self.pool.config(name).namespace
            if not health["up"] and prefix and exposed.startswith(prefix + "__"):
                return name
        return None


async def _no_tool_pipeline(ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
    raise ProtocolError(INTERNAL_ERROR, "Internal error: no tools/call pipeline is configured")


def tool_error(text: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``tools/call`` result that reports failure to the model (``isError``)."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if meta:
        result["_meta"] = meta
    return result
