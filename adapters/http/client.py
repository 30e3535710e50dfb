"""A lean HTTP/1.1 client for upstream MCP servers: keep-alive pool, httptools parser.

Why not httpx: measured under load, an httpx request cost about 1-2 ms of CPU on
these machines (pool bookkeeping, anyio shims, cookie handling), ten times the
whole gateway's budget per call. This client does one thing: send a request on a
pooled connection and hand back status, headers and the body as it arrives,
parsed by httptools (the C parser uvicorn uses, so no new dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """The connection failed or the peer spoke something that is not HTTP/1.1."""


class ResponseTooLarge(HttpError):
    """The body went over the request's ``max_body``; the connection was closed, not read further."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body over {limit} bytes")
        self.limit = limit


_UNBOUNDED = 1 << 62


class Response:
    """Status and headers at once; the body as it arrives."""

    def __init__(self, conn: _Connection, max_body: int = _UNBOUNDED) -> None:
        self._conn = conn
        self.max_body = max_body
        self.size = 0  # body bytes received so far
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._more = asyncio.Event()
        self.complete = False
        self.error: Exception | None = None

    def abandon(self) -> None:
        """Stop reading: a half-read response leaves its connection unusable, so close it."""
        if not self.complete:
            self._conn.close()

    async def read(self) -> bytes:
        """The whole body."""
        if self.complete and self.error is None:  # usual for small JSON answers: no async iteration
            parts = list(self._chunks)
            self._chunks.clear()
            return parts[0] if len(parts) == 1 else b"".join(parts)
        parts = [chunk async for chunk in self.iter_bytes()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (for SSE)."""
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self.error is not None:
                raise self.error
            if self.complete:
                return
            self._more.clear()
            await self._more.wait()

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._more.set()

    def _finish(self, error: Exception | None = None) -> None:
        self.error = error
        self.complete = True
        self._more.set()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Http1Pool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._headers_ready: asyncio.Future[None] | None = None
        self._header_name = b""
        self.closed = False
        self.reusable = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"invalid HTTP from upstream: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError("connection closed by upstream"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self._response
        if response is not None:
            response.status = self._parser.get_status_code()
            length = response.headers.get("content-length")
            if length is not None and len(length) > 6 and self._over_limit(response, int(length)):
                self._too_large(response)  # declared too large: refused before a byte of it is read
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None:
            response.size += len(body)
            if response.size > response.max_body and self._over_limit(response, response.size):
                self._too_large(response)
            else:
                response._feed(body)

    @staticmethod
    def _over_limit(response: Response, size: int) -> bool:
        # Off the common path (a body of a million bytes or more): an event stream has no total
        # bound (its parser bounds each line and event), anything else is bounded by max_body.
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            response.max_body = _UNBOUNDED
            return False
        return size > response.max_body

    def _too_large(self, response: Response) -> None:
        # Stop reading: close the connection rather than buffer (or drain) the rest of it.
        self._response = None
        response._finish(ResponseTooLarge(response.max_body))
        self.close()

    def on_message_complete(self) -> None:
        response = self._response
        self.reusable = self._parser.should_keep_alive()
        self._response = None
        if response is not None:
            response._finish()
        if self.reusable and not self.closed:
            self._pool._release(self)
        else:
            self.close()

    def _fail(self, error: Exception) -> None:
        if self._headers_ready is not None and not self._headers_ready.done():
            self._headers_ready.set_exception(error)
        if self._response is not None:
            self._response._finish(error)
            self._response = None

    async def send(self, head: bytes, body: bytes, max_body: int = _UNBOUNDED) -> Response:
        assert self._transport is not None
        response = Response(self, max_body)
        self._response = response
        self._headers_ready = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self._transport.write(body)
        await self._headers_ready
        return response

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Http1Pool:
    """Keep-alive connections to one origin (scheme://host:port)."""

    def __init__(self, url: str, *, connect_timeout: float, max_idle: int = 64) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._closed = False

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl)
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot connect to {self.host_header}: {type(exc).__name__}") from None
        return conn

    async def request(
        self, method: str, headers: dict[str, str], body: bytes = b"", max_body: int | None = None
    ) -> Response:
        """Send one request; returns once the status and headers are in.

        A body over ``max_body`` bytes (an event stream excepted: its parser bounds it) fails with
        :class:`ResponseTooLarge` when read, and its connection is closed at once.
        """
        lines = [f"{method} {self.path} HTTP/1.1", f"host: {self.host_header}", f"content-length: {len(body)}"]
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn = await self._connection()
        # No retry after sending: the upstream may have acted on the request (at most once).
        try:
            return await conn.send(head, body, _UNBOUNDED if max_body is None else max_body)
        except BaseException:
            conn.close()
            raise

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            with contextlib.suppress(Exception):
                self._idle.pop().close()
