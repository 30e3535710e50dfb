"""SEP-1699: a call whose SSE stream the upstream closes before answering is resumed and completes.

The upstream is the official SDK's server with an event store and ``retry_interval`` (see
polling_upstream.py), a real process on 127.0.0.1; the client is Triplock's own HTTP upstream
adapter. Before resumption was built, the call failed with "stream ended before the response".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapters.upstreams.sse_resume import StreamCursor
from adapters.upstreams.streamable_http import HttpUpstream
from gateway.config import UpstreamConfig
from gateway.ports.upstream import ClientIdentity
from tests.adapters.upstreams.polling_upstream import RETRY_MS
from tests.support import PY, free_port, running


@pytest.fixture(scope="module")
def polling_url() -> Iterator[str]:
    port = free_port()
    cmd = [PY, "-m", "tests.adapters.upstreams.polling_upstream", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/mcp"
    with running(cmd, url, ready_status=(400, 405, 406)):
        yield url


async def _ignore(_: dict[str, Any]) -> None:
    return None


async def test_a_stream_closed_before_the_answer_is_resumed_and_the_call_completes(polling_url: str) -> None:
    upstream = HttpUpstream(UpstreamConfig(name="poll", transport="http", url=polling_url))
    session = await upstream.open_session(ClientIdentity(), _ignore)
    seen: list[dict[str, Any]] = []

    async def on_message(msg: dict[str, Any]) -> None:
        seen.append(msg)

    started = time.monotonic()
    call = {"jsonrpc": "2.0", "id": "c-1", "method": "tools/call",
            "params": {"name": "slow_answer", "arguments": {}, "_meta": {"progressToken": "p-1"}}}
    try:
        reply = await session.request(call, on_message=on_message, timeout=30)
    finally:
        await session.aclose()
        await upstream.aclose()
    assert reply["id"] == "c-1"
    assert reply["result"]["content"] == [{"type": "text", "text": "answered after the stream was resumed"}]
    assert [m["method"] for m in seen] == ["notifications/progress"]
    assert seen[0]["params"]["message"] == "half way"
    assert time.monotonic() - started >= RETRY_MS / 1000  # it waited the server's retry: before resuming


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
async def test_the_retry_field_is_read_whatever_the_chunking(size: int) -> None:
    cursor = StreamCursor()
    stream = b"id: e1\nretry: 1500\r\ndata: \n\ndata: " + b"x" * 100 + b"\n\nretry: nope\n\n"
    passed = b"".join([c async for c in cursor.tap(_chunks(stream, size))])
    assert passed == stream
    assert cursor.retry_ms == 1500  # "nope" is not digits: ignored, as the SSE spec says
    assert cursor.delay() == 1.5


def test_an_event_id_that_could_inject_headers_is_never_resumed_with() -> None:
    cursor = StreamCursor()
    cursor.saw("ok-1")
    cursor.saw("bad\x00id")
    cursor.saw("bad\rid")
    assert cursor.resume_headers() == {"accept": "text/event-stream", "last-event-id": "ok-1"}
    assert StreamCursor().delay() == 1.0
