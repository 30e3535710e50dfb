"""Forwarding one request to an upstream: the guarded path's last step.

The upstream session is the caller's own (opened on first use and reused), or the gateway's
shared one for stateless requests and stdio upstreams. Messages the upstream sends while it
works (progress, logging, sampling...) are relayed to this request's response stream; requests
among them are screened first (:mod:`gateway.mcp.server_requests`). Each forward carries a
CLIENT span and the W3C trace context, and counts as a call in flight for the downstream
session (which lets an upstream's request on its GET stream through during the call).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from gateway.mcp import input_required
from gateway.mcp.context import RequestContext
from gateway.mcp.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, ProtocolError, error_response, result_response
from gateway.mcp.listen_resources import CHECK_METHOD, ListenResources, admit
from gateway.mcp.resource_bridge import ResourceBridge
from gateway.mcp.server_requests import is_server_request
from gateway.mcp.sessions import DownstreamSession
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.ports.upstream import MODERN_ERA, UpstreamError, UpstreamSession
from gateway.telemetry.tracing import Telemetry

_ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY})
# Session-era methods 2026-07-28 removed, which the gateway answers for a session client itself
# when the upstream speaks 2026-07-28: subscriptions bridged to subscriptions/listen, the log level
# kept for the session and sent in each request's _meta.
SESSION_ONLY_METHODS = frozenset({"resources/subscribe", "resources/unsubscribe", "logging/setLevel"})
# The level a session client gets logs at from a 2026-07-28 upstream until it sends logging/setLevel.
# 2025-11-25 leaves the default to the server, and session-era servers (the SDKs') send every log
# message until the client sets a level: so the lowest, which is what it would get from one of them.
DEFAULT_SESSION_LOG_LEVEL = "debug"
LogLevels = weakref.WeakKeyDictionary[DownstreamSession, str]


def with_meta(msg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``msg`` with ``params._meta[key] = value`` unless the request set it itself (copies, never mutates)."""
    params = msg.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = {**meta} if isinstance(meta, dict) else {}
    meta.setdefault(key, value)
    return {**msg, "params": {**params, "_meta": meta}}


def for_modern_upstream(msg: dict[str, Any], ctx: RequestContext, levels: LogLevels) -> dict[str, Any]:
    """What a request needs toward a 2026-07-28 upstream beyond the wire's envelope.

    A 2026-07-28 client: its own capabilities (its logLevel, if any, is in its ``_meta`` already).
    A session client: the log level its session set (or the session era's default), since a
    2026-07-28 upstream logs only for requests that name one.
    """
    if ctx.session is None:
        return with_client_capabilities(msg, ctx)
    return with_meta(msg, input_required.LOG_LEVEL_META_KEY, levels.get(ctx.session, DEFAULT_SESSION_LOG_LEVEL))


def _log_level_of(msg: dict[str, Any]) -> int | None:
    params = msg.get("params")
    return input_required.requested_log_level(params) if isinstance(params, dict) else None


def with_client_capabilities(msg: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    """``msg`` carrying a 2026-07-28 client's own capabilities toward a 2026-07-28 upstream.

    What the upstream may ask (input-required) depends on what the client declared; the wire's
    envelope keeps this key and stamps the rest (session-era clients: their session's capabilities).
    """
    if not ctx.modern or ctx.session is not None:
        return msg
    params = msg.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = {**meta} if isinstance(meta, dict) else {}
    meta[CLIENT_CAPABILITIES_META_KEY] = ctx.client_capabilities
    return {**msg, "params": {**params, "_meta": meta}}


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


class UpstreamForwarder:
    """Sends requests to upstreams on a client's behalf (only the guarded path and the router call it)."""

    def __init__(self, pool: UpstreamPool, telemetry: Telemetry) -> None:
        self.pool = pool
        self.telemetry = telemetry  # CLIENT spans + trace context toward upstreams
        self.resources = ResourceBridge(pool)  # resources/subscribe of session clients, to 2026-07-28 upstreams
        self.listens = ListenResources(pool, self.resources)  # resourceSubscriptions of 2026-07-28 clients' listens
        self._log_levels: LogLevels = weakref.WeakKeyDictionary()  # logging/setLevel of session clients, ditto

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
        downstream = ctx.session
        if downstream is None:
            caller = ctx.principal  # stateless requests share the gateway's own upstream session: named per request
            if msg.get("method") == CHECK_METHOD:  # a listen's URI check (modern.py refuses it as a request)
                return admit(upstream, msg)
        else:
            caller = None
            downstream.calls_to[upstream] = downstream.calls_to.get(upstream, 0) + 1
        try:
            with self.telemetry.client_span(upstream, msg, config) as span:  # CLIENT span; NOOP when off
                msg = span.inject(msg)  # W3C trace context into params._meta
                for attempt in (1, 2):
                    session = await self.upstream_session(ctx, upstream)
                    on_message = self._relay_to(ctx, session, upstream, msg)
                    sent = msg
                    if session.era == MODERN_ERA:  # the handshake era's path stays as it was
                        if downstream is not None and msg.get("method") in SESSION_ONLY_METHODS:
                            return span.reply(await self._session_only(downstream, upstream, msg))
                        sent = for_modern_upstream(msg, ctx, self._log_levels)
                    try:
                        reply = await session.request(
                            sent, on_message=on_message, timeout=config.call_timeout, principal=caller
                        )
                        if input_required.asked_of(reply) is not None:  # only a 2026-07-28 upstream answers so
                            reply = await self._input_rounds(ctx, upstream, session, sent, reply, caller)
                        return span.reply(reply)
                    except UpstreamError as exc:
                        # The upstream forgot the session, so it never saw this request: safe to retry once.
                        if exc.kind != "session_expired" or attempt == 2:
                            raise
                        if ctx.session is not None:
                            ctx.session.upstreams.pop(upstream, None)
        finally:
            if downstream is not None:
                downstream.calls_to[upstream] -= 1
        raise AssertionError("unreachable")

    async def _session_only(self, downstream: DownstreamSession, upstream: str, msg: dict[str, Any]) -> dict[str, Any]:
        """A session-era method 2026-07-28 removed, for a session client of a 2026-07-28 upstream."""
        rid, method = msg.get("id"), msg.get("method")
        params = msg.get("params")
        params = params if isinstance(params, dict) else {}
        if method == "logging/setLevel":
            level = params.get("level")
            if level not in input_required.LOG_LEVELS:
                levels = ", ".join(input_required.LOG_LEVELS)
                return error_response(rid, INVALID_PARAMS, f"Invalid params: 'level' must be one of {levels}")
            self._log_levels[downstream] = level
            return result_response(rid, {})
        uri = params.get("uri")
        if not isinstance(uri, str):
            return error_response(rid, INVALID_PARAMS, "Invalid params: 'uri' must be a string")
        if method == "resources/unsubscribe":
            await self.resources.unsubscribe(downstream, upstream, uri)
            return result_response(rid, {})
        why = await self.resources.subscribe(downstream, upstream, uri)
        return result_response(rid, {}) if why is None else error_response(rid, INTERNAL_ERROR, why)

    async def _input_rounds(self, ctx: RequestContext, upstream: str, session: UpstreamSession,
                            msg: dict[str, Any], reply: dict[str, Any], caller: str | None) -> dict[str, Any]:
        """Get the client's answers to a 2026-07-28 upstream's ``input_required`` and retry, until it finishes."""
        exchange = input_required.CURRENT.get() if ctx.session is None else None
        ask = self._asker(ctx, session)
        timeout = self.pool.config(upstream).call_timeout
        for _ in range(input_required.MAX_UPSTREAM_ROUNDS):
            asked = input_required.asked_of(reply)
            if asked is None:
                return reply
            got = await input_required.answers_for(asked, exchange, ask)
            if isinstance(got, str):
                return input_required.cannot_answer(msg, upstream, asked, got)
            msg = input_required.retry_message(msg, asked, got)
            reply = await session.request(msg, on_message=self._relay_to(ctx, session, upstream, msg),
                                          timeout=timeout, principal=caller)
        asked = input_required.asked_of(reply)
        if asked is None:
            return reply
        why = f"it still asked after {input_required.MAX_UPSTREAM_ROUNDS} rounds of answers"
        return input_required.cannot_answer(msg, upstream, asked, why)

    def _asker(self, ctx: RequestContext, upstream_session: UpstreamSession) -> input_required.AskClient | None:
        """How to ask a session-era client for input on its call's stream (screened as upstream requests are)."""
        downstream, emit, pool = ctx.session, ctx.emit, self.pool
        if downstream is None or emit is None:
            return None
        timeout = pool.config(upstream_session.upstream).call_timeout

        async def ask(method: str, params: dict[str, Any]) -> dict[str, Any] | None:
            probe = {"jsonrpc": "2.0", "id": "input", "method": method, "params": params}
            # A refusal is "answered" to the 2026-07-28 session, which drops it: the call says why instead.
            if not await pool.screen(upstream_session, probe, capabilities=downstream.capabilities, in_flight=True,
                                     principal=ctx.principal, session=downstream.id):
                return None
            return await downstream.ask(method, params, emit, timeout)

        return ask

    def _relay_to(
        self, ctx: RequestContext, upstream_session: UpstreamSession, upstream: str, msg: dict[str, Any]
    ) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
        """Where messages the upstream sends during this request go: this request's response stream.

        ``list_changed`` is the gateway's own business: it refreshes the catalog, and clients hear
        about the change from the gateway (the aggregated list is what changed for them). A request
        (sampling...) arrives during this call, so it is in flight; it is screened first (see
        ``gateway.mcp.server_requests``): without a response stream it cannot reach the client.
        A 2026-07-28 client gets a log message only when its request's ``_meta`` asked for that level.
        """
        emit, downstream, pool = ctx.emit, ctx.session, self.pool
        session_id = downstream.id if downstream is not None else None
        # A 2026-07-28 request whose answer may be input-required (gateway.mcp.input_required):
        # the upstream's requests become the result's inputRequests instead of SSE messages.
        exchange = input_required.CURRENT.get() if downstream is None else None

        async def relay(message: dict[str, Any]) -> None:
            if str(message.get("method", "")).endswith("/list_changed"):
                pool.schedule_refresh(upstream)
            elif exchange is not None:
                if not is_server_request(message):
                    await exchange.relay(message)
                elif await pool.screen(
                    upstream_session,
                    message,
                    capabilities=ctx.client_capabilities,
                    in_flight=True,
                    principal=ctx.principal,
                ):
                    await exchange.ask(upstream_session, message)
            elif downstream is not None and emit is not None:
                await pool.relay(downstream, upstream_session, message, emit)
            elif await pool.screen(
                upstream_session,
                message,
                capabilities=ctx.client_capabilities if emit is not None else None,
                in_flight=True,
                principal=ctx.principal,
                session=session_id,
            ) and emit is not None and input_required.wanted(message, _log_level_of(msg)):
                await emit(message)  # stateless: the client's own envelope capabilities decided

        return relay
