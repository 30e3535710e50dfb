"""MCP streamable HTTP at ``/mcp``, both protocol eras, as a lean raw-ASGI endpoint.

Handshake era (2025-06-18, 2025-11-25): ``initialize`` opens a session whose id
travels in ``Mcp-Session-Id``; GET opens the session's server-to-client stream;
DELETE ends it. Stateless era (2026-07-28): every POST carries its own envelope
in ``params._meta`` and the ``MCP-Protocol-Version``/``Mcp-Method``/``Mcp-Name``
headers, validated with the SDK's pure inbound ladder.

A reply is JSON unless the request produces intermediate messages (progress,
relayed sampling...) before its answer; then the response commits to SSE.
Raw ASGI rather than a framework route: this is the hot path (see load_tests/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, classify_inbound_request, find_duplicated_routing_header
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from gateway.config import ServerConfig
from gateway.identity.origin import OriginPolicy
from gateway.identity.principal import Authenticator, AuthFailure, Principal
from gateway.mcp.context import RequestContext
from gateway.mcp.jsonrpc import INVALID_REQUEST, ProtocolError, decode_message, error_response
from gateway.mcp.rate_limit import LIMIT_EXCEEDED, RateLimiter, retry_after
from gateway.mcp.router import Router
from gateway.mcp.sessions import DownstreamSession, SessionLimitExceeded, SessionRegistry
from gateway.ports.sse import format_sse

log = logging.getLogger("triplock.transport")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
_ALL_VERSIONS = frozenset((*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS))
_KEEPALIVE_SECONDS = 15.0


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body, refusing (early) anything over ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(payload)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0"), *(headers or [])]}
    )
    await send({"type": "http.response.body", "body": b""})


async def send_error(send: Send, status: int, code: int, message: str, request_id: Any = None) -> None:
    await send_json(send, status, error_response(request_id, code, message))


class ResponseChannel:
    """One POST's reply: JSON if the answer comes first, SSE once anything else must be sent."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]], sse_ok: bool) -> None:
        self._send = send
        self._headers = headers
        self.sse_ok = sse_ok
        self.streaming = False
        self._lock = asyncio.Lock()

    async def emit(self, message: dict[str, Any]) -> None:
        """Send an intermediate message (commits the reply to SSE)."""
        async with self._lock:
            if not self.streaming:
                self.streaming = True
                await self._send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *self._headers]})
            await self._send(
                {"type": "http.response.body", "body": format_sse(orjson.dumps(message)), "more_body": True}
            )

    async def finish(self, message: dict[str, Any] | None, status: int = 200) -> None:
        """Send the final answer (None: end the stream without one, e.g. after cancellation)."""
        async with self._lock:
            if self.streaming:
                body = format_sse(orjson.dumps(message)) if message is not None else b""
                await self._send({"type": "http.response.body", "body": body})
            elif message is not None:
                await send_json(self._send, status, message, self._headers)
            else:
                await send_empty(self._send, 204, self._headers)


async def _until_disconnect(receive: Receive) -> None:
    # The first message of a GET is the (empty) request itself; only http.disconnect means gone.
    while (await receive())["type"] != "http.disconnect":
        pass


def _accepts(headers: dict[str, str], *types: str) -> bool:
    accept = headers.get("accept", "")
    if not accept or "*/*" in accept:
        return True
    return all(t in accept for t in types)


class McpEndpoint:
    """The ASGI app mounted at the MCP path."""

    limiter: RateLimiter | None = None  # requests per principal (limits.requests_per_second); set by the app

    def __init__(
        self,
        config: ServerConfig,
        router: Router,
        sessions: SessionRegistry,
        authenticator: Authenticator,
    ) -> None:
        self.config = config
        self.router = router
        self.sessions = sessions
        self.authenticator = authenticator
        # Host and Origin (DNS rebinding, other sites' pages): the same policy as every other route.
        self.origins = OriginPolicy.from_config(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refused = self.origins.check(headers)
        if refused is not None:
            await send_error(send, refused.status, INVALID_REQUEST, refused.message)
            return
        principal = await self.authenticator.authenticate(headers)
        if isinstance(principal, AuthFailure):
            extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in principal.headers]
            await send_json(send, principal.status, principal.body, extra)
            return
        if self.limiter is not None and (wait := self.limiter.take(principal.id)):
            self.router.telemetry.metrics.limit_exceeded("requests_per_principal")
            body = error_response(None, LIMIT_EXCEEDED, self.limiter.refusal(wait))
            await send_json(send, 429, body, [(b"retry-after", retry_after(wait).encode())])
            return
        method = scope["method"]
        if method == "POST":
            await self._post(scope, receive, send, headers, principal)
        elif method == "GET":
            await self._get(send, receive, headers, principal)
        elif method == "DELETE":
            await self._delete(send, headers, principal)
        else:
            await send_empty(send, 405, [(b"allow", b"GET, POST, DELETE")])

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], principal: Principal
    ) -> None:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            await send_error(
                send, 415, INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"
            )
            return
        if not _accepts(headers, "application/json", "text/event-stream"):
            await send_error(
                send, 406, INVALID_REQUEST, "Not Acceptable: Accept must include application/json and text/event-stream"
            )
            return
        try:
            body = await read_body(receive, self.config.max_body_bytes)
        except BodyTooLarge:
            await send_error(send, 413, INVALID_REQUEST, f"Request body over {self.config.max_body_bytes} bytes")
            return
        except ConnectionResetError:
            return
        try:
            msg = decode_message(body, max_depth=self.config.max_json_depth)
        except ProtocolError as exc:
            await send_json(send, 400, exc.to_message())
            return
        sid = headers.get("mcp-session-id")
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in _ALL_VERSIONS:
            await send_error(
                send, 400, INVALID_REQUEST, f"Bad Request: unsupported MCP-Protocol-Version {version!r}", msg.id
            )
            return
        if (
            sid is None
            and msg.kind == "request"
            and msg.method != "initialize"
            and (msg.method == "server/discover" or version in MODERN_PROTOCOL_VERSIONS)
        ):
            await self._post_modern(scope, send, headers, principal, msg.raw)
            return
        if msg.kind == "request" and msg.method == "initialize":
            await self._initialize(send, principal, msg.raw, sid)
            return
        if sid is None:
            await send_error(send, 400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required", msg.id)
            return
        session = await self.sessions.get(sid, principal.id)
        if session is None:
            await send_error(
                send, 404, INVALID_REQUEST, "Session not found: it expired or never existed; initialize again", msg.id
            )
            return
        if msg.kind == "notification":
            await self._client_notification(session, msg.raw)
            await send_empty(send, 202)
            return
        if msg.kind == "response":
            relayed = session.take_relayed(msg.id)
            if relayed is not None:
                upstream, original_id = relayed
                await upstream.send_response({**msg.raw, "id": original_id})
            else:
                session.answer(msg.raw)
            await send_empty(send, 202)
            return
        channel = ResponseChannel(send, [], _accepts(headers, "text/event-stream"))
        ctx = RequestContext(
            principal.id,
            session.protocol_version,
            session,
            channel.emit if channel.sse_ok else None,
            session.capabilities,
            principal.agent,
            principal.groups,
            principal.roles,
        )
        await self._run(ctx, msg.raw, channel, session, scope)

    async def _run(
        self,
        ctx: RequestContext,
        raw: dict[str, Any],
        channel: ResponseChannel,
        session: DownstreamSession | None,
        scope: Scope | None = None,
    ) -> None:
        with self.router.telemetry.server_span(ctx, raw, scope) as span:  # SERVER span; NOOP when off
            span.reply(await self._answer(ctx, raw, channel, session))

    async def _answer(
        self, ctx: RequestContext, raw: dict[str, Any], channel: ResponseChannel, session: DownstreamSession | None
    ) -> dict[str, Any] | None:
        task = asyncio.current_task()
        rid = raw.get("id")
        if session is not None and task is not None:
            session.in_flight[rid] = task
        try:
            reply = await self.router.handle(ctx, raw)
        except asyncio.CancelledError:
            if session is not None and session.closed:
                raise
            # Cancelled by the client (notifications/cancelled): end the exchange without an answer.
            with contextlib.suppress(Exception):
                await channel.finish(None)
            return None
        except Exception:
            log.exception("internal error handling %s", raw.get("method"))
            reply = error_response(rid, -32603, "Internal error")
        finally:
            if session is not None:
                session.in_flight.pop(rid, None)
        status = 200
        if ctx.modern and "error" in reply:
            status = ERROR_CODE_HTTP_STATUS.get(reply["error"].get("code"), 200)
        await channel.finish(reply, status)
        return reply

    async def _initialize(self, send: Send, principal: Principal, raw: dict[str, Any], sid: str | None) -> None:
        params = raw.get("params") or {}
        caps = params.get("capabilities")
        info = params.get("clientInfo")
        if (
            not isinstance(caps, dict)
            or not isinstance(info, dict)
            or not isinstance(params.get("protocolVersion"), str)
        ):
            await send_error(
                send,
                400,
                -32602,
                "Invalid params: initialize needs protocolVersion, capabilities and clientInfo",
                raw["id"],
            )
            return
        result = self.router.initialize_result(params["protocolVersion"])
        try:
            session = await self.sessions.create(result["protocolVersion"], info, caps, principal.id)
        except SessionLimitExceeded as exc:  # HTTP 429: the transport's session, not the protocol, is refused
            self.router.telemetry.metrics.limit_exceeded("sessions_per_principal")
            await send_json(send, 429, error_response(raw["id"], LIMIT_EXCEEDED, str(exc)))
            return
        await send_json(
            send, 200, {"jsonrpc": "2.0", "id": raw["id"], "result": result}, [(b"mcp-session-id", session.id.encode())]
        )

    async def _client_notification(self, session: DownstreamSession, raw: dict[str, Any]) -> None:
        method = raw["method"]
        params = raw.get("params") or {}
        if method == "notifications/initialized":
            session.initialized = True
        elif method == "notifications/cancelled":
            task = session.in_flight.get(params.get("requestId"))
            if task is not None:
                task.cancel()  # the upstream adapter forwards the cancellation as it unwinds
        elif method == "notifications/roots/list_changed":
            for up in list(session.upstreams.values()):
                await up.notify(raw)

    async def _post_modern(
        self, scope: Scope, send: Send, headers: dict[str, str], principal: Principal, raw: dict[str, Any]
    ) -> None:
        dup = find_duplicated_routing_header((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        rid = raw.get("id")
        if dup is not None:
            await send_error(send, 400, -32020, f"Header {dup} appears more than once", rid)
            return
        route = classify_inbound_request(raw, headers=headers)
        if not hasattr(route, "protocol_version"):
            status = ERROR_CODE_HTTP_STATUS.get(route.code, 400)
            await send_json(send, status, error_response(rid, route.code, route.message, route.data))
            return
        caps = route.client_capabilities if isinstance(route.client_capabilities, dict) else {}  # type: ignore[union-attr]
        channel = ResponseChannel(send, [], _accepts(headers, "text/event-stream"))
        ctx = RequestContext(
            principal.id,
            route.protocol_version,
            None,
            channel.emit if channel.sse_ok else None,
            caps,
            principal.agent,
            principal.groups,
            principal.roles,
        )
        await self._run(ctx, raw, channel, None, scope)

    async def _get(self, send: Send, receive: Receive, headers: dict[str, str], principal: Principal) -> None:
        if "text/event-stream" not in headers.get("accept", ""):
            await send_error(send, 406, INVALID_REQUEST, "Not Acceptable: Accept must include text/event-stream")
            return
        sid = headers.get("mcp-session-id")
        if sid is None:
            # The stateless era has no standalone stream.
            await send_empty(send, 405, [(b"allow", b"POST")])
            return
        session = await self.sessions.get(sid, principal.id)
        if session is None:
            await send_error(send, 404, INVALID_REQUEST, "Session not found")
            return
        if session.get_stream_open:
            await send_error(send, 409, INVALID_REQUEST, "Conflict: this session already has a GET stream open")
            return
        session.get_stream_open = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
            disconnected = asyncio.create_task(_until_disconnect(receive))
            while not session.closed:
                getter = asyncio.create_task(session.outbox.get())
                done, _ = await asyncio.wait(
                    {getter, disconnected}, timeout=_KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if disconnected in done:
                    getter.cancel()
                    return
                if getter in done:
                    body = format_sse(orjson.dumps(getter.result()))
                else:
                    getter.cancel()
                    body = b": keepalive\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
            disconnected.cancel()
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            return
        finally:
            session.get_stream_open = False

    async def _delete(self, send: Send, headers: dict[str, str], principal: Principal) -> None:
        sid = headers.get("mcp-session-id")
        if sid is None:
            await send_error(send, 400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
            return
        if await self.sessions.get(sid, principal.id) is None or not await self.sessions.close(sid):
            await send_error(send, 404, INVALID_REQUEST, "Session not found")
            return
        await send_empty(send, 200)
