"""RFC 9112 on the wire: request-smuggling shapes and parser edge cases, one table row each.

Each row is the exact bytes a client sends, the statuses it must get back in order, and
whether the server must close the connection afterwards (checked by EOF, or by a further
request that is still served). Where RFC 9112 lets a server choose, the row says which
choice this server makes and why. Smuggling shapes are refused with 400 and a close:
a request whose framing is in doubt must never be half-read and the rest taken for
another request.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.adapters.http.harness import Raw, Receive, Scope, Send, get, respond, serving


@dataclass(frozen=True)
class Case:
    id: str
    request: bytes
    statuses: tuple[int, ...]
    closes: bool
    bodies: tuple[bytes, ...] = ()  # the response bodies, where they matter


def post(headers: str, body: bytes = b"", version: str = "1.1") -> bytes:
    return f"POST /p HTTP/{version}\r\nhost: t\r\n{headers}\r\n".encode() + body


CHUNKED = "transfer-encoding: chunked\r\n"
CASES = [
    # §6.1/§6.3: Content-Length and Transfer-Encoding together. The server MAY process by TE alone
    # but MUST then close; rejecting is the safer choice (no body bytes are ever interpreted).
    Case("cl-and-te", post("content-length: 5\r\n" + CHUNKED, b"0\r\n\r\n"), (400,), True),
    Case("te-and-cl", post(CHUNKED + "content-length: 5\r\n", b"0\r\n\r\n"), (400,), True),
    # §6.3 (5): several or invalid Content-Length values: unrecoverable framing error, 400.
    Case("cl-duplicate-same", post("content-length: 1\r\ncontent-length: 1\r\n", b"x"), (400,), True),
    Case("cl-duplicate-different", post("content-length: 1\r\ncontent-length: 2\r\n", b"xx"), (400,), True),
    Case("cl-list", post("content-length: 1, 1\r\n", b"x"), (400,), True),
    Case("cl-negative", post("content-length: -1\r\n"), (400,), True),
    Case("cl-plus-sign", post("content-length: +1\r\n", b"x"), (400,), True),
    Case("cl-hex", post("content-length: 0x1\r\n", b"x"), (400,), True),
    # §6.3 (4): chunked not the final transfer coding of a request: 400 and close.
    Case("te-chunked-not-final", post("transfer-encoding: chunked, gzip\r\n"), (400,), True),
    Case("te-identity", post("transfer-encoding: identity\r\n"), (400,), True),
    Case("te-chunked-twice", post(CHUNKED + CHUNKED, b"0\r\n\r\n"), (400,), True),
    Case("te-unknown-token", post("transfer-encoding: xchunked\r\n"), (400,), True),
    Case("te-space-before-colon", post("transfer-encoding : chunked\r\n", b"0\r\n\r\n"), (400,), True),
    # §6.1: a transfer coding the server does not understand: 501 (the app would get encoded bytes).
    Case("te-gzip-then-chunked", post("transfer-encoding: gzip, chunked\r\n", b"0\r\n\r\n"), (501,), True),
    # §6.1: Transfer-Encoding in HTTP/1.0: the framing is faulty; refused.
    Case("te-in-http-1.0", post(CHUNKED, b"0\r\n\r\n", "1.0"), (400,), True),
    # §7.1: chunk sizes are hex digits; anything else, or an overflow, is a framing error.
    Case("chunk-size-not-hex", post(CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n"), (400,), True),
    Case("chunk-size-negative", post(CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"), (400,), True),
    Case("chunk-size-overflow", post(CHUNKED, b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), (400,), True),
    Case("chunk-data-without-crlf", post(CHUNKED, b"5\r\nhelloXX0\r\n\r\n"), (400,), True),
    # §7.1.1: chunk extensions are ignored when well-formed, refused when not.
    Case("chunk-extension", post(CHUNKED, b"5;name=val;x\r\nhello\r\n0\r\n\r\n"), (200,), False, (b"hello",)),
    Case("chunk-extension-bad", post(CHUNKED, b"5;na me\r\nhello\r\n0\r\n\r\n"), (400,), True),
    # §7.1.2: a trailer section is read and dropped.
    Case("chunk-trailer", post(CHUNKED, b"5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"), (200,), False, (b"hello",)),
    # §5.2: obsolete line folding in a request: 400 (the alternative, unfolding, is riskier).
    Case("obs-fold", b"GET / HTTP/1.1\r\nhost: t\r\nx-a: b\r\n  c\r\n\r\n", (400,), True),
    # §5.1: no whitespace between a field name and its colon: MUST be 400.
    Case("space-before-colon", b"GET / HTTP/1.1\r\nhost: t\r\nx-a : b\r\n\r\n", (400,), True),
    Case("space-in-name", b"GET / HTTP/1.1\r\nhost: t\r\nx a: b\r\n\r\n", (400,), True),
    # §2.2: whitespace between the start line and the first field: refused.
    Case("space-before-first-field", b"GET / HTTP/1.1\r\n host: t\r\n\r\n", (400,), True),
    # §2.2: a bare LF MAY be accepted as a line end; this server does not (strict framing).
    Case("bare-lf", b"GET / HTTP/1.1\nhost: t\n\n", (400,), True),
    # §2.2: a bare CR MUST be refused (or replaced): refused.
    Case("bare-cr-line-end", b"GET / HTTP/1.1\rhost: t\r\n\r\n", (400,), True),
    Case("bare-cr-in-value", b"GET / HTTP/1.1\r\nhost: t\r\nx-a: b\rc\r\n\r\n", (400,), True),
    Case("nul-in-value", b"GET / HTTP/1.1\r\nhost: t\r\nx-a: b\x00c\r\n\r\n", (400,), True),
    # §2.2: at least one empty line before a request line SHOULD be ignored.
    Case("empty-lines-first", b"\r\n\r\n" + get("/e"), (200,), False, (b"/e",)),
    # §3.2: an HTTP/1.1 request without Host, or with two, MUST get 400; HTTP/1.0 may omit it.
    Case("host-missing", b"GET / HTTP/1.1\r\n\r\n", (400,), True),
    Case("host-twice", b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", (400,), True),
    Case("host-missing-http-1.0", b"GET /h HTTP/1.0\r\n\r\n", (200,), True, (b"/h",)),
    Case("unknown-version", b"GET / HTTP/2.5\r\nhost: t\r\n\r\n", (400,), True),
    # §5: a head over the size limit (64 KiB by default): 431.
    Case("head-too-large", get("/", "x-big: " + "a" * 70_000 + "\r\n"), (431,), True),
    # §9.3.2: pipelined requests are answered in order; a smuggled-looking body is just a body.
    Case("pipelined", get("/a") + post("content-length: 6\r\n", b"GET /x") + get("/b"), (200, 200, 200), False,
         (b"/a", b"GET /x", b"/b")),
    # §9.3: HTTP/1.0 keeps the connection only when asked to, and closes after a request that did not ask.
    Case("http-1.0-keep-alive", b"GET /k HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /c HTTP/1.0\r\n\r\n",
         (200, 200), True, (b"/k", b"/c")),
    Case("http-1.1-connection-close", get("/z", "connection: close\r\n"), (200,), True, (b"/z",)),
    # RFC 9110 §10.1.1: a body sent at once with "Expect: 100-continue" needs no interim 100.
    Case("expect-100-with-body", post("content-length: 2\r\nexpect: 100-continue\r\n", b"ok"), (200,), False,
         (b"ok",)),
]


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The request body, or the path when there is none; quiet when the request is cut off."""
    if scope["type"] != "http":
        return
    parts = []
    while (message := await receive())["type"] == "http.request":
        parts.append(message["body"])
        if not message["more_body"]:
            await respond(send, b"".join(parts) or scope["path"].encode())
            return


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rfc9112_case(case: Case) -> None:
    async with serving(echo) as server:
        raw = await Raw.connect(server.port)
        await raw.send(case.request)
        got = [await raw.response() for _ in case.statuses]
        assert tuple(status for status, _, _ in got) == case.statuses
        if case.bodies:
            assert tuple(body for _, _, body in got) == case.bodies
        for status, headers, _ in got:
            if status >= 400:
                assert headers["connection"] == "close"  # §9.6: the server says it closes
        if case.closes:
            assert await raw.until_eof() == b""
        else:
            await raw.send(get("/still-open"))
            status, _, body = await raw.response()
            assert (status, body) == (200, b"/still-open")
        raw.close()
