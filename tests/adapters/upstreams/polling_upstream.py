"""An official-SDK MCP server that polls (SEP-1699): it closes a call's SSE stream before answering.

Its ``slow_answer`` tool sends a progress notification, closes the request's SSE stream (the
SDK sends the priming event with an id and ``retry:`` first, and keeps later events in the event
store), waits until the client has resumed the stream, and then answers. A client that does not
resume with ``Last-Event-ID`` never gets the answer.

Run it alone: ``python -m tests.adapters.upstreams.polling_upstream --port 8941``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

RETRY_MS = 300  # the retry: the server sends, which the client must wait before resuming


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, so a resumption can replay what came after an id."""

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []
        self._ids = itertools.count(1)
        self.resumed = asyncio.Event()  # set when a client asked to replay a stream

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = f"ev-{next(self._ids)}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        at = next((i for i, (eid, _, _) in enumerate(self._events) if eid == last_event_id), None)
        if at is None:
            return None
        stream = self._events[at][1]
        for eid, sid, message in self._events[at + 1 :]:
            if sid == stream and message is not None:
                await send_callback(EventMessage(message, eid))
        self.resumed.set()
        return stream


def build(store: MemoryEventStore) -> MCPServer:
    """The polling server: one tool that answers only after its stream was closed and resumed."""
    server = MCPServer("polling-upstream", version="1.0.0", log_level="WARNING")

    @server.tool()
    async def slow_answer(ctx: Context) -> str:
        """Close the stream, wait for the client to resume it, then answer."""
        await ctx.report_progress(1, 2, "half way")
        await ctx.close_sse_stream()
        async with asyncio.timeout(20):
            await store.resumed.wait()
        store.resumed.clear()
        return "answered after the stream was resumed"

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    store = MemoryEventStore()
    app = build(store).streamable_http_app(event_store=store, retry_interval=RETRY_MS, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
