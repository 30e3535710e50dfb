"""Helpers for the HTTP server's tests: a server on a free loopback port, a raw-socket client, tiny apps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from adapters.http.server import Server

DEADLINE = 10.0
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Server]:
    """Run ``app`` on a free loopback port for the block; stop it gracefully afterwards."""
    server = Server(app, host="127.0.0.1", port=0, **options)
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(server.serve(started=started, stop=stop))
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({task, ready}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        task.result()  # startup failed: raise it here
    assert started.is_set(), "server did not start"
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)


class Raw:
    """A raw TCP client: exact bytes out, responses parsed by hand, every read under a deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> Raw:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), DEADLINE)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                assert name.lower() not in headers, f"duplicate header {name}"
                headers[name.lower()] = value.strip()
        return status, headers

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, headers = await self.head()
        if head_only:
            return status, headers, b""
        if "content-length" in headers:
            body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), DEADLINE)
        elif headers.get("transfer-encoding") == "chunked":
            body = b"".join([chunk async for chunk in self.chunks()])
        else:
            body = await self.until_eof()
        return status, headers, body

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            size = int(await asyncio.wait_for(self.reader.readuntil(b"\r\n"), DEADLINE), 16)
            data = await asyncio.wait_for(self.reader.readexactly(size + 2), DEADLINE)
            if size == 0:
                return
            yield data[:-2]

    async def until_eof(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(), DEADLINE)

    def close(self) -> None:
        self.writer.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: t\r\n{extra}\r\n".encode()


async def read_all(receive: Receive) -> tuple[bytes, int]:
    """The whole request body and the number of http.request messages it came in."""
    parts, count = [], 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message["body"])
        count += 1
        if not message["more_body"]:
            return b"".join(parts), count


async def respond(send: Send, body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the request body, or the path when there is none (no content-length from the app)."""
    if scope["type"] != "http":
        return
    body, _ = await read_all(receive)
    await respond(send, body or scope["path"].encode(), headers=[(b"content-type", b"text/plain")])
