"""Property-based fuzzing of the HTTP parser glue and of the JSON-RPC decoder (hypothesis).

The server side runs the real :class:`HttpProtocol` on a real event loop with a transport
that records what is written (a socket would add nothing but time here): random request
heads and bodies, well-formed or mangled, cut into random fragments. Whatever comes in,
every answer is a well-formed HTTP/1.1 response, never a 500, and the connection settles
(answered and open, or closed) without hanging. The JSON-RPC decoder gets random bytes and
random JSON and must answer a message or a JSON-RPC error, nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.http.limits import Limits, Shared
from adapters.http.protocol import HttpProtocol
from adapters.http.server import enforce_timeouts
from gateway.mcp.jsonrpc import ProtocolError, decode_message
from tests.adapters.http.harness import DEADLINE, Receive, Scope, Send

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class RecordingTransport(asyncio.Transport):
    """Keeps what the server writes; closing it tells the protocol the connection is gone."""

    def __init__(self, protocol: HttpProtocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.out = bytearray()
        self.closed = False
        self.eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof, "wrote after shutting the write side"
        self.out += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the body (as the gateway does), answers with its length; quiet when cut off."""
    size = 0
    while (message := await receive())["type"] == "http.request":
        size += len(message["body"])
        if not message["more_body"]:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-path", b"p")]})
            await send({"type": "http.response.body", "body": b"%d" % size})
            return


_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


def parse_responses(out: bytes) -> list[int]:
    """The statuses of the responses in ``out``; fails unless it is a sequence of well-formed responses."""
    statuses, pos = [], 0
    while pos < len(out):
        match = _STATUS.match(out, pos)
        assert match, out[pos : pos + 80]
        end = out.index(b"\r\n\r\n", pos) + 4
        headers = dict(
            line.split(b": ", 1) for line in out[match.end() : end - 4].split(b"\r\n") if line
        )
        status = int(match.group(1))
        statuses.append(status)
        pos = end
        if status == 100:
            continue
        if b"content-length" in headers:
            pos += int(headers[b"content-length"])
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                line_end = out.index(b"\r\n", pos)
                size = int(out[pos:line_end], 16)
                pos = line_end + 2 + size + 2
                if size == 0:
                    break
        assert pos <= len(out)
    return statuses


async def exchange(fragments: list[bytes]) -> tuple[bytes, bool]:
    shared = Shared(app, Limits(max_header_bytes=2048), {})
    shared.date = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    protocol = HttpProtocol(shared)
    transport = RecordingTransport(protocol)
    protocol.connection_made(transport)
    for fragment in fragments:
        if transport.closed:
            break
        protocol.data_received(fragment)
        await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)  # the apps run as far as the input allows
    # A request still incomplete waits for the client, until the body or header timeout: let them pass.
    for _ in range(shared.ticks.body + 2):
        enforce_timeouts(protocol)
        await asyncio.sleep(0)
    if not transport.closed:
        transport.close()  # the client leaves
    if shared.tasks:
        await asyncio.wait(set(shared.tasks), timeout=DEADLINE)
    assert not shared.tasks, "a request is still running after its client left: the server hangs"
    if protocol.linger is not None:
        protocol.linger.cancel()
    return bytes(transport.out), transport.closed or protocol.closed


_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_VALUE = st.binary(max_size=40) | st.text("abc 123;=,", max_size=30).map(str.encode)
_FRAMING = st.sampled_from(
    [b"", b"content-length: 5\r\n", b"content-length: 0\r\n", b"transfer-encoding: chunked\r\n",
     b"content-length: 3\r\ntransfer-encoding: chunked\r\n", b"content-length: 1\r\ncontent-length: 2\r\n",
     b"expect: 100-continue\r\ncontent-length: 4\r\n", b"connection: close\r\n", b"host: second\r\n"]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"DELETE", b"PUT",  # (no HEAD: its answers carry no body to frame)
                                         b"OPTIONS", b"G\x00T", b"get"]))
    target = draw(st.sampled_from([b"/", b"/mcp", b"/a%20b?q=1", b"*", b"http://h/x", b"/%zz", b""]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/9"]))
    fields = draw(st.lists(st.tuples(_TOKEN.map(str.encode), _VALUE), max_size=5))
    head = method + b" " + target + b" " + version + b"\r\nhost: t\r\n" + draw(_FRAMING)
    head += b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    body = draw(st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"abcd"]))
    return head + b"\r\n" + body


def fragmented(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@FUZZ
@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 10_000), max_size=6))
def test_random_requests_in_random_fragments_get_well_formed_answers(reqs: list[bytes], cuts: list[int]) -> None:
    data = b"".join(reqs)
    out, _ = asyncio.run(exchange(fragmented(data, cuts)))
    statuses = parse_responses(out)
    assert 500 not in statuses
    assert set(statuses) <= {100, 200, 400, 408, 431, 501}, statuses


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=4))
def test_random_bytes_get_well_formed_answers_or_none(data: bytes, cuts: list[int]) -> None:
    out, _ = asyncio.run(exchange(fragmented(data, cuts)))
    statuses = parse_responses(out)
    assert set(statuses) <= {100, 200, 400, 408, 431, 501}, statuses


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
_RPC = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "id": _JSON,
        "method": st.sampled_from(["tools/call", "", "initialize"]) | _JSON,
        "params": _JSON,
        "result": _JSON,
        "error": _JSON,
    },
)


def _decodes_or_refuses(body: bytes) -> None:
    try:
        message = decode_message(body, max_depth=8)
    except ProtocolError as exc:
        error = exc.to_message()
        assert error["jsonrpc"] == "2.0" and isinstance(error["error"]["code"], int)
        assert isinstance(error["error"]["message"], str) and error["error"]["message"]
        orjson.dumps(error)  # it can be sent
        return
    assert message is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_the_jsonrpc_decoder_answers_random_bytes_with_a_message_or_an_error(body: bytes) -> None:
    _decodes_or_refuses(body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_RPC | _JSON)
def test_the_jsonrpc_decoder_answers_random_json_with_a_message_or_an_error(data: Any) -> None:
    _decodes_or_refuses(json.dumps(data).encode())  # (json: also integers beyond 64 bits)
