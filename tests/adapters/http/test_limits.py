"""The server stays bounded: slow heads and bodies get 408, idle and surplus connections are closed, all counted.

Slow clients are simulated by writing a byte at a time with pauses (the behaviour under
test, not synchronisation); every read has a deadline. Timeouts are short here; lower
bounds on elapsed time show the limits are not applied early.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from adapters.http.limits import REFUSAL_REASONS, Limits
from adapters.http.server import Server
from tests.adapters.http.harness import DEADLINE, Raw, Receive, Scope, Send, echo, get, read_all, respond, serving
from tests.support import free_port, gateway_cmd, running, write_config

FAST = Limits(header_timeout=0.3, body_idle_timeout=0.3, body_timeout=0.6, keepalive_timeout=5.0)


def refusals(server: Server, **counts: int) -> dict[str, int]:
    """The counts ``server`` should report: ``counts``, zero for every other reason."""
    return {reason: counts.get(reason, 0) for reason in REFUSAL_REASONS}


@contextlib.asynccontextmanager
async def trickling(raw: Raw, data: bytes, pause: float) -> AsyncIterator[None]:
    """Send ``data`` one byte per ``pause`` seconds in the background, as a slowloris client does."""

    async def drip() -> None:
        with contextlib.suppress(OSError):
            for i in range(len(data)):
                await raw.send(data[i : i + 1])
                await asyncio.sleep(pause)

    task = asyncio.create_task(drip())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_request_head_that_takes_too_long_gets_408_and_is_counted() -> None:
    async with serving(echo, limits=FAST) as server:
        raw = await Raw.connect(server.port)
        began = time.monotonic()
        async with trickling(raw, get("/slow", "x-pad: " + "a" * 200 + "\r\n"), 0.05):
            status, headers, body = await raw.response()
        assert status == 408 and headers["connection"] == "close"
        assert body == b"Request Timeout: the request header took too long\n"
        assert time.monotonic() - began >= 0.3
        assert await raw.until_eof() == b""
        assert server.shared.counters.refusal_counts() == refusals(server, header_timeout=1)


async def test_a_slowloris_body_gets_408_and_the_app_sees_a_disconnect() -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            while (message := await receive())["type"] == "http.request" and message["more_body"]:
                pass
            seen.append(message)

    async with serving(app, limits=FAST) as server:
        trickle = await Raw.connect(server.port)  # a byte every 0.1 s: never idle, but too slow in total
        await trickle.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n")
        stalled = await Raw.connect(server.port)  # part of the body, then silence
        await stalled.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n" + b"s" * 10)
        began = time.monotonic()
        async with trickling(trickle, b"b" * 100, 0.1):
            for raw in (trickle, stalled):
                status, headers, body = await raw.response()
                assert (status, headers["connection"]) == (408, "close")
                assert body == b"Request Timeout: the request body took too long\n"
                assert await raw.until_eof() == b""
        assert time.monotonic() - began >= 0.3
        assert server.shared.counters.refusal_counts() == refusals(server, body_timeout=2)
    assert seen == [{"type": "http.disconnect"}] * 2


async def test_time_spent_waiting_on_the_app_counts_against_no_timeout() -> None:
    go = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await go.wait()  # reading pauses once 64 KiB wait unread: the client is not to blame
            body, _ = await read_all(receive)
            await respond(send, b"%d" % len(body))

    async with serving(app, limits=FAST) as server:
        raw = await Raw.connect(server.port)
        await raw.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n")
        sending = asyncio.create_task(raw.send(b"q" * 1_000_000))
        deadline = time.monotonic() + DEADLINE
        while not next(iter(server.shared.connections)).read_paused:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < 1.0:  # longer than every body timeout
            await asyncio.sleep(0.05)
        go.set()
        status, _, body = await raw.response()
        assert (status, body) == (200, b"1000000")
        await sending
        raw.close()
        assert server.shared.counters.refusal_counts() == refusals(server)


async def test_a_silent_new_connection_and_an_idle_kept_alive_one_are_closed_without_an_answer() -> None:
    async with serving(echo, limits=Limits(header_timeout=0.2, keepalive_timeout=0.4)) as server:
        silent = await Raw.connect(server.port)
        began = time.monotonic()
        assert await silent.until_eof() == b""
        assert time.monotonic() - began >= 0.2
        used = await Raw.connect(server.port)
        await used.send(get("/one"))
        assert (await used.response())[2] == b"/one"
        idle_since = time.monotonic()
        assert await used.until_eof() == b""
        assert time.monotonic() - idle_since >= 0.4  # the keep-alive timeout, not the header timeout
        assert server.shared.counters.refusal_counts() == refusals(server)


async def test_connections_beyond_the_maximum_get_503_with_retry_after() -> None:
    async with serving(echo, limits=Limits(max_connections=2)) as server:
        first, second = await Raw.connect(server.port), await Raw.connect(server.port)
        await first.send(get("/a"))
        assert (await first.response())[2] == b"/a"
        third = await Raw.connect(server.port)
        await third.send(get("/c"))
        status, headers, body = await third.response()
        assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
        assert body == b"Service Unavailable: too many connections\n"
        assert await third.until_eof() == b""
        assert server.shared.counters.refusal_counts() == refusals(server, too_many_connections=1)
        first.close()
        deadline = time.monotonic() + DEADLINE
        while server.shared.counters.open_connections() != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        fourth = await Raw.connect(server.port)  # room again
        await fourth.send(get("/d"))
        assert (await fourth.response())[2] == b"/d"
        second.close()
        fourth.close()


async def test_oversized_heads_and_malformed_requests_are_counted() -> None:
    async with serving(echo, limits=Limits(max_header_bytes=4096)) as server:
        big = await Raw.connect(server.port)
        await big.send(get("/", "x-big: " + "a" * 5000 + "\r\n"))
        assert (await big.response())[0] == 431
        bad = await Raw.connect(server.port)
        await bad.send(b"GET / HTTP/1.1\r\nhost: t\r\nx a: b\r\n\r\n")
        assert (await bad.response())[0] == 400
        assert server.shared.counters.refusal_counts() == refusals(server, header_too_large=1, bad_request=1)


def test_the_gateway_reports_the_servers_refusals_and_connections_in_its_metrics(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "gw.toml", port, [], server={"header_timeout_seconds": 0.3})

    async def slow_head() -> tuple[int, dict[str, str], bytes]:
        raw = await Raw.connect(port)
        async with trickling(raw, f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode(), 0.05):
            return await raw.response()

    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/healthz"):
        assert asyncio.run(slow_head())[0] == 408
        with httpx.Client(timeout=DEADLINE) as client:
            text = client.get(f"http://127.0.0.1:{port}/metrics").text
    lines = set(text.splitlines())
    assert 'triplock_http_server_refusals_total{error_type="header_timeout"} 1.0' in lines
    assert 'triplock_http_server_refusals_total{error_type="body_timeout"} 0.0' in lines
    assert "triplock_http_server_connections 1.0" in lines  # the scrape's own connection
