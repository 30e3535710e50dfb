"""A small incremental parser for ``text/event-stream`` (the WHATWG SSE format).

Only what MCP uses: ``event``, ``data`` (multi-line joined by ``\\n``), ``id``;
comments and ``retry`` are ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """Yield events from a byte stream, tolerating any chunking and CRLF or LF line ends."""
    buffer = b""
    event, last_id = "message", None
    data: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        while True:
            nl = buffer.find(b"\n")
            if nl < 0:
                break
            line = buffer[:nl].rstrip(b"\r").decode("utf-8", errors="replace")
            buffer = buffer[nl + 1 :]
            if not line:
                if data:
                    yield SseEvent(event, "\n".join(data), last_id)
                event, data = "message", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value or "message"
            elif name == "id":
                last_id = value
    if data:
        yield SseEvent(event, "\n".join(data), last_id)


def format_sse(data: bytes, event_id: str | None = None) -> bytes:
    """Frame one JSON message as an SSE ``message`` event."""
    head = b"event: message\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"
