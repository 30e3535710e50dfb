"""Triplock's own HTTP/1.1 server on the wire: framing, keep-alive, pipelining, errors, flow control.

httpx for well-formed traffic; raw sockets where the bytes on the wire are the point
(framing, pipelining, malformed input, disconnects). Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from typing import Any

import httpx
import pytest

from adapters.http.limits import Limits
from tests.adapters.http.harness import DEADLINE, Raw, Receive, Scope, Send, echo, get, read_all, respond, serving


async def test_keep_alive_reuses_one_connection_and_adds_date_not_server() -> None:
    peers: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peers.append(scope["client"])
            await echo(scope, receive, send)

    async with serving(app) as server, httpx.AsyncClient() as client:
        for i in range(3):
            r = await client.post(f"http://127.0.0.1:{server.port}/x", content=f"body {i}".encode())
            assert r.status_code == 200 and r.text == f"body {i}"
            assert r.headers["content-length"] == str(len(r.content))
            assert "date" in r.headers and "server" not in r.headers
    assert len(peers) == 3 and len(set(peers)) == 1 and peers[0][0] == "127.0.0.1"


async def test_chunked_request_body_streams_to_the_app_and_is_reassembled() -> None:
    got_first = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        first = await receive()
        assert first == {"type": "http.request", "body": b"hello", "more_body": True}
        got_first.set()  # the app has part of the body before the client has sent the rest
        rest, count = await read_all(receive)
        await respond(send, b"%s|%d" % (first["body"] + rest, count + 1))

    async with serving(app) as server:
        raw = await Raw.connect(server.port)
        await raw.send(b"POST /u HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.wait_for(got_first.wait(), DEADLINE)
        await raw.send(b"6\r\n world\r\n0\r\n\r\n")
        status, _, body = await raw.response()
        body_text, count = body.split(b"|")
        assert status == 200 and body_text == b"hello world" and int(count) >= 2
        raw.close()


async def test_streamed_response_is_chunked_and_arrives_in_pieces() -> None:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": True})  # no empty chunk on the wire
        await send({"type": "http.response.body", "body": b"two", "more_body": True})
        await send({"type": "http.response.body", "body": b"three"})

    async with serving(app) as server:
        raw = await Raw.connect(server.port)
        await raw.send(get("/s"))
        status, headers = await raw.head()
        assert status == 200 and headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        chunks = raw.chunks()
        assert await anext(chunks) == b"one"  # before the app has produced the rest
        release.set()
        assert [c async for c in chunks] == [b"two", b"three"]
        await raw.send(get("/again"))  # the terminating chunk left the connection reusable
        status, _, body = await raw.response()
        assert status == 200 and body == b"onetwothree"
        raw.close()


async def test_single_body_gets_content_length_and_head_gets_no_body() -> None:
    async with serving(echo) as server:
        raw = await Raw.connect(server.port)
        # HEAD then GET on one connection: any body bytes after the HEAD answer would corrupt the GET's.
        await raw.send(b"HEAD /abc HTTP/1.1\r\nhost: t\r\n\r\n" + get("/abcd"))
        status, headers, _ = await raw.response(head_only=True)
        assert status == 200 and headers["content-length"] == "4"
        status, headers, body = await raw.response()
        assert status == 200 and headers["content-length"] == "5" and body == b"/abcd"
        raw.close()


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async with serving(echo) as server:
        raw = await Raw.connect(server.port)
        await raw.send(b"POST /p HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        status, _ = await raw.head()
        assert status == 100
        await raw.send(b"12345")
        status, _, body = await raw.response()
        assert status == 200 and body == b"12345"
        raw.close()


async def test_malformed_request_gets_400_and_the_connection_closes() -> None:
    async with serving(echo) as server:
        raw = await Raw.connect(server.port)
        await raw.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n" + b"NOT HTTP AT ALL\r\n\r\n")
        status, _, body = await raw.response()
        assert status == 200 and body == b"/"  # the good request before the garbage is still answered
        status, headers, body = await raw.response()
        assert status == 400 and headers["connection"] == "close" and body.startswith(b"Bad Request")
        assert await raw.until_eof() == b""


async def test_oversized_header_section_gets_431() -> None:
    async with serving(echo, limits=Limits(max_header_bytes=4096)) as server:
        big = await Raw.connect(server.port)
        await big.send(get("/", "x-big: " + "a" * 5000 + "\r\n"))
        many = await Raw.connect(server.port)
        await many.send(get("/", "".join(f"x-h{i}: {'b' * 90}\r\n" for i in range(60))))
        for raw in (big, many):
            status, _, body = await raw.response()
            assert status == 431 and body.startswith(b"Request Header Fields Too Large")
            assert await raw.until_eof() == b""
        ok = await Raw.connect(server.port)
        await ok.send(get("/", "x-small: " + "c" * 3000 + "\r\n"))
        assert (await ok.response())[0] == 200
        ok.close()


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    release = asyncio.Event()
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        events.append(f"start {path}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": path.encode(), "more_body": True})
        if path == "/1":
            await release.wait()
        await send({"type": "http.response.body", "body": b"!"})
        events.append(f"end {path}")

    async with serving(app) as server:
        raw = await Raw.connect(server.port)
        await raw.send(get("/1") + b"POST /2 HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nab" + get("/3"))
        await raw.head()
        chunks = raw.chunks()
        assert await anext(chunks) == b"/1"
        release.set()  # had /2 and /3 run alongside /1, their bytes would already be in the stream
        assert [c async for c in chunks] == [b"!"]
        for path in ("/2", "/3"):
            status, _, body = await raw.response()
            assert status == 200 and body == path.encode() + b"!"
        assert events == ["start /1", "end /1", "start /2", "end /2", "start /3", "end /3"]
        raw.close()


async def test_client_disconnect_wakes_receive_and_later_sends_are_silent() -> None:
    seen: list[Any] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
        try:
            seen.append(await receive())  # blocks until the client goes away
            await send({"type": "http.response.body", "body": b"late", "more_body": True})
            seen.append("send ok")
        finally:
            done.set()

    async with serving(app) as server:
        raw = await Raw.connect(server.port)
        await raw.send(get("/events"))
        await raw.head()
        assert await anext(raw.chunks()) == b": open\n\n"
        raw.close()
        await asyncio.wait_for(done.wait(), DEADLINE)
    assert seen == [{"type": "http.disconnect"}, "send ok"]


async def test_receive_waiting_after_the_request_gets_disconnect_once_the_response_is_complete() -> None:
    seen: list[Any] = []
    go = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_all(receive)
        listener = asyncio.create_task(receive())  # as Starlette's streaming responses listen for disconnects
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await go.wait()  # the client has the first part: the listener has long been waiting
        assert not listener.done()
        await send({"type": "http.response.body", "body": b"last"})
        seen.append(await asyncio.wait_for(listener, DEADLINE))

    async with serving(app) as server:
        raw = await Raw.connect(server.port)
        await raw.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\nx")
        await raw.head()
        chunks = raw.chunks()
        assert await anext(chunks) == b"first"
        go.set()
        assert [c async for c in chunks] == [b"last"]
        await raw.send(get("/"))  # the connection stays open for the next request
        assert (await raw.response())[2] == b"firstlast"
        raw.close()
    assert seen == [{"type": "http.disconnect"}] * 2


async def test_app_errors_give_500_before_start_and_a_closed_connection_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/before":
            raise ValueError("boom before")
        if scope["path"] == "/silent":
            return  # never answers
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom after")

    with caplog.at_level(logging.ERROR, logger="triplock.http"):
        async with serving(app) as server:
            raw = await Raw.connect(server.port)
            for path in ("/before", "/silent"):
                await raw.send(get(path))  # the same connection: a 500 leaves it usable
                status, headers, body = await raw.response()
                assert status == 500 and body == b"Internal Server Error\n"
                assert headers["content-type"].startswith("text/plain")
            await raw.send(get("/after"))
            status, headers = await raw.head()
            assert status == 200 and headers["transfer-encoding"] == "chunked"
            rest = await raw.until_eof()  # closed without the terminating chunk: the client sees truncation
            assert b"partial" in rest and not rest.endswith(b"0\r\n\r\n")
    assert any(r.exc_info and "boom before" in str(r.exc_info[1]) for r in caplog.records)
    assert any(r.exc_info and "boom after" in str(r.exc_info[1]) for r in caplog.records)


async def test_http_1_0_closes_and_streams_without_chunks() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        assert scope["http_version"] == "1.0"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    async with serving(app) as server:
        raw = await Raw.connect(server.port)
        await raw.send(b"GET / HTTP/1.0\r\n\r\n")
        status, headers, body = await raw.response()
        assert status == 200 and "transfer-encoding" not in headers and body == b"ab"


async def test_upgrade_request_is_answered_as_a_plain_request_then_closed() -> None:
    async with serving(echo) as server:
        raw = await Raw.connect(server.port)
        upgrade = "connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n"
        await raw.send(get("/ws", upgrade) + b"\x81\x05hello")  # a websocket frame: not HTTP
        status, headers, body = await raw.response()
        assert status == 200 and body == b"/ws" and headers["connection"] == "close"
        assert await raw.until_eof() == b""


async def test_large_bodies_both_ways_with_flow_control() -> None:
    payload = os.urandom(2 * 1024 * 1024)
    chunk = os.urandom(64 * 1024)
    buffered: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/upload":
            body, _ = await read_all(receive)
            await respond(send, hashlib.sha256(body).hexdigest().encode())
        elif scope["path"] == "/big":
            await respond(send, payload)
        else:
            conn = next(c for c in server.shared.connections if c.client == scope["client"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(128):  # 8 MiB to a client that reads slowly
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                buffered.append(conn.transport.get_write_buffer_size())
            await send({"type": "http.response.body", "body": b""})

    async with serving(app) as server, httpx.AsyncClient(timeout=DEADLINE) as client:
        base = f"http://127.0.0.1:{server.port}"
        r = await client.post(f"{base}/upload", content=payload)  # above the read buffer: reading pauses, resumes
        assert r.text == hashlib.sha256(payload).hexdigest()
        r = await client.get(f"{base}/big")
        assert r.headers["content-length"] == str(len(payload)) and r.content == payload
        raw = await Raw.connect(server.port, rcvbuf=16 * 1024)
        await raw.send(get("/stream"))
        await raw.head()
        received = hashlib.sha256()
        async for piece in raw.chunks():
            received.update(piece)
        assert received.hexdigest() == hashlib.sha256(chunk * 128).hexdigest()
        raw.close()
    # Without send() waiting on a paused transport the app would have queued megabytes in user space.
    assert max(buffered) < 1024 * 1024, max(buffered)
