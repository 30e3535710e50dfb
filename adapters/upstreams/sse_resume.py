"""What an upstream's SSE stream says about resuming it (SEP-1699): the last event id and ``retry:``.

A 2025-11-25 server may close a response stream before it has sent the response (to poll
instead of holding a connection), after it has sent an event id and usually a ``retry:`` field.
The client is expected to wait that many milliseconds and resume with an HTTP GET carrying
``Last-Event-ID``; the rest of the stream, the response included, comes on that GET.
:class:`StreamCursor` keeps what is needed for that across the original stream and every
resumption.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from adapters.upstreams.oauth import header_safe

DEFAULT_RETRY_MS = 1000  # a server that sent an id but no retry: wait a second, like the SDK clients
MAX_RETRY_MS = 60_000  # a larger retry: is clamped: a call is bounded by its own deadline anyway
MAX_IDLE_RESUMES = 5  # resumptions in a row that bring no new event before the call gives up
_RETRY_LINE_CAP = 32  # "retry: " and a number fit; a longer unfinished line is not kept whole


@dataclass(slots=True)
class StreamCursor:
    """The position in one logical upstream stream: the last event id seen and the server's retry."""

    last_event_id: str | None = None
    retry_ms: int | None = None

    def saw(self, event_id: str | None) -> None:
        """Remember ``event_id`` when it can go back in a header (an id with CR, LF or NUL never does)."""
        if event_id and header_safe(event_id) and len(event_id) <= 1024:
            self.last_event_id = event_id

    @property
    def resumable(self) -> bool:
        """True once the server has named an event: only then can the stream be resumed."""
        return self.last_event_id is not None

    def delay(self) -> float:
        """Seconds to wait before resuming: the server's ``retry:`` (SEP-1699 makes it a MUST), else a default."""
        ms = DEFAULT_RETRY_MS if self.retry_ms is None else min(self.retry_ms, MAX_RETRY_MS)
        return ms / 1000.0

    def resume_headers(self) -> dict[str, str]:
        """The headers of the resuming GET."""
        assert self.last_event_id is not None
        return {"accept": "text/event-stream", "last-event-id": self.last_event_id}

    async def tap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass ``chunks`` through unchanged, noting each ``retry:`` field on the way.

        The event parser (gateway.ports.sse) does not report ``retry:``; this looks only at line
        starts, keeping at most a few bytes of an unfinished line, so it adds no buffering.
        """
        head = b""  # the start of the current unfinished line (at most _RETRY_LINE_CAP bytes)
        async for chunk in chunks:
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    if len(head) < _RETRY_LINE_CAP:
                        head += chunk[start : start + _RETRY_LINE_CAP - len(head)]
                    break
                if head:
                    line = head + chunk[start : min(nl, start + _RETRY_LINE_CAP)]
                elif chunk.startswith(b"retry:", start, nl):  # no copy of lines that are not retry:
                    line = chunk[start : min(nl, start + _RETRY_LINE_CAP)]
                else:
                    line = b""
                head = b""
                start = nl + 1
                if line.startswith(b"retry:"):
                    self._note_retry(line[6:])
            yield chunk

    def _note_retry(self, value: bytes) -> None:
        digits = value.strip()
        if digits.isdigit() and len(digits) <= 9:  # the SSE spec: ASCII digits only, else ignored
            self.retry_ms = int(digits)
