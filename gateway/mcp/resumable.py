"""Resumable SSE responses toward handshake-era clients (2025-11-25 transport, SEP-1699).

When a POST's answer becomes an SSE stream, the stream gets a log: every event carries an id
(``<stream>_<n>``), the first event is a priming event (an id, ``retry:`` and no data) so a
client that loses the connection knows where to resume and how soon, and the events stay in a
bounded buffer. A client that reconnects with ``GET`` and ``Last-Event-ID`` gets the events of
that stream after that id, then the rest of the stream as it happens, until the answer.

Bounds: :data:`EVENTS_PER_STREAM` events are kept per stream (a client that resumes from an
event older than that is told so, 404, rather than given a stream with a hole);
:data:`STREAMS_PER_SESSION` logs per session and finished logs are forgotten
:data:`KEEP_FINISHED` seconds after the answer. A log belongs to its session: another
session's ``Last-Event-ID`` is unknown here. The 2026-07-28 revision has no resumability
(a broken stream is re-issued as a new request), so only the handshake era gets logs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator

from gateway.ports.sse import format_sse

RETRY_MS = 1000  # how soon a client should reconnect (the SSE `retry:` field)
EVENTS_PER_STREAM = 256
STREAMS_PER_SESSION = 32
KEEP_FINISHED = 60.0  # seconds
FIRST_RESUMABLE_VERSION = "2025-11-25"  # SEP-1699's priming event is defined from this revision on


class EventsLost(Exception):
    """The events after the client's last one have left the bounded buffer."""


class StreamLog:
    """One SSE response's events, numbered, the last :data:`EVENTS_PER_STREAM` of them kept."""

    def __init__(self, key: str, session_id: str) -> None:
        self.key = key
        self.session_id = session_id
        self.events: deque[tuple[int, bytes]] = deque(maxlen=EVENTS_PER_STREAM)
        self.next = 1
        self.closed_at: float | None = None
        self._grew = asyncio.Event()

    def priming(self) -> bytes:
        """The first event: an id to resume from, the reconnection delay, no data."""
        return f"id: {self.key}_0\nretry: {RETRY_MS}\ndata: \n\n".encode()

    def append(self, data: bytes) -> bytes:
        """Number, keep and frame one message."""
        n = self.next
        self.next += 1
        frame = format_sse(data, f"{self.key}_{n}")
        self.events.append((n, frame))
        self._grew.set()
        return frame

    def close(self) -> None:
        """The answer was sent: nothing more comes on this stream."""
        self.closed_at = time.monotonic()
        self._grew.set()

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        """The events after number ``after``, then each new one, until the stream's answer."""
        if after + 1 < self.next and (not self.events or self.events[0][0] > after + 1):
            raise EventsLost
        sent = after
        while True:
            for n, frame in list(self.events):
                if n > sent:
                    sent = n
                    yield frame
            if self.closed_at is not None:
                return
            self._grew.clear()
            await self._grew.wait()


class ResumableStreams:
    """Every session's stream logs, by stream key."""

    def __init__(self) -> None:
        self._logs: dict[str, StreamLog] = {}

    def open(self, session_id: str) -> StreamLog:
        """A log for a new SSE response of ``session_id``."""
        self._prune(session_id)
        log = StreamLog(secrets.token_hex(8), session_id)
        self._logs[log.key] = log
        return log

    def find(self, session_id: str, last_event_id: str) -> tuple[StreamLog, int] | None:
        """The log ``last_event_id`` belongs to (only within its own session) and the event's number."""
        key, _, number = last_event_id.rpartition("_")
        log = self._logs.get(key)
        if log is None or log.session_id != session_id or not number.isdigit():
            return None
        return log, int(number)

    def _prune(self, session_id: str) -> None:
        now = time.monotonic()
        stale = [k for k, g in self._logs.items() if g.closed_at is not None and now - g.closed_at > KEEP_FINISHED]
        for key in stale:
            del self._logs[key]
        mine = [g for g in self._logs.values() if g.session_id == session_id]
        for log in mine[: max(0, len(mine) - STREAMS_PER_SESSION + 1)]:  # oldest first (insertion order)
            del self._logs[log.key]
