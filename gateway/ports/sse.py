"""A small incremental parser for ``text/event-stream`` (the WHATWG SSE format).

Only what MCP uses: ``event``, ``data`` (multi-line joined by ``\\n``), ``id``;
comments and ``retry`` are ignored. A line and an event are bounded (:class:`SseTooLarge`):
a peer that never sends a newline cannot grow a buffer without end. Each byte is searched
for a line end once, whatever the chunking (an unfinished line is kept as parts, not
rescanned on every chunk).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # the default of upstreams[].max_response_bytes


class SseTooLarge(ValueError):
    """A line or an event went over its bound; the stream cannot be read further."""

    def __init__(self, what: Literal["line", "event"], limit: int) -> None:
        super().__init__(f"an SSE {what} over {limit} bytes")
        self.what = what
        self.limit = limit


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str
    id: str | None


async def iter_sse(
    chunks: AsyncIterator[bytes], *, max_line: int = DEFAULT_MAX_BYTES, max_event: int = DEFAULT_MAX_BYTES
) -> AsyncIterator[SseEvent]:
    """Yield events from a byte stream, tolerating any chunking and CRLF or LF line ends.

    Raises :class:`SseTooLarge` as soon as a line (without its end) is over ``max_line`` bytes
    or an event's data lines together are over ``max_event`` bytes.
    """
    parts: list[bytes] = []  # the unfinished line, in the pieces it came in
    partial = 0  # their total length
    event, last_id = "message", None
    data: list[str] = []
    size = 0  # bytes of data in the current event
    async for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)  # only new bytes are searched
            if nl < 0:
                if start < len(chunk):
                    partial += len(chunk) - start
                    if partial > max_line:
                        raise SseTooLarge("line", max_line)
                    parts.append(chunk[start:] if start else chunk)
                break
            raw = chunk[start:nl]
            start = nl + 1
            if parts:
                if partial + len(raw) > max_line:
                    raise SseTooLarge("line", max_line)
                parts.append(raw)
                raw = b"".join(parts)
                parts, partial = [], 0
            elif len(raw) > max_line:
                raise SseTooLarge("line", max_line)
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield SseEvent(event, "\n".join(data), last_id)
                event, data, size = "message", [], 0
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                size += len(raw)
                if size > max_event:
                    raise SseTooLarge("event", max_event)
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
