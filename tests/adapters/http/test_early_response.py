"""A response sent before the request body is read reaches the client, not a connection reset.

The app (like the gateway's authentication or body limit) answers as soon as it has the
head. Clients here behave like common HTTP clients: write the whole request, then read,
and still try to read the answer when a write fails. Real sockets, 200 rounds each.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from tests.adapters.http.harness import DEADLINE, Raw, Receive, Scope, Send, get, respond, serving
from tests.support import create_api_key, free_port, gateway_cmd, running, write_config

ROUNDS = 200


def upload(port: int, head: bytes, body: bytes, path: str = "/") -> bytes:
    """Send ``head`` + ``body`` on a new connection, then return everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with contextlib.suppress(OSError):  # as httpcore does: the server may have answered already, read it
            sock.sendall(head + body)
        received = b""
        try:
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            received += f"<{type(exc).__name__}>".encode()
        return received


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 401 from the head alone, never reading the body."""
    if scope["type"] == "http":
        await respond(send, b"who are you?", 401, [(b"www-authenticate", b"Bearer")])


def post(size: int, extra: str = "") -> bytes:
    return f"POST /mcp HTTP/1.1\r\nhost: t\r\ncontent-length: {size}\r\n{extra}\r\n".encode()


async def test_a_client_uploading_200_kb_gets_the_401_every_time() -> None:
    body = b"x" * 200_000
    async with serving(refuse) as server:
        answers = [await asyncio.to_thread(upload, server.port, post(len(body)), body) for _ in range(ROUNDS)]
    statuses = [a.split(b"\r\n", 1)[0] for a in answers]
    assert statuses == [b"HTTP/1.1 401 Unauthorized"] * ROUNDS, [a[:80] for a in answers if b" 401 " not in a][:3]
    assert all(a.endswith(b"who are you?") for a in answers)


async def test_a_small_unread_body_is_drained_and_the_connection_kept() -> None:
    async with serving(refuse) as server:
        raw = await Raw.connect(server.port)
        await raw.send(post(100_000) + b"y" * 60_000)  # part of the body: the answer comes before the rest
        status, headers, body = await raw.response()
        assert status == 401 and "connection" not in headers and body == b"who are you?"
        await raw.send(b"y" * 40_000 + get("/next"))  # the rest of the body is discarded, not parsed
        status, _, body = await raw.response()
        assert status == 401 and body == b"who are you?"
        raw.close()


async def test_a_large_or_unsized_unread_body_closes_gracefully_after_the_answer() -> None:
    big = b"z" * 3_000_000  # over the drain limit: the connection is closed, without a reset
    chunked = b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    chunks = b"".join(b"10000\r\n" + b"c" * 0x10000 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    async with serving(refuse) as server:
        for head, body in ((post(len(big)), big), (chunked, chunks)):
            answer = await asyncio.to_thread(upload, server.port, head, body)
            assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and b"connection: close\r\n" in answer
            assert answer.endswith(b"who are you?")  # then EOF, no reset


async def test_an_unanswered_expect_100_continue_is_not_drained() -> None:
    # The client waits for "100 Continue" before its body: the next bytes may be a new request.
    async with serving(refuse) as server:
        raw = await Raw.connect(server.port)
        await raw.send(post(10, "expect: 100-continue\r\n"))
        status, headers, body = await raw.response()
        assert status == 401 and headers["connection"] == "close" and body == b"who are you?"
        assert await raw.until_eof() == b""


def test_the_gateway_answers_401_to_unauthenticated_uploads(tmp_path: Path) -> None:
    port = free_port()
    keys = tmp_path / "keys.json"
    create_api_key(keys, "alice")
    config = write_config(tmp_path / "gw.toml", port, [], auth={"mode": "api_key", "api_keys_file": str(keys)})

    def mcp_post(pad: int) -> tuple[bytes, bytes]:
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "' + b"p" * pad + b'"}'
        return (f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
                f"accept: application/json, text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n").encode(), body

    # 200 KB is drained (the connection could be kept); 2 MB is over the drain limit (a graceful close).
    uploads = [mcp_post(200_000)] * ROUNDS + [mcp_post(2_000_000)] * 50
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/healthz"):
        answers = [upload(port, head, body) for head, body in uploads]
    statuses = [a.split(b"\r\n", 1)[0] for a in answers]
    assert statuses == [b"HTTP/1.1 401 Unauthorized"] * len(uploads), [a[:80] for a in answers if b" 401 " not in a][:3]
