"""Route one MCP request: answer it from the catalog or the gateway itself, or resolve what it
reaches upstream and hand it to the guarded path.

Every method that reaches an upstream on the client's behalf (``tools/call``,
``resources/read``, ``resources/(un)subscribe``, ``prompts/get``, ``completion/complete``)
is resolved here to a :class:`~gateway.guard.target.Target` and run by the guard
(:class:`gateway.guard.pipeline.GuardedPath`): authorization, policy, approvals, audit.
Listings are filtered with the guard's own authorization question, so a caller never
sees what it could not use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, Protocol

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS

from gateway.guard.answers import tool_error
from gateway.guard.target import Target, TargetKind
from gateway.mcp.capability_catalog import client_capabilities
from gateway.mcp.catalog import BadCursor, Catalog, exposed_name
from gateway.mcp.context import RequestContext
from gateway.mcp.forward import UpstreamForwarder
from gateway.mcp.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, ProtocolError, result_response
from gateway.mcp.tasks import TaskRegistry, client_wants_tasks
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.telemetry.tracing import DISABLED as _NO_TELEMETRY
from gateway.telemetry.tracing import Telemetry

log = logging.getLogger("triplock.router")

SERVER_INFO = {"name": "triplock", "title": "Triplock MCP gateway", "version": "0.1.0"}
INSTRUCTIONS = (
    "Triplock gateway: tools from several MCP servers, named UPSTREAM__TOOL. "
    "Some calls are held for a human's approval; a held call answers with an approval id."
)
_LIST_KINDS: dict[str, tuple[str, TargetKind]] = {
    "tools/list": ("tools", "tool"),
    "prompts/list": ("prompts", "prompt"),
    "resources/list": ("resources", "resource"),
    "resources/templates/list": ("resourceTemplates", "resource"),
}
_RESOURCE_METHODS = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


class Unlisted(Exception):
    """A request names something outside the caller's catalog: unknown, or hidden by action control.

    Raised while resolving a target; :meth:`Router.handle` has the guard record the refusal
    (audit, metrics) and answers with ``error``, the same answer whether the name is hidden or
    unknown, so a hidden tool's existence is never revealed.
    """

    def __init__(self, kind: TargetKind, exposed: str, error: ProtocolError, hidden: Target | None = None) -> None:
        super().__init__(error.message)
        self.kind, self.exposed, self.error, self.hidden = kind, exposed, error, hidden


class Guard(Protocol):
    """The guarded path, as the router sees it (implemented by :class:`gateway.guard.pipeline.GuardedPath`)."""

    def may_reach(self, ctx: RequestContext, kind: str, upstream: str, name: str) -> bool: ...

    async def __call__(self, ctx: RequestContext, msg: dict[str, Any], target: Target) -> dict[str, Any]: ...

    async def refuse_unlisted(
        self, ctx: RequestContext, msg: dict[str, Any], kind: str, exposed: str, hidden: Target | None
    ) -> None: ...


class _NoGuard:
    """Until the app installs the guard: nothing reaches an upstream (fail closed)."""

    def may_reach(self, ctx: RequestContext, kind: str, upstream: str, name: str) -> bool:
        return False

    async def __call__(self, ctx: RequestContext, msg: dict[str, Any], target: Target) -> dict[str, Any]:
        raise ProtocolError(INTERNAL_ERROR, "Internal error: no guarded path is configured")

    async def refuse_unlisted(
        self, ctx: RequestContext, msg: dict[str, Any], kind: str, exposed: str, hidden: Target | None
    ) -> None:
        return None


def negotiate_version(requested: Any) -> str:
    """The handshake-era version to answer ``initialize`` with (the client's, when we speak it)."""
    return requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION


def cacheable(result: dict[str, Any]) -> dict[str, Any]:
    """``cacheScope`` and ``ttlMs`` for a ``resources/read`` result (2026-07-28 requires both).

    Never more cacheable than the upstream said: ``private`` (what the gateway reads is read for
    one principal, through its policy) and the upstream's ``ttlMs`` when it gave a valid one,
    else 0 (immediately stale, the spec's default when a server says nothing).
    """
    ttl = result.get("ttlMs")
    valid = isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0
    return {"cacheScope": "private", "ttlMs": ttl if valid else 0}


class Router:
    """Maps MCP methods to answers: the catalog's, the gateway's own, or the guarded path's."""

    def __init__(self, pool: UpstreamPool, telemetry: Telemetry | None = None) -> None:
        self.pool = pool
        self.telemetry = telemetry or _NO_TELEMETRY  # the endpoint's SERVER spans
        self.forwarder = UpstreamForwarder(pool, self.telemetry)  # the guard's last step, and logging/setLevel
        self.guard: Guard = _NoGuard()  # the app installs the guarded path once built
        # What the guard's listing answer depends on (the caller's roles): listings are cached per key.
        self.visibility_key: Callable[[RequestContext], Hashable] | None = None
        self._visible: dict[tuple[str, Hashable, frozenset[str]], list[dict[str, Any]]] = {}
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
        # 2026-07-28 has no resources/subscribe (subscriptions/listen honours list changes only:
        # gateway.mcp.subscriptions) and its tasks are an extension the gateway does not offer.
        caps = self.capabilities()
        caps.pop("tasks", None)
        caps["resources"].pop("subscribe", None)
        return {
            "resultType": "complete",
            "supportedVersions": [*MODERN_PROTOCOL_VERSIONS, *reversed(HANDSHAKE_PROTOCOL_VERSIONS)],
            "capabilities": caps,
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
        except Unlisted as unlisted:
            return await self._refuse_unlisted(ctx, msg, unlisted)
        if "error" in result and "jsonrpc" in result:
            result["id"] = rid
            return result  # an upstream's JSON-RPC error, passed through
        if ctx.modern:
            result.setdefault("resultType", "complete")
            if msg["method"] == "resources/read":
                result.update(cacheable(result))
        return result_response(rid, result)

    async def _route(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        method: str = msg["method"]
        params: dict[str, Any] = msg.get("params") or {}
        if method == "tools/call":
            if "task" in params and ctx.session is not None and client_wants_tasks(ctx.client_capabilities):
                return self._start_task(ctx, msg)
            target = self._tool_target(params, ctx)
            if isinstance(target, dict):
                return target  # its upstream is down: a tool error that says so
            return await self.guard(ctx, msg, target)
        if method in _RESOURCE_METHODS:
            return await self.guard(ctx, msg, self._resource_target(method, params))
        if method == "prompts/get":
            return await self.guard(ctx, msg, self._prompt_target(params))
        if method == "completion/complete":
            return await self.guard(ctx, msg, self._completion_target(params))
        if method.startswith("tasks/") and ctx.session is not None:
            return await self._task_method(ctx.session.id, method, params)
        if method in _LIST_KINDS:
            return self._list(ctx, method, params)
        if method == "ping":
            return {}
        if method == "server/discover":
            return self.discover_result()
        if method == "logging/setLevel":
            for name in self.pool.catalog.upstreams:
                if not self.guard.may_reach(ctx, "resource", name, ""):
                    continue  # only upstreams the caller may use hear from it
                try:
                    await self.forwarder.forward(ctx, name, msg)
                except ProtocolError as exc:
                    log.info("upstream %s did not take logging/setLevel: %s", name, exc.message)
            return {}
        if method == "initialize":
            raise ProtocolError(-32600, "Invalid Request: the session is already initialized")
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}")

    async def _refuse_unlisted(self, ctx: RequestContext, msg: dict[str, Any], unlisted: Unlisted) -> dict[str, Any]:
        """Record the refusal through the guard (audited, counted), then answer as for an unknown name."""
        error = unlisted.error
        try:
            await self.guard.refuse_unlisted(ctx, msg, unlisted.kind, unlisted.exposed, unlisted.hidden)
        except ProtocolError as refused:  # the audit log cannot record it: that refusal is the answer
            error = refused
        error.request_id = msg.get("id")
        return error.to_message()

    # -- what a request reaches -----------------------------------------------------------------
    def _tool_target(self, params: dict[str, Any], ctx: RequestContext) -> Target | dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: tool 'name' must be a string")
        catalog = self.pool.catalog
        entry = catalog.tools.get(name)
        if entry is not None and entry.offered is not None and not entry.offered_to(
            client_capabilities(ctx.client_capabilities)
        ):
            entry = None  # listed only to clients with capabilities this one did not declare: unknown here
        if entry is None:
            unknown = ProtocolError(INVALID_PARAMS, f"Unknown tool: {name}")
            hidden = catalog.hidden_tools.get(name)
            if hidden is not None:
                target = Target("tool", hidden.upstream, hidden.name, name, hidden.definition, "tools/call")
                raise Unlisted("tool", name, unknown, target)
            down = self.down_upstream_for(name)
            if down is not None:
                return tool_error(f"Upstream {down!r} is unavailable; tool {name!r} cannot be called now.")
            raise Unlisted("tool", name, unknown)
        return Target("tool", entry.upstream, entry.name, name, entry.definition, "tools/call")

    def _resource_target(self, method: str, params: dict[str, Any]) -> Target:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: 'uri' must be a string")
        owner = self.pool.catalog.owner_of_uri(uri)
        if owner is None:
            raise Unlisted("resource", uri, ProtocolError(-32002, f"Resource not found: {uri}", {"uri": uri}))
        return Target("resource", owner, uri, uri, None, method)

    def _prompt_target(self, params: dict[str, Any]) -> Target:
        name = params.get("name")
        if not isinstance(name, str):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: prompt 'name' must be a string")
        entry = self.pool.catalog.prompts.get(name)
        if entry is None:
            raise Unlisted("prompt", name, ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name}"))
        return Target("prompt", entry.upstream, entry.name, name, entry.definition, "prompts/get")

    def _completion_target(self, params: dict[str, Any]) -> Target:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: 'ref' must be an object")
        if ref.get("type") == "ref/prompt":
            name = ref.get("name")
            entry = self.pool.catalog.prompts.get(name) if isinstance(name, str) else None
            if entry is None:
                raise Unlisted("prompt", str(name), ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name}"))
            return Target("prompt", entry.upstream, entry.name, entry.exposed, entry.definition, "completion/complete")
        uri = str(ref.get("uri", ""))
        owner = self.pool.catalog.owner_of_uri(uri)
        if owner is None:
            error = ProtocolError(INVALID_PARAMS, "Invalid params: no upstream serves that reference")
            raise Unlisted("resource", uri, error)
        return Target("resource", owner, uri, uri, None, "completion/complete")

    # -- listings -------------------------------------------------------------------------------
    def _list(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: 'cursor' must be a string")
        kind, target_kind = _LIST_KINDS[method]
        try:
            page = self.pool.catalog.page_of(kind, self._visible_items(ctx, kind, target_kind), cursor)
        except BadCursor:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: unknown cursor") from None
        if ctx.modern:
            page.update(cacheScope="private", ttlMs=0)
        return page

    def _visible_items(self, ctx: RequestContext, kind: str, target_kind: TargetKind) -> list[dict[str, Any]]:
        """The caller's list of ``kind``, computed once per catalog version and visibility key."""
        catalog = self.pool.catalog
        if self._visible_for is not catalog:
            self._visible, self._visible_for = {}, catalog
        capabilities = client_capabilities(ctx.client_capabilities)  # tools some upstreams list only to some
        key = (kind, self.visibility_key(ctx), capabilities) if self.visibility_key is not None else None
        cached = self._visible.get(key) if key is not None else None
        if cached is None:
            guard = self.guard
            cached = catalog.visible(
                kind, lambda upstream, name: guard.may_reach(ctx, target_kind, upstream, name), capabilities
            )
            if key is not None:
                self._visible[key] = cached
        return cached

    # -- tasks (the gateway's own: a task's tools/call runs the guarded path in the background) -
    def _start_task(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        params = dict(msg.get("params") or {})
        task_meta = params.pop("task")
        ttl = task_meta.get("ttl") if isinstance(task_meta, dict) else None
        target = self._tool_target(params, ctx)
        if isinstance(target, dict):
            return target
        # The POST that started it is answered now; the call runs without a response stream.
        background = replace(ctx, emit=None, in_task=True)
        call = {**msg, "params": params}
        assert ctx.session is not None
        guarded = target
        return self.tasks.start(ctx.session.id, ttl, lambda: self.guard(background, call, guarded))

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

    def down_upstream_for(self, exposed: str) -> str | None:
        """The configured-but-down upstream whose namespace ``exposed`` falls in, or that published it
        when last up (an upstream with prefix ``""`` has no namespace to go by), if any."""
        for name, health in self.pool.health().items():
            if health["up"]:
                continue
            prefix = self.pool.config(name).namespace
            if prefix and exposed.startswith(prefix + "__"):
                return name
            if any(exposed_name(prefix, tool) == exposed for tool in self.pool.known_tools(name)):
                return name
        return None
