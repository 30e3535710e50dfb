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
from typing import Any

import orjson
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from gateway.config import ServerConfig
from gateway.identity.origin import OriginPolicy
from gateway.identity.principal import Authenticator, AuthFailure, Principal
from gateway.mcp.context import RequestContext
from gateway.mcp.http_io import (
    SSE_HEADERS,
    BodyTooLarge,
    ClientLink,
    Receive,
    ResponseChannel,
    Scope,
    Send,
    accepts,
    read_body,
    send_empty,
    send_error,
    send_json,
)
from gateway.mcp.jsonrpc import INVALID_REQUEST, ProtocolError, decode_message, error_response
from gateway.mcp.modern import ModernEndpoint, unsupported_version
from gateway.mcp.rate_limit import LIMIT_EXCEEDED, RateLimiter, retry_after
from gateway.mcp.resumable import FIRST_RESUMABLE_VERSION, EventsLost, ResumableStreams
from gateway.mcp.router import Router
from gateway.mcp.sessions import DownstreamSession, SessionLimitExceeded, SessionRegistry
from gateway.ports.sse import format_sse

log = logging.getLogger("triplock.transport")

_ALL_VERSIONS = frozenset((*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS))
_KEEPALIVE_SECONDS = 15.0


# The MCP transport's own fields this endpoint reads (Mcp-Method and Mcp-Name: gateway.mcp.modern).
_TRIMMED_FIELDS = ("mcp-session-id", "mcp-protocol-version", "last-event-id")


def trim_fields(headers: dict[str, str]) -> None:
    """Drop optional whitespace around the transport's fields, in place (RFC 9110 section 5.5).

    A field value excludes leading and trailing SP/HTAB; the HTTP parsers (httptools, under
    both servers) drop the leading ones only, so ``MCP-Protocol-Version: 2025-11-25 `` would
    otherwise be an unsupported version and a padded session id an unknown session. Three
    lookups, whatever the number of headers.
    """
    for name in _TRIMMED_FIELDS:
        value = headers.get(name)
        if value is not None:
            headers[name] = value.strip(" \t")


async def _until_disconnect(receive: Receive) -> None:
    # The first message of a GET is the (empty) request itself; only http.disconnect means gone.
    while (await receive())["type"] != "http.disconnect":
        pass


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
        self.modern = ModernEndpoint(router)  # the stateless era's POSTs
        self.streams = ResumableStreams()  # the handshake era's resumable SSE responses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        trim_fields(headers)
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
        if not accepts(headers, "application/json", "text/event-stream"):
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
            # UnsupportedProtocolVersionError: what each era's clients read to pick another version.
            await send_json(send, 400, unsupported_version(msg.id, version))
            return
        if (
            sid is None
            and msg.kind == "request"
            and (msg.method == "server/discover" or version in MODERN_PROTOCOL_VERSIONS)
        ):
            # 2026-07-28 (initialize included: a removed method there, answered 404 / -32601).
            await self.modern.post(scope, receive, send, headers, principal, msg.raw)
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
        resumable = None
        if session.protocol_version >= FIRST_RESUMABLE_VERSION:  # ISO dates compare as strings
            streams, sid_ = self.streams, session.id
            resumable = lambda: streams.open(sid_)  # noqa: E731 (made only if the reply turns to SSE)
        link = ClientLink(receive)  # a held call watches it for a dropped connection (gateway.guard.hold)
        channel = link.channel = ResponseChannel(send, [], accepts(headers, "text/event-stream"), resumable)
        ctx = RequestContext(
            principal.id,
            session.protocol_version,
            session,
            channel.emit if channel.sse_ok else None,
            session.capabilities,
            principal.agent,
            principal.groups,
            principal.roles,
            client=link,
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
        reused = False
        if session is not None and task is not None:
            if rid in session.in_flight:
                # The spec says a client MUST NOT reuse an id within a session; one that does is served, and
                # its requests with that id are cancelled together (it cannot tell us which one it meant).
                session.in_flight_more.setdefault(rid, []).append(task)
                reused = True
            else:
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
                if reused and task is not None:
                    session.forget_reused(rid, task)
                elif session.in_flight.get(rid) is task:
                    del session.in_flight[rid]
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
            rid = params.get("requestId")
            for task in (session.in_flight.get(rid), *session.in_flight_more.get(rid, ())):
                if task is not None:
                    task.cancel()  # the upstream adapter forwards the cancellation as it unwinds
        elif method == "notifications/roots/list_changed":
            for up in list(session.upstreams.values()):
                await up.notify(raw)

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
        last_event_id = headers.get("last-event-id")
        if last_event_id is not None:
            await self._resume(send, receive, session, last_event_id)
            return
        if session.get_stream_open:
            await send_error(send, 409, INVALID_REQUEST, "Conflict: this session already has a GET stream open")
            return
        session.get_stream_open = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
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

    async def _resume(self, send: Send, receive: Receive, session: DownstreamSession, last_event_id: str) -> None:
        """A reconnection with ``Last-Event-ID``: the rest of that stream (gateway.mcp.resumable)."""
        found = self.streams.find(session.id, last_event_id)
        if found is None:
            await send_error(send, 404, INVALID_REQUEST, "Unknown Last-Event-ID: no such stream in this session")
            return
        log, after = found
        events = log.follow(after)
        try:
            first = await anext(events, None)
        except EventsLost:
            await send_error(send, 404, INVALID_REQUEST, "Last-Event-ID is older than the events kept for this stream")
            return
        disconnected = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            frame = first
            while frame is not None and not disconnected.done():
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                nxt = asyncio.ensure_future(anext(events, None))
                await asyncio.wait({nxt, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    return
                frame = nxt.result()
            await send({"type": "http.response.body", "body": b""})
        except OSError:
            return
        finally:
            disconnected.cancel()

    async def _delete(self, send: Send, headers: dict[str, str], principal: Principal) -> None:
        sid = headers.get("mcp-session-id")
        if sid is None:
            await send_error(send, 400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
            return
        if await self.sessions.get(sid, principal.id) is None or not await self.sessions.close(sid):
            await send_error(send, 404, INVALID_REQUEST, "Session not found")
            return
        await send_empty(send, 200)
