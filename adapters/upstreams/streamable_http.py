"""Upstream MCP servers over streamable HTTP, on one keep-alive pool.

Each :class:`HttpUpstreamSession` is one handshake-era upstream MCP session (its own
``Mcp-Session-Id``) sharing the pooled connections of its :class:`HttpUpstream`.
The session's GET stream is opened before the first call, because some servers
send server-to-client requests only there. Upstreams that speak 2026-07-28 get that
wire where it fits (:mod:`adapters.upstreams.modern_wire`, which also says how the era is found).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

import orjson

from adapters.http.client import Http1Pool, HttpError, Response, ResponseTooLarge
from adapters.upstreams.deadlines import deadline
from adapters.upstreams.modern_wire import EraMemory, open_in_era
from adapters.upstreams.oauth import (
    AuthorizationCodeTokenSource,
    UnsafeHeaderValue,
    UpstreamAuthError,
    header_safe,
    identity_headers,
    strip_client_credentials,
    token_source_for,
)
from adapters.upstreams.sse_resume import MAX_IDLE_RESUMES, StreamCursor
from adapters.upstreams.trace_headers import trace_headers
from gateway.config import UpstreamConfig
from gateway.ports import upstream as port
from gateway.ports.grants import GrantStore
from gateway.ports.sse import SseTooLarge, iter_sse
from gateway.ports.upstream import UPSTREAM_PROTOCOL_VERSION, ClientIdentity, MessageHandler, UpstreamError

log = logging.getLogger("triplock.upstream.http")

_ACCEPT = "application/json, text/event-stream"

LimitHook = Callable[[str, str], None]
"""Told ``(limit, upstream)`` each time a limit refuses something (for the gateway's metrics)."""


class HttpUpstream:
    """Connector for one streamable-HTTP upstream: owns the connection pool and credentials."""

    def __init__(self, config: UpstreamConfig, on_limit: LimitHook | None = None, grants: GrantStore | None = None):
        self.name = config.name
        self.config = config
        self.on_limit = on_limit
        assert config.url is not None
        self.url = config.url
        # Only the upstream's own credentials: nothing from the client is ever copied in.
        headers = {
            "accept": _ACCEPT,
            "content-type": "application/json",
            **strip_client_credentials(dict(config.headers), config),
        }
        token = config.bearer_token()
        if token and not header_safe(token):  # configured headers are checked by the config itself
            where = config.bearer_token_env or config.bearer_token_file
            raise ValueError(f"upstream {config.name}: the bearer token in {where} contains CR, LF or NUL")
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._base_headers = headers
        self._pool = Http1Pool(config.url, connect_timeout=config.connect_timeout)
        self.token_source = token_source_for(config, grants)  # grants: where authorization code grants live
        self.dpop = self.token_source if isinstance(self.token_source, AuthorizationCodeTokenSource) else None
        self.era = EraMemory(config.protocol)

    async def open_session(self, identity: ClientIdentity, on_server_message: MessageHandler) -> port.UpstreamSession:
        """The handshake era where the upstream speaks it (initialize, GET stream), else 2026-07-28 (modern_wire)."""
        return await open_in_era(self, identity, lambda named: self._handshake(identity, on_server_message, named))

    async def _handshake(self, identity: ClientIdentity, handler: MessageHandler, named: dict[str, str]) -> Any:
        session = HttpUpstreamSession(self, handler, named)
        await session.initialize(identity)
        return session

    def wire(self, headers: dict[str, str]) -> HttpUpstreamSession:
        """A bare exchange (``post``) with this upstream's pool and credentials: no handshake, no GET stream."""
        return HttpUpstreamSession(self, self.era.nowhere, headers)

    def named(self, principal: str | None) -> dict[str, str]:
        """The identity header for ``principal``; a value that would inject headers refuses the request."""
        try:
            return identity_headers(self.config, principal)
        except UnsafeHeaderValue as exc:
            self.limit_hit("header_value")
            raise UpstreamError(self.name, "protocol", str(exc)) from None

    def limit_hit(self, limit: str) -> None:
        if self.on_limit is not None:
            self.on_limit(limit, self.name)

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self.token_source is not None:
            await self.token_source.aclose()


class HttpUpstreamSession:
    """One MCP session with an HTTP upstream."""

    era = port.HANDSHAKE_ERA  # the 2026-07-28 wire's session is modern_wire's

    def __init__(
        self, connector: HttpUpstream, on_server_message: MessageHandler, extra_headers: dict[str, str] | None = None
    ) -> None:
        self.upstream = connector.name
        self._connector = connector
        self._pool = connector._pool
        self._on_server_message = on_server_message
        self._headers = {**connector._base_headers, **(extra_headers or {})}
        self._ids = itertools.count(1)
        self._get_task: asyncio.Task[None] | None = None
        self._closed = False
        self.initialize_result: dict[str, Any] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    async def initialize(self, identity: ClientIdentity) -> None:
        """Handshake, then ``notifications/initialized``, then the GET stream."""
        cfg = self._connector.config
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": UPSTREAM_PROTOCOL_VERSION,
                "capabilities": identity.capabilities,
                "clientInfo": identity.client_info,
            },
        }
        response, headers = await self.post(init, None, cfg.connect_timeout)
        if "error" in response:
            raise UpstreamError(self.upstream, "protocol", f"initialize refused: {response['error']}")
        result = response.get("result")
        if not isinstance(result, dict):
            raise UpstreamError(self.upstream, "protocol", "initialize answered without a result object")
        self.initialize_result = result
        sid = headers.get("mcp-session-id")
        version = str(result.get("protocolVersion", UPSTREAM_PROTOCOL_VERSION))
        if not (header_safe(version) and header_safe(sid or "")):  # both go back in our request headers
            self._connector.limit_hit("header_value")
            raise UpstreamError(self.upstream, "protocol", "initialize answered a session id or version with CR/LF/NUL")
        if sid:
            self._headers["mcp-session-id"] = sid
        self._headers["mcp-protocol-version"] = version
        await self.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
        ready = asyncio.Event()
        self._get_task = asyncio.create_task(self._run_get_stream(ready), name=f"get-stream:{self.upstream}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cfg.connect_timeout):
                await ready.wait()

    async def request(
        self,
        message: dict[str, Any],
        *,
        on_message: MessageHandler | None,
        timeout: float,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """Forward one request; the answer comes back with the caller's id."""
        caller_id = message.get("id")
        outbound = {**message, "id": next(self._ids)}
        extra = trace_headers(message)
        if principal is not None and (named := self._connector.named(principal)):
            extra = {**extra, **named} if extra else named
        response, _ = await self.post(outbound, on_message, timeout, extra)
        response["id"] = caller_id
        return response

    async def notify(self, message: dict[str, Any]) -> None:
        await self._fire(message)

    send_response = notify  # an answer to the upstream's request goes the same way: one POST, fire and forget

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._get_task:
            self._get_task.cancel()
        if "mcp-session-id" in self._headers:
            with contextlib.suppress(HttpError, TimeoutError, UpstreamAuthError):
                async with asyncio.timeout(2.0):
                    resp = await self._pool.request("DELETE", await self._request_headers("DELETE"))
                    await resp.read()

    async def _fire(self, message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(self._connector.config.call_timeout):
                limit = self._connector.config.max_response_bytes
                resp = await self._pool.request("POST", await self._request_headers(), orjson.dumps(message), limit)
                await resp.read()
            if resp.status >= 400:
                what = message.get("method", "response")
                log.warning("upstream %s refused a %s: HTTP %s", self.upstream, what, resp.status)
        except (HttpError, TimeoutError, UpstreamAuthError) as exc:
            log.warning("upstream %s: could not deliver message: %s", self.upstream, exc)

    async def post(
        self,
        message: dict[str, Any],
        on_message: MessageHandler | None,
        timeout: float,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        if self._closed:
            raise UpstreamError(self.upstream, "closed", "session closed")
        want_id = message["id"]
        resp: Response | None = None
        limit = self._connector.config.max_response_bytes
        try:
            async with deadline(timeout):
                base = await self._request_headers()
                headers = {**base, **extra_headers} if extra_headers else base
                body = orjson.dumps(message)
                resp = await self._pool.request("POST", headers, body, limit)
                if resp.status in (401, 403) and self._connector.token_source is not None:
                    resp = await self._reauthorize(resp, body, limit, extra_headers)
                if resp.status == 404 and "mcp-session-id" in self._headers:
                    self._closed = True
                    raise UpstreamError(self.upstream, "session_expired", "upstream no longer knows the session")
                ctype = resp.headers.get("content-type", "")
                if ctype.startswith("text/event-stream"):
                    return await self._read_sse(resp, want_id, on_message), resp.headers
                body = await resp.read()
                if resp.status >= 400 and not ctype.startswith("application/json"):
                    raise UpstreamError(self.upstream, "protocol", f"HTTP {resp.status}")
                return self._parse_json_reply(body, want_id), resp.headers
        except TimeoutError:
            raise UpstreamError(self.upstream, "timeout", f"no answer within {timeout:g}s") from None
        except ResponseTooLarge:
            raise self._too_large("upstream_response_bytes", f"its answer is over {limit} bytes") from None
        except SseTooLarge as exc:
            raise self._too_large(f"sse_{exc.what}_bytes", f"it sent {exc}") from None
        except HttpError as exc:
            raise UpstreamError(self.upstream, "unreachable", str(exc)) from None
        except UpstreamAuthError as exc:
            raise UpstreamError(self.upstream, "unreachable", f"cannot get its access token: {exc}") from None
        except asyncio.CancelledError:
            # The client cancelled: tell the upstream, without waiting (we are being cancelled).
            if self.initialize_result:
                cancel = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": want_id, "reason": "cancelled by the client"},
                }
                asyncio.get_running_loop().create_task(self._fire(cancel))
            raise
        finally:
            if resp is not None:
                resp.abandon()

    async def _reauthorize(
        self, resp: Response, body: bytes, limit: int, extra_headers: dict[str, str] | None
    ) -> Response:
        """The upstream refused our token (missing, revoked, rotated, too narrow; a DPoP proof without its nonce): one
        fresh token or proof, one retry. A 401/403 was not acted on, so not run twice; a second refusal is reported."""
        source, dpop = self._connector.token_source, self._connector.dpop
        assert source is not None
        await resp.read()
        new_nonce = dpop is not None and dpop.nonce_refused(resp.status, resp.headers)  # a new proof, same token
        if not new_nonce and not await source.refused(resp.status, resp.headers.get("www-authenticate")):
            raise UpstreamError(self.upstream, "unreachable", f"refused the request (HTTP {resp.status})")
        resp.abandon()
        base = await self._request_headers()
        again = await self._pool.request("POST", {**base, **extra_headers} if extra_headers else base, body, limit)
        if again.status in (401, 403):
            await again.read()
            again.abandon()
            fix = dpop.needs_sign_in_message if dpop else (  # authorization code: a person signs in
                f"from {source.token_url}: check the OAuth client's grants and scope there")
            raise UpstreamError(self.upstream, "unreachable", f"refused a fresh token (HTTP {again.status}) {fix}")
        return again

    def _too_large(self, limit: str, what: str) -> UpstreamError:
        self._connector.limit_hit(limit)
        why = f"{what} (limit {limit}, set by upstreams[].max_response_bytes); the gateway stopped reading it"
        return UpstreamError(self.upstream, "protocol", why)

    async def _request_headers(self, method: str = "POST") -> dict[str, str]:
        if (source := self._connector.token_source) is None:
            return self._headers
        dpop = self._connector.dpop  # authorization code grants: a DPoP-bound token needs a proof per request
        return {**self._headers, **await (dpop.request_headers(method) if dpop else source.headers())}

    def _parse_json_reply(self, body: bytes, want_id: Any) -> dict[str, Any]:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(self.upstream, "protocol", "answered with invalid JSON") from None
        if (
            not isinstance(reply, dict)
            or reply.get("id") != want_id
            or ("result" not in reply and "error" not in reply)
        ):
            raise UpstreamError(self.upstream, "protocol", "answered with something that is not the JSON-RPC response")
        return reply

    async def _read_sse(self, resp: Response, want_id: Any, on_message: MessageHandler | None) -> dict[str, Any]:
        """The response to ``want_id`` from its stream, resuming it when the server closes it early (SEP-1699:
        after ``retry`` ms, a GET with ``Last-Event-ID``, while resumptions bring new events, within the deadline)."""
        cursor = StreamCursor()
        reply = await self._read_events(resp, want_id, on_message, cursor)
        idle = 0
        while reply is None:
            if not cursor.resumable:
                raise UpstreamError(self.upstream, "closed", "stream ended before the response")
            if idle >= MAX_IDLE_RESUMES:
                raise UpstreamError(self.upstream, "closed", f"stream ended before the response, and {idle}"
                                    " resumptions with Last-Event-ID in a row brought no new event")
            await asyncio.sleep(cursor.delay())  # the server's retry: is a MUST (SEP-1699)
            seen = cursor.last_event_id
            again = await self._pool.request("GET", {**await self._request_headers("GET"), **cursor.resume_headers()})
            try:
                if again.status >= 400 or not again.headers.get("content-type", "").startswith("text/event-stream"):
                    await again.read()
                    raise UpstreamError(self.upstream, "closed", "stream ended before the response, and resuming"
                                        f" it with Last-Event-ID was refused (HTTP {again.status})")
                reply = await self._read_events(again, want_id, on_message, cursor)
            finally:
                again.abandon()
            idle = 0 if cursor.last_event_id != seen else idle + 1
        return reply

    async def _read_events(
        self, resp: Response, want_id: Any, on_message: MessageHandler | None, cursor: StreamCursor
    ) -> dict[str, Any] | None:
        """Read one SSE response until the response to ``want_id`` (None when the stream ends first)."""
        limit = self._connector.config.max_response_bytes
        async for event in iter_sse(cursor.tap(resp.iter_bytes()), max_line=limit, max_event=limit):
            cursor.saw(event.id)
            if event.event != "message" or not event.data:
                continue  # a priming event (an id and no data) or an event MCP does not use
            try:
                msg = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                raise UpstreamError(self.upstream, "protocol", "sent an SSE event that is not JSON") from None
            if not isinstance(msg, dict):
                raise UpstreamError(self.upstream, "protocol", "sent an SSE event that is not a JSON-RPC object")
            if "method" not in msg and msg.get("id") == want_id:
                return msg
            handler = on_message or self._on_server_message
            await handler(msg)
        return None

    async def _run_get_stream(self, ready: asyncio.Event) -> None:
        """Listen for server-initiated messages; reconnect while the session lives.

        A reconnection resumes where the stream stopped (``Last-Event-ID``) after the server's
        ``retry:`` when it sent one (SEP-1699), else after an exponential backoff.
        """
        delay = 0.25
        cursor = StreamCursor()
        while not self._closed:
            resp: Response | None = None
            try:
                resume = cursor.resume_headers() if cursor.resumable else {"accept": "text/event-stream"}
                resp = await self._pool.request("GET", {**await self._request_headers("GET"), **resume})
                ready.set()
                if resp.status >= 400:
                    return  # 405: the server offers no GET stream; nothing to listen to
                delay = 0.25
                limit = self._connector.config.max_response_bytes
                async for event in iter_sse(cursor.tap(resp.iter_bytes()), max_line=limit, max_event=limit):
                    cursor.saw(event.id)
                    if not event.data:
                        continue
                    try:
                        msg = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        log.warning("upstream %s: GET stream event is not JSON", self.upstream)
                        continue
                    if isinstance(msg, dict):
                        await self._on_server_message(msg)
            except asyncio.CancelledError:
                raise
            except SseTooLarge as exc:  # the connection is dropped (abandoned below) and opened again
                ready.set()
                self._connector.limit_hit(f"sse_{exc.what}_bytes")
                log.warning("upstream %s: GET stream sent %s, reconnecting in %.2fs", self.upstream, exc, delay)
            except Exception as exc:  # reconnect on any stream failure; never crash the gateway
                ready.set()
                log.info("upstream %s: GET stream dropped (%s), retrying in %.2fs", self.upstream, exc, delay)
            finally:
                if resp is not None:
                    resp.abandon()
            await asyncio.sleep(cursor.delay() if cursor.retry_ms is not None else delay)
            delay = min(delay * 2, 30.0)
