"""An MCP server implementing the fixtures of the MCP conformance suite's server scenarios.

Written with the official SDK's `MCPServer` from the scenario definitions shipped in
`@modelcontextprotocol/conformance` 0.1.16 (`conformance server --url ...`): the `test_*` tools,
the `test_*` prompts, the `test://` resources, completion, logging, resource subscriptions,
SSE resumability (`test_reconnection`) and DNS-rebinding protection; and, for the 0.2 suite's
2026-07-28 requirement set, the input-gathering tools of `fixture_input_required.py`, which serve
both eras (input-required results to 2026-07-28 clients, mid-call requests to session clients).

Triplock's conformance tests run the suite against this server directly (to prove the fixture)
and through the gateway (to prove the gateway relays every feature faithfully), so everything
here is deliberately spec-conformant rather than minimal.

Run: `python tests/conformance/fixture_server.py --port 8931` (binds 127.0.0.1; endpoint `/mcp`).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    PromptReference,
    ResourceTemplateReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

if __package__ in (None, ""):  # run as a script (how the tests start it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conformance.fixture_asks_client import add_asking_tools
from tests.conformance.fixture_input_required import add_input_required_tools

# The suite exercises the handshake-era protocol (2025-06-18 / 2025-11-25), where logging and
# sampling are current features; the SDK flags them as deprecated for 2026-07-28 only.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

# A valid 1x1 red PNG and a valid 44-byte-header silent WAV: real media, so a gateway that
# inspects or re-encodes content blocks is tested on well-formed data.
RED_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
SILENT_WAV = (
    b"RIFF" + (36 + 8).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    + b"data" + (8).to_bytes(4, "little") + b"\x80" * 8
)  # fmt: skip
PNG_B64 = base64.b64encode(RED_PIXEL_PNG).decode()
WAV_B64 = base64.b64encode(SILENT_WAV).decode()

# Scenario timings: the suite asks for ~50 ms between notifications.
NOTIFY_GAP_SECONDS = 0.05
# How long `test_reconnection` works after closing its stream: long enough that the result is
# produced while the client is disconnected, short enough to keep the suite quick.
RECONNECT_WORK_SECONDS = 0.3
# Reconnection delay suggested to clients in the SSE priming event (milliseconds).
SSE_RETRY_MS = 200


class MemoryEventStore(EventStore):
    """An in-memory SSE event store, so streams can be resumed with `Last-Event-ID` (SEP-1699).

    Event ids are global and increasing; each id remembers its stream, so a replay sends only
    the later events of the stream the client was reading.
    """

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._streams: dict[str, list[tuple[str, JSONRPCMessage | None]]] = defaultdict(list)
        self._stream_of: dict[str, str] = {}

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(next(self._counter))
        self._streams[stream_id].append((event_id, message))
        self._stream_of[event_id] = stream_id
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream_id = self._stream_of.get(last_event_id)
        if stream_id is None:
            return None
        seen = False
        for event_id, message in self._streams[stream_id]:
            if seen and message is not None:  # priming events (None) carry no message to replay
                await send_callback(EventMessage(message, event_id))
            seen = seen or event_id == last_event_id
        return stream_id


def _json_schema_2020_12_tool() -> Tool:
    """`json_schema_2020_12_tool`: its inputSchema must keep `$schema`, `$defs` and
    `additionalProperties` exactly (SEP-1613), so the schema is set explicitly rather than
    derived from the signature."""

    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> str:
        return f"received name={name!r} address={address!r}"

    tool = Tool.from_function(json_schema_2020_12_tool, description="Tool with JSON Schema 2020-12 features")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            }
        },
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }
    return tool.model_copy(update={"parameters": schema})


def build_fixture_server() -> MCPServer:
    """Create the conformance fixture server."""
    server: MCPServer = MCPServer(
        "triplock-conformance-fixture",
        version="1.0.0",
        tools=[_json_schema_2020_12_tool()],
        log_level="WARNING",  # keep test output readable; failures still surface
    )
    subscriptions: set[str] = set()

    # --- tools -------------------------------------------------------------------------------

    @server.tool(description="Returns a simple text response")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Returns a 1x1 PNG image")
    def test_image_content() -> CallToolResult:
        return CallToolResult(content=[ImageContent(type="image", data=PNG_B64, mime_type="image/png")])

    @server.tool(description="Returns a short WAV clip")
    def test_audio_content() -> CallToolResult:
        return CallToolResult(content=[AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")])

    @server.tool(description="Returns an embedded text resource")
    def test_embedded_resource() -> CallToolResult:
        resource = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=resource)])

    @server.tool(description="Returns text, image and resource content together")
    def test_multiple_content_types() -> CallToolResult:
        resource = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
        )
        return CallToolResult(
            content=[
                TextContent(type="text", text="Multiple content types test:"),
                ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
                EmbeddedResource(type="resource", resource=resource),
            ]
        )

    @server.tool(description="Sends three info log notifications while it runs")
    async def test_tool_with_logging(ctx: Context) -> str:
        await ctx.log("info", "Tool execution started")
        await anyio.sleep(NOTIFY_GAP_SECONDS)
        await ctx.log("info", "Tool processing data")
        await anyio.sleep(NOTIFY_GAP_SECONDS)
        await ctx.log("info", "Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool(description="Always fails with a tool error")
    def test_error_handling() -> str:
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool(description="Reports progress 0, 50 and 100 of 100")
    async def test_tool_with_progress(ctx: Context) -> str:
        # report_progress is a no-op when the request carried no progressToken, as the scenario wants.
        for step, value in enumerate((0, 50, 100)):
            if step:
                await anyio.sleep(NOTIFY_GAP_SECONDS)
            await ctx.report_progress(value, 100, f"{value}% done")
        return "Tool with progress executed successfully"

    add_asking_tools(server)  # sampling and elicitation (both eras): fixture_asks_client.py

    @server.tool(description="Closes its SSE stream mid-call; the result arrives after reconnection (SEP-1699)")
    async def test_reconnection(ctx: Context) -> str:
        # The client resumes with GET + Last-Event-ID and must receive this result from the
        # event store: the point of the scenario is that nothing is lost across the gap.
        await ctx.close_sse_stream()
        await anyio.sleep(RECONNECT_WORK_SECONDS)
        return "Reconnection test completed"

    # --- resources ---------------------------------------------------------------------------

    @server.resource(
        "test://static-text",
        name="static-text",
        description="A static text resource",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary",
        name="static-binary",
        description="A static binary resource (PNG)",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return RED_PIXEL_PNG

    @server.resource(
        "test://watched-resource",
        name="watched-resource",
        description="A resource clients may subscribe to",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return "Watched resource content."

    @server.resource(
        "test://template/{id}/data",
        name="template-data",
        description="A templated resource that echoes its id",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return f'{{"id":"{id}","templateTest":true,"data":"Data for ID: {id}"}}'

    # --- prompts -----------------------------------------------------------------------------

    @server.prompt(description="A simple prompt without arguments")
    def test_simple_prompt() -> list[UserMessage]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(description="A prompt with two required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(description="A prompt that embeds the resource named by resourceUri")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # camelCase: the wire name
        resource = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(EmbeddedResource(type="resource", resource=resource)),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with an image")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]

    # --- completion, logging level, subscriptions --------------------------------------------

    @server.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        words = ["paris", "park", "party", "test", "testing", "template"]
        values = [w for w in words if w.startswith(argument.value.lower())]
        return Completion(values=values, total=len(values), has_more=False)

    # MCPServer has no decorators for logging/setLevel and resources/(un)subscribe, so they are
    # registered on the low-level server it wraps (the SDK's own extension hooks do the same).
    lowlevel = server._lowlevel_server

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    add_input_required_tools(server)  # the 2026-07-28 set's SEP-2322 tools and SEP-2575 diagnostics
    return server


def main(argv: list[str] | None = None) -> int:
    """Serve the fixture over streamable HTTP on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--path", default="/mcp")
    args = parser.parse_args(argv)
    server = build_fixture_server()
    try:
        anyio.run(
            lambda: server.run_streamable_http_async(
                host="127.0.0.1",  # loopback only; also turns on the SDK's Host/Origin checks
                port=args.port,
                streamable_http_path=args.path,
                event_store=MemoryEventStore(),
                retry_interval=SSE_RETRY_MS,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
