"""Forwarding one request to an upstream: the guarded path's last step.

The upstream session is the caller's own (opened on first use and reused), or the gateway's
shared one for stateless requests and stdio upstreams. Messages the upstream sends while it
works (progress, logging, sampling...) are relayed to this request's response stream; requests
among them are screened first (:mod:`gateway.mcp.server_requests`). Each forward carries a
CLIENT span and the W3C trace context, and counts as a call in flight for the downstream
session (which lets an upstream's request on its GET stream through during the call).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from gateway.mcp.context import RequestContext
from gateway.mcp.jsonrpc import INTERNAL_ERROR, ProtocolError
from gateway.mcp.upstream_pool import UpstreamPool
from gateway.ports.upstream import UpstreamError, UpstreamSession
from gateway.telemetry.tracing import Telemetry

_ENVELOPE_KEYS = frozenset({PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY})


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
        downstream = ctx.session
        if downstream is not None:
            downstream.calls_to[upstream] = downstream.calls_to.get(upstream, 0) + 1
        try:
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
        finally:
            if downstream is not None:
                downstream.calls_to[upstream] -= 1
        raise AssertionError("unreachable")

    def _relay_to(
        self, ctx: RequestContext, upstream_session: UpstreamSession, upstream: str
    ) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
        """Where messages the upstream sends during this request go: this request's response stream.

        ``list_changed`` is the gateway's own business: it refreshes the catalog, and clients hear
        about the change from the gateway (the aggregated list is what changed for them). A request
        (sampling...) arrives during this call, so it is in flight; it is screened first (see
        ``gateway.mcp.server_requests``): without a response stream it cannot reach the client.
        """
        emit, downstream, pool = ctx.emit, ctx.session, self.pool
        session_id = downstream.id if downstream is not None else None

        async def relay(message: dict[str, Any]) -> None:
            if str(message.get("method", "")).endswith("/list_changed"):
                pool.schedule_refresh(upstream)
            elif downstream is not None and emit is not None:
                await pool.relay(downstream, upstream_session, message, emit)
            elif await pool.screen(
                upstream_session,
                message,
                capabilities=ctx.client_capabilities if emit is not None else None,
                in_flight=True,
                principal=ctx.principal,
                session=session_id,
            ) and emit is not None:
                await emit(message)  # stateless: the client's own envelope capabilities decided

        return relay
