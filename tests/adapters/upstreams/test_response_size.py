"""The upstream HTTP client stops reading a body over ``max_body`` and closes the connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from adapters.http.client import Http1Pool, ResponseTooLarge

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    await reader.readexactly(next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length")), 0))


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/mcp"

    yield start
    for srv in servers:
        srv.close()


async def test_declared_length_over_the_limit_is_refused_before_the_body(server: Callable[[Handler],
                                                                                          Awaitable[str]]) -> None:
    hung_up = asyncio.Event()

    async def declares_two_megabytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2000000\r\n\r\n{")
        await writer.drain()
        if await reader.read() == b"":  # the client closed the connection without waiting for the body
            hung_up.set()

    pool = Http1Pool(await server(declares_two_megabytes), connect_timeout=5)
    resp = await pool.request("POST", {}, b"{}", max_body=1024 * 1024)
    with pytest.raises(ResponseTooLarge) as err:
        await resp.read()
    assert str(err.value) == "response body over 1048576 bytes"
    await hung_up.wait()
    await pool.aclose()


async def test_streamed_body_over_the_limit_closes_the_connection(server: Callable[[Handler], Awaitable[str]]) -> None:
    sent = 0
    stopped = asyncio.Event()

    async def streams_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while sent < 256 * 1024 * 1024:
                writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
                await writer.drain()
                sent += 0x10000
        except ConnectionError:
            stopped.set()

    pool = Http1Pool(await server(streams_forever), connect_timeout=5)
    resp = await pool.request("POST", {}, b"{}", max_body=1024 * 1024)
    with pytest.raises(ResponseTooLarge):
        await resp.read()
    await stopped.wait()
    assert sent < 256 * 1024 * 1024  # the upstream could not send it all: nobody was reading
    await pool.aclose()


async def test_event_stream_has_no_total_bound(server: Callable[[Handler], Awaitable[str]]) -> None:
    async def long_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        event = b"event: message\ndata: " + b"e" * 1000 + b"\n\n"
        body = event * 3000  # ~3 MB over one stream, each event small
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()

    pool = Http1Pool(await server(long_stream), connect_timeout=5)
    resp = await pool.request("POST", {}, b"{}", max_body=1024 * 1024)
    assert len(await resp.read()) == 3000 * 1023
    await pool.aclose()
