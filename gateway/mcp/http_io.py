"""The HTTP side of one MCP exchange: read the body, answer in JSON, or stream SSE.

Shared by the endpoint's handshake-era paths (:mod:`gateway.mcp.endpoint`) and the
stateless era's (:mod:`gateway.mcp.modern`). Raw ASGI: this is on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gateway.mcp.jsonrpc import error_response
from gateway.mcp.resumable import StreamLog
from gateway.ports.sse import format_sse

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


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
    """One JSON response with its length."""
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A response without a body (202 for notifications, 204, 405...)."""
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0"), *(headers or [])]}
    )
    await send({"type": "http.response.body", "body": b""})


async def send_error(send: Send, status: int, code: int, message: str, request_id: Any = None) -> None:
    """A JSON-RPC error as a JSON response with HTTP ``status``."""
    await send_json(send, status, error_response(request_id, code, message))


def accepts(headers: dict[str, str], *types: str) -> bool:
    """Whether the ``Accept`` header allows every one of ``types`` (absent or ``*/*``: anything)."""
    accept = headers.get("accept", "")
    if not accept or "*/*" in accept:
        return True
    return all(t in accept for t in types)


class ClientLink:
    """The client of one POST, as a held call sees it: :meth:`gone` returns once it left for good.

    The endpoint makes one per POST (an object on the request context: O(1), nothing started);
    only a call that is held watches it (:mod:`gateway.guard.hold`), so the allowed path never
    reads the connection. After the body, the next ASGI ``receive()`` returns only
    ``http.disconnect``, on both servers (own and uvicorn), when the connection goes away.
    """

    __slots__ = ("channel", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.channel: ResponseChannel | None = None  # the handshake era's reply (None: not resumable)

    async def gone(self) -> None:
        """Return when the client has disconnected and cannot come back for this request's answer.

        A reply that already became a resumable SSE stream (event ids sent, its events logged) is
        not gone: the client may reconnect with ``Last-Event-ID`` and read the answer, so the call
        keeps waiting (this then never returns; the hold cancels it when it ends).
        """
        while (await self.receive())["type"] != "http.disconnect":
            pass
        channel = self.channel
        if channel is not None and channel.events is not None:
            await asyncio.get_running_loop().create_future()  # resumable: the client may come back



class ResponseChannel:
    """One POST's reply: JSON if the answer comes first, SSE once anything else must be sent.

    ``resumable``, when given, makes the stream's log once the reply turns into SSE (a JSON
    reply costs nothing): the log numbers the events and keeps them for a client that reconnects
    with ``Last-Event-ID`` (the handshake era's resumable streams), and the stream starts with a
    priming event (an id, ``retry:``, no data).
    """

    def __init__(
        self,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        sse_ok: bool,
        resumable: Callable[[], StreamLog] | None = None,
    ) -> None:
        self._send = send
        self._headers = headers
        self.sse_ok = sse_ok
        self.streaming = False
        self._resumable = resumable
        self.events: StreamLog | None = None
        self.gone = False  # the client went away: later events go only to the replay log
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        self.streaming = True
        if self._resumable is not None:
            self.events = self._resumable()
        await self._send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *self._headers]})
        if self.events is not None:
            await self._send({"type": "http.response.body", "body": self.events.priming(), "more_body": True})

    async def _write(self, body: bytes, more: bool) -> None:
        if self.gone:
            return
        try:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
        except OSError:
            if self.events is None:
                raise
            self.gone = True  # resumable: the event stays in the log for a reconnection

    async def emit(self, message: dict[str, Any]) -> None:
        """Send an intermediate message (commits the reply to SSE)."""
        async with self._lock:
            if not self.streaming:
                await self._start()
            await self._write(self._frame(message), True)

    async def finish(self, message: dict[str, Any] | None, status: int = 200) -> None:
        """Send the final answer (None: end the stream without one, e.g. after cancellation)."""
        async with self._lock:
            if self.streaming:
                body = self._frame(message) if message is not None else b""
                await self._write(body, False)
                if self.events is not None:
                    self.events.close()
            elif message is not None:
                await send_json(self._send, status, message, self._headers)
            else:
                await send_empty(self._send, 204, self._headers)

    def _frame(self, message: dict[str, Any]) -> bytes:
        data = orjson.dumps(message)
        if self.events is None:
            return format_sse(data)
        return self.events.append(data)
