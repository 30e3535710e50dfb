"""One request on an HTTP/1.1 connection: the ``receive`` and ``send`` an ASGI app is given.

:class:`Cycle` buffers the request body as it arrives (the connection pauses reading when
too much is waiting), and turns the app's ``http.response.*`` messages into bytes: the
head is held until the first body message so a small response leaves in one write, and
the framing (content-length, chunks, or close) is chosen then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

from adapters.http.limits import DRAIN_LIMIT

log = logging.getLogger("triplock.http")

Message = dict[str, Any]


class ServerState(Protocol):
    """What a :class:`Cycle` reads of the state every connection of one server shares."""

    @property
    def app(self) -> Callable[..., Any]: ...
    @property
    def tasks(self) -> set[asyncio.Task[None]]: ...
    @property
    def date(self) -> bytes: ...
    @property
    def shutting_down(self) -> bool: ...


class Connection(Protocol):
    """What a :class:`Cycle` needs of its connection (:class:`adapters.http.protocol.HttpProtocol`)."""

    @property
    def shared(self) -> ServerState: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def closed(self) -> bool: ...
    @property
    def read_paused(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...
    def close(self) -> None: ...
    def maybe_resume(self) -> None: ...
    async def drain(self) -> None: ...
    def response_done(self, cycle: Cycle) -> None: ...

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def plain_response(status: int, text: str, close: bool = True) -> bytes:
    """A complete small text/plain response (errors the server answers itself)."""
    body = text.encode("ascii", "replace")
    conn = b"connection: close\r\n" if close else b""
    return b"%scontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n%s\r\n%s" % (
        _STATUS_LINES.get(status, b"HTTP/1.1 %d \r\n" % status),
        len(body),
        conn,
        body,
    )


_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_DISCONNECT: Message = {"type": "http.disconnect"}
_SERVER_ERROR = "Internal Server Error\n"


class Cycle:
    """One request and its response: the ``receive`` and ``send`` the app is given."""

    __slots__ = (
        "body",
        "body_done",
        "bodyless",
        "buffered",
        "chunked",
        "complete",
        "conn",
        "continue_checked",
        "continued",
        "delivered_final",
        "disconnected",
        "head",
        "keep_alive",
        "no_body",
        "remaining",
        "scope",
        "started",
        "task",
        "waiters",
        "written",
    )

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.body: list[bytes] = []  # received, not yet handed to the app
        self.buffered = 0
        self.body_done = False
        self.delivered_final = False
        self.disconnected = False
        self.waiters: list[asyncio.Future[None]] | None = None
        self.continue_checked = False
        self.continued = False  # "100 Continue" sent
        self.started = False
        self.head: bytes | None = None  # held until the first body message
        self.written = False
        self.complete = False
        self.chunked = False
        self.no_body = scope["method"] == "HEAD"
        self.bodyless = False  # 1xx, 204, 304: no body and no framing headers
        self.remaining: int | None = None  # bytes still owed under the app's content-length
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Run the app for this request and clean up after it, whatever it does."""
        conn = self.conn
        try:
            await conn.shared.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            conn.close()  # server stop past the graceful timeout
            raise
        except Exception:
            log.exception("ASGI app raised while handling %s %s", self.scope["method"], self.scope["path"])
            self._unfinished()
        else:
            if not self.complete and not conn.closed:
                log.error(
                    "ASGI app returned without completing the response to %s %s",
                    self.scope["method"],
                    self.scope["path"],
                )
                self._unfinished()
        finally:
            conn.shared.tasks.discard(self.task)

    def _unfinished(self) -> None:
        conn = self.conn
        if self.complete or conn.closed:
            return
        if self.written:
            conn.close()  # part of a response is out: only closing tells the client it is truncated
            return
        self.head = None
        if self.scope["method"] == "HEAD" or self.scope["http_version"] == "1.0":
            self.keep_alive = False  # keep the error response simple: it is followed by a close
        elif not self.body_done and self.keep_alive:
            self.keep_alive = self._drainable()
        conn.transport.write(plain_response(500, _SERVER_ERROR, close=not self.keep_alive))
        self.written = True
        self._finish()

    def wake(self) -> None:
        """Wake every ``receive()`` waiting for body bytes or a disconnect."""
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def receive(self) -> Message:
        """The next ``http.request`` message, or ``http.disconnect`` once there is nothing more to say."""
        while True:
            if self.disconnected:
                return dict(_DISCONNECT)
            if self.body or (self.body_done and not self.delivered_final):
                parts = self.body
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                self.body = []
                self.buffered = 0
                more = not self.body_done
                self.delivered_final = not more
                if self.conn.read_paused:
                    self.conn.maybe_resume()
                return {"type": "http.request", "body": data, "more_body": more}
            if self.delivered_final and self.complete:
                return dict(_DISCONNECT)
            if not self.continue_checked:
                self._maybe_continue()
            fut = self.conn.loop.create_future()
            if self.waiters is None:
                self.waiters = [fut]
            else:
                self.waiters.append(fut)
            await fut

    def _maybe_continue(self) -> None:
        # Only reached when the app wants a body that has not fully arrived: the slow path.
        self.continue_checked = True
        if self.body_done or self.started:
            return
        for name, value in self.scope["headers"]:
            if name == b"expect" and value.lower() == b"100-continue":
                self.conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.continued = True
                return

    def _drainable(self) -> bool:
        """Answered before the request body is in: may the rest be read and discarded to keep the connection?

        Only a body of known, small size (see DRAIN_LIMIT) that the client is sure to send: one
        that waits for a "100 Continue" never sent may never come, and the next request would
        be read as its body.
        """
        size = None
        for name, value in self.scope["headers"]:
            if name == b"content-length":
                size = int(value)  # (the parser has validated it)
            elif name == b"expect" and not self.continued:
                return False
        return size is not None and size <= DRAIN_LIMIT

    async def send(self, message: Message) -> None:
        """Take one ``http.response.*`` message; a no-op once the client is gone."""
        conn = self.conn
        if conn.closed:
            return
        if conn.write_paused:
            await conn.drain()
            if conn.closed:
                return
        kind = message["type"]
        if kind == "http.response.body" and self.started and not self.complete:
            self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start" and not self.started:
            self._start(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} (started: {self.started}, complete: {self.complete})")

    def _start(self, message: Message) -> None:
        status = message["status"]
        headers = message.get("headers") or ()
        parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
        for name, value in headers:
            lname = name.lower()
            if lname in _FRAMING:
                if lname == b"content-length":
                    self.remaining = int(value)
                elif lname == b"transfer-encoding":
                    self.chunked = True  # the app asks for chunks: we still do the framing
                elif value.lower() == b"close":  # connection
                    self.keep_alive = False
            parts += (name, b": ", value, b"\r\n")
        head = b"".join(parts)
        # One scan instead of one per header: a CR or LF inside a name or value would split the head.
        lines = len(headers) + 1
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise RuntimeError("response header name or value contains CR or LF")
        if status < 200 or status in (204, 304):
            self.no_body = self.bodyless = True
        self.head = head
        self.started = True

    def _body(self, body: bytes, more: bool) -> None:
        conn = self.conn
        if self.remaining is not None:
            self.remaining -= len(body)
        head = self.head
        if head is None:  # a later part of the body
            if body or (self.chunked and not more):
                conn.transport.write(self._payload(body, more))
        else:  # the first body message: now the framing is known, and head and body leave in one write
            self.head = None
            self.written = True
            shared = conn.shared
            http10 = self.scope["http_version"] == "1.0"
            if shared.shutting_down:
                self.keep_alive = False
            elif not self.body_done and self.keep_alive:
                self.keep_alive = self._drainable()  # the response then says "connection: close"
            framing = b""
            if self.remaining is None and not self.chunked and not self.bodyless:
                if not more:
                    framing = b"content-length: %d\r\n" % len(body)
                elif not http10:
                    framing = b"transfer-encoding: chunked\r\n"
                    self.chunked = True
                else:
                    self.keep_alive = False  # HTTP/1.0 has no chunks: the end of the body is the close
            if self.keep_alive:
                if http10:
                    framing += b"connection: keep-alive\r\n"  # HTTP/1.0 closes unless told otherwise
            elif not http10:
                framing += b"connection: close\r\n"
            payload = body if not self.chunked and not self.no_body else self._payload(body, more)
            conn.transport.write(b"".join((head, shared.date, framing, b"\r\n", payload)))
        if not more:
            self.complete = True
            if self.remaining and not self.no_body:
                self.keep_alive = False  # the body did not match the app's content-length: framing is lost
            if self.waiters:
                self.wake()  # a receive() waiting for the disconnect signal: the response is done
            conn.response_done(self)

    def _payload(self, body: bytes, more: bool) -> bytes:
        if self.no_body:
            return b""
        if self.chunked:
            if more:
                return b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        return body

    def _finish(self) -> None:
        self.complete = True
        self.wake()
        self.conn.response_done(self)
