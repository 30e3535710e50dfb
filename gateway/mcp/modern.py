"""The stateless era (2026-07-28) at ``/mcp``: one POST, one self-contained request.

What the revision asks of a server, beyond the router's answers:

* its version ladder (``MCP-Protocol-Version``, the ``_meta`` envelope, ``Mcp-Method`` /
  ``Mcp-Name``), validated with the SDK's pure inbound ladder; an unknown version is
  ``UnsupportedProtocolVersionError`` (-32022, HTTP 400, ``data.supported`` and ``requested``);
* the methods it removed (``initialize``, ``ping``, ``logging/setLevel``,
  ``resources/subscribe``, ``resources/unsubscribe``, the tasks of the 2025-11-25 core) are
  "not implemented": HTTP 404 with -32601;
* ``subscriptions/listen`` (:mod:`gateway.mcp.subscriptions`; its resource URIs:
  :mod:`gateway.mcp.listen_resources`);
* input-required results for ``tools/call``, ``prompts/get`` and ``resources/read``
  (:mod:`gateway.mcp.input_required`): the upstream's questions go to the client in the result,
  its answers come back on the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    classify_inbound_request,
    find_duplicated_routing_header,
)
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.jsonrpc import UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from gateway.identity.principal import Principal
from gateway.mcp import input_required
from gateway.mcp.context import RequestContext
from gateway.mcp.http_io import SSE_HEADERS, ClientLink, Receive, ResponseChannel, Scope, Send, accepts, send_json
from gateway.mcp.input_required import INTERACTIVE_METHODS, InputExchange, InputExchanges
from gateway.mcp.jsonrpc import INTERNAL_ERROR, METHOD_NOT_FOUND, ProtocolError, error_response, result_response
from gateway.mcp.listen_resources import ADMITTED, check_request, requested_uris
from gateway.mcp.router import Router
from gateway.mcp.subscriptions import Listener, SubscriptionHub, accepted_filter
from gateway.ports.sse import format_sse

log = logging.getLogger("triplock.transport")

SUPPORTED_VERSIONS = [*MODERN_PROTOCOL_VERSIONS, *reversed(HANDSHAKE_PROTOCOL_VERSIONS)]
# Methods of the handshake era that 2026-07-28 removed: a request for one is "not implemented".
REMOVED_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
    }
)
_KEEPALIVE_SECONDS = 15.0


def unsupported_version(request_id: Any, requested: str) -> dict[str, Any]:
    """The spec's ``UnsupportedProtocolVersionError`` (sent with HTTP 400)."""
    data = {"supported": SUPPORTED_VERSIONS, "requested": requested}
    message = f"Unsupported protocol version {requested!r}"
    return error_response(request_id, UNSUPPORTED_PROTOCOL_VERSION, message, data)


def removed_method(request_id: Any, method: str) -> dict[str, Any]:
    """-32601 for a method this revision no longer has (sent with HTTP 404)."""
    return error_response(request_id, METHOD_NOT_FOUND, f"Method not found: {method} is not part of 2026-07-28")


def discover_answer(reply: dict[str, Any], subscribe: bool = False) -> dict[str, Any]:
    """The router's ``server/discover`` answer as the 2026-07-28 schema has it.

    ``DiscoverResult`` has no ``serverInfo`` field: the server's name and version go in the result's
    ``_meta["io.modelcontextprotocol/serverInfo"]`` (where the SDK clients read it). ``subscribe``:
    some upstream takes resource subscriptions, so a listen's ``resourceSubscriptions`` can be
    honoured (``resources.subscribe``, as the revision has it).
    """
    result = reply.get("result")
    if not isinstance(result, dict) or "serverInfo" not in result:
        return reply
    rest = {k: v for k, v in result.items() if k != "serverInfo"}
    caps = rest.get("capabilities")
    if subscribe and isinstance(caps, dict) and isinstance(caps.get("resources"), dict):
        rest["capabilities"] = {**caps, "resources": {**caps["resources"], "subscribe": True}}
    meta = rest.get("_meta")
    rest["_meta"] = {**(meta if isinstance(meta, dict) else {}), SERVER_INFO_META_KEY: result["serverInfo"]}
    return {**reply, "result": rest}


_ROUTING_HEADERS = (MCP_PROTOCOL_VERSION_HEADER, MCP_METHOD_HEADER, MCP_NAME_HEADER)


def routing_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers the version ladder compares with the body, without optional whitespace.

    RFC 9110 section 5.5: a field value does not include leading or trailing whitespace (SP,
    HTAB), and the 2026-07-28 revision (SEP-2243) makes servers accept ``Mcp-Name:  tool ``.
    The gateway's HTTP parser keeps the bytes as sent, so these three are trimmed here (three
    lookups: the modern POST path stays O(1) in the number of headers).
    """
    return {name: value.strip(" \t") for name in _ROUTING_HEADERS if (value := headers.get(name)) is not None}


class ModernEndpoint:
    """Answers 2026-07-28 POSTs (the endpoint hands them over after authentication)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.exchanges = InputExchanges()
        self.hub = SubscriptionHub()
        router.pool.on_catalog_change(self.hub.on_catalog_change)

    async def post(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        principal: Principal,
        raw: dict[str, Any],
    ) -> None:
        rid = raw.get("id")
        dup = find_duplicated_routing_header((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        if dup is not None:
            await send_json(send, 400, error_response(rid, -32020, f"Header {dup} appears more than once"))
            return
        route = classify_inbound_request(raw, headers=routing_headers(headers))
        if not hasattr(route, "protocol_version"):
            status = ERROR_CODE_HTTP_STATUS.get(route.code, 400)
            await send_json(send, status, error_response(rid, route.code, route.message, route.data))
            return
        method = str(raw.get("method"))
        if method in REMOVED_METHODS:
            await send_json(send, 404, removed_method(rid, method))
            return
        caps = route.client_capabilities if isinstance(route.client_capabilities, dict) else {}  # type: ignore[union-attr]
        channel = ResponseChannel(send, [], accepts(headers, "text/event-stream"))
        ctx = RequestContext(
            principal.id,
            route.protocol_version,
            None,
            channel.emit if channel.sse_ok else None,
            caps,
            principal.agent,
            principal.groups,
            principal.roles,
            client=ClientLink(receive),  # the stateless era's client gives up by disconnecting (gateway.guard.hold)
        )
        if method == "subscriptions/listen":
            await self._listen(send, receive, raw, ctx)
            return
        with self.router.telemetry.server_span(ctx, raw, scope) as span:  # SERVER span; NOOP when off
            if method in INTERACTIVE_METHODS:
                reply = await self._interactive(ctx, raw)
            else:
                reply = await self._handle(ctx, raw)
                if method == "server/discover":
                    subscribable = any((c.get("resources") or {}).get("subscribe")
                                       for c in self.router.pool.upstream_capabilities())
                    reply = discover_answer(reply, subscribable)
            span.reply(reply)
        status = ERROR_CODE_HTTP_STATUS.get(reply["error"].get("code"), 200) if "error" in reply else 200
        await channel.finish(reply, status)

    async def _handle(self, ctx: RequestContext, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.router.handle(ctx, raw)
        except Exception:
            log.exception("internal error handling %s", raw.get("method"))
            return error_response(raw.get("id"), INTERNAL_ERROR, "Internal error")

    # -- input-required results -------------------------------------------------------------
    async def _interactive(self, ctx: RequestContext, raw: dict[str, Any]) -> dict[str, Any]:
        """Run (or continue) a request whose upstream may ask the client for input."""
        rid = raw.get("id")
        params = raw.get("params") or {}
        method = str(raw.get("method"))
        try:
            if "requestState" in params:
                exchange = self.exchanges.resume(params["requestState"], ctx.principal, method, params)
                await exchange.answer(params.get("inputResponses"))
            else:
                exchange = self.exchanges.open(ctx.principal, method, params)
                self._start(exchange, ctx, raw)
        except ProtocolError as exc:
            exc.request_id = rid
            return exc.to_message()
        exchange.emit = ctx.emit
        if exchange.context is not None:  # a hold in this round watches this POST's client (gateway.guard.hold)
            exchange.context.client = ctx.client
        try:
            final = await exchange.outcome()
        except asyncio.CancelledError:
            if exchange.task is not None and exchange.task.cancelled():
                return error_response(rid, INTERNAL_ERROR, "The request was abandoned while waiting for input")
            raise
        except Exception:
            log.exception("internal error handling %s", method)
            return error_response(rid, INTERNAL_ERROR, "Internal error")
        finally:
            exchange.emit = None
            if exchange.context is not None:
                exchange.context.client = None
        if final is not None:
            return {**final, "id": rid}
        token = self.exchanges.park(exchange)
        result = {"resultType": "input_required", "inputRequests": exchange.input_requests(), "requestState": token}
        return result_response(rid, result)

    def _start(self, exchange: InputExchange, ctx: RequestContext, raw: dict[str, Any]) -> None:
        """Run the guarded request in the background, its upstream questions going to ``exchange``.

        A request without ``requestState`` is a first attempt (the gateway's ``input_required``
        results always carry one), but SEP-2322 lets it carry ``inputResponses``: the retry of a
        result that had no ``requestState``, or answers the client already has. They go to the
        upstream with the request: a 2026-07-28 upstream finishes with them or asks again for what
        it still needs; a session-era upstream has no such field and asks mid-call as ever.
        """
        call = raw
        background = RequestContext(
            ctx.principal,
            ctx.protocol_version,
            None,
            exchange.relay,
            ctx.client_capabilities,
            ctx.agent,
            ctx.groups,
            ctx.roles,
            client=ctx.client,
        )
        exchange.context = background

        async def run() -> dict[str, Any]:
            input_required.CURRENT.set(exchange)
            return await self._handle(background, call)

        exchange.task = asyncio.get_running_loop().create_task(run())

    # -- subscriptions/listen ---------------------------------------------------------------
    async def _listen(self, send: Send, receive: Receive, raw: dict[str, Any], ctx: RequestContext) -> None:
        params = raw.get("params") or {}
        requested = params.get("notifications") if isinstance(params, dict) else None
        listener = Listener(raw.get("id"), accepted_filter(requested))
        self.hub.listeners.add(listener)  # list changes from now on queue behind the acknowledgment
        try:
            uris = await self._held_uris(ctx, listener, requested_uris(requested))
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await _send_event(send, listener.acknowledgment(uris))
            gone = asyncio.ensure_future(_until_disconnect(receive))
            try:
                while True:
                    getter = asyncio.ensure_future(listener.next())
                    done, _ = await asyncio.wait(
                        {getter, gone}, timeout=_KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    if gone in done:
                        getter.cancel()
                        return
                    if getter in done:
                        await _send_event(send, getter.result())
                    else:
                        getter.cancel()
                        await send({"type": "http.response.body", "body": b":\n\n", "more_body": True})
            finally:
                gone.cancel()
        except OSError:
            return
        finally:
            self.hub.listeners.discard(listener)
            self.router.forwarder.listens.release(listener)

    async def _held_uris(self, ctx: RequestContext, listener: Listener, uris: list[str]) -> list[str]:
        """The listen's URIs that pass the guarded path as ``resources/subscribe`` and their upstream takes.

        Each is checked as a stateless ``resources/subscribe`` of the caller (authorized, decided,
        audited; no response stream: a hold's notices have nowhere to go); the guard's last step
        notes the URI's upstream in ``ADMITTED`` instead of sending it (gateway.mcp.listen_resources).
        """
        if not uris:
            return []
        check = RequestContext(ctx.principal, ctx.protocol_version, None, None, ctx.client_capabilities, ctx.agent,
                               ctx.groups, ctx.roles)
        admitted: dict[str, str] = {}
        token = ADMITTED.set(admitted)
        try:
            replies = await asyncio.gather(*(self._handle(check, check_request(u, n)) for n, u in enumerate(uris)))
        finally:
            ADMITTED.reset(token)
        passed = {u for u, reply in zip(uris, replies, strict=True) if "result" in reply}
        allowed = {u: upstream for u, upstream in admitted.items() if u in passed}
        return await self.router.forwarder.listens.accept(listener, uris, allowed)


async def _send_event(send: Send, message: dict[str, Any]) -> None:
    await send({"type": "http.response.body", "body": format_sse(orjson.dumps(message)), "more_body": True})


async def _until_disconnect(receive: Receive) -> None:
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
