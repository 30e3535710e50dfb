"""Tools an upstream lists only to clients that declare a capability reach exactly those clients.

End to end: an official-SDK upstream over HTTP lists ``summarize`` (which samples the client's
model) only to a client that declared ``sampling``, as the reference "everything" server does; a
real gateway fronts it; two SDK clients connect, one with a sampling callback and one without.
Before, the gateway's catalog session declared no capabilities, so ``summarize`` reached nobody.
The upstream also reports the capability sets it was listed under: the gateway's measurement
(the catalog session and its probes) costs 8 listings for an upstream that gates tools.

Run the upstream alone: ``python -m tests.mcp.test_capability_catalog --port 8944``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CreateMessageRequestParams, CreateMessageResult, SamplingMessage, TextContent

from gateway.mcp.capability_catalog import capability_sets, client_capabilities, tools_by_capabilities
from gateway.mcp.catalog import Catalog, UpstreamListing
from tests.support import PY, free_port, gateway_cmd, running, serve_upstream_main, write_config

RELAYED = ("elicitation", "roots", "sampling")


class GatedServer(MCPServer):
    """Lists ``summarize`` only to clients that declared sampling; remembers what each listing saw."""

    listed_under: list[list[str]]

    async def _handle_list_tools(self, ctx: Any, params: Any) -> Any:
        caps = ctx.session.client_capabilities
        self.listed_under.append([c for c in RELAYED if caps is not None and getattr(caps, c) is not None])
        result = await super()._handle_list_tools(ctx, params)
        if caps is None or caps.sampling is None:
            result.tools = [t for t in result.tools if t.name != "summarize"]
        return result


def build_upstream() -> MCPServer:
    server = GatedServer("gated", version="1.0.0", log_level="WARNING")
    server.listed_under = []

    @server.tool(description="Echoes its text")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Summarizes a text with the client's model (sampling)")
    async def summarize(text: str, ctx: Context) -> str:
        prompt = [SamplingMessage(role="user", content=TextContent(type="text", text=f"Summarize: {text}"))]
        result = await ctx.session.create_message(messages=prompt, max_tokens=20, related_request_id=ctx.request_id)
        return f"summary: {getattr(result.content, 'text', '')}"

    @server.tool(description="The capability sets each tools/list was asked under, as JSON")
    def listings() -> str:
        return json.dumps(sorted(server.listed_under))

    return server


async def sample(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", content=TextContent(type="text", text="short"), model="test")


async def test_a_sampling_tool_is_listed_and_callable_only_for_a_client_with_sampling(tmp_path: Path) -> None:
    up, port = free_port(), free_port()
    cfg = write_config(tmp_path / "triplock.toml", port,
                       [{"name": "up", "transport": "http", "url": f"http://127.0.0.1:{up}/mcp"}])
    url = f"http://127.0.0.1:{port}/mcp"
    with running([PY, "-m", "tests.mcp.test_capability_catalog", "--port", str(up)], None), \
            running(gateway_cmd(cfg), f"http://127.0.0.1:{port}/readyz"):
        async with Client(url, mode="legacy", sampling_callback=sample) as capable, \
                Client(url, mode="legacy") as plain:
            assert [t.name for t in (await capable.list_tools()).tools] == ["up__echo", "up__listings", "up__summarize"]
            assert [t.name for t in (await plain.list_tools()).tools] == ["up__echo", "up__listings"]
            summary = await capable.call_tool("up__summarize", {"text": "a long text"})
            assert summary.is_error is False and summary.content[0].text == "summary: short"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as refused:
                await plain.call_tool("up__summarize", {"text": "a long text"})
            assert refused.value.message == "Unknown tool: up__summarize"
            listed = json.loads((await plain.call_tool("up__listings", {})).content[0].text)  # type: ignore[union-attr]
    # every capability set once: the catalog session (all three), then seven probe sessions
    assert listed == sorted([sorted(s) for s in capability_sets()])


async def test_an_upstream_that_gates_nothing_costs_one_probe() -> None:
    tools = [{"name": "a"}, {"name": "b"}]
    asked: list[frozenset[str]] = []

    async def list_tools(capabilities: frozenset[str]) -> list[dict[str, Any]]:
        asked.append(capabilities)
        return tools

    assert await tools_by_capabilities(tools, list_tools) == (tools, {})
    assert asked == [frozenset()]


async def test_gated_tools_carry_the_sets_they_are_listed_under() -> None:
    async def list_tools(capabilities: frozenset[str]) -> list[dict[str, Any]]:
        extra = [{"name": "ask"}] if {"sampling", "elicitation"} <= capabilities else []
        only_without = [{"name": "fallback"}] if not capabilities else []
        return [{"name": "a"}, *extra, *only_without]

    full = await list_tools(frozenset(RELAYED))
    merged, offered = await tools_by_capabilities(full, list_tools)
    assert [t["name"] for t in merged] == ["a", "ask", "fallback"]
    assert offered == {
        "ask": {frozenset({"sampling", "elicitation"}), frozenset(RELAYED)},
        "fallback": {frozenset()},
    }
    catalog = Catalog([("u", "u", UpstreamListing(tools=merged, offered=offered))])
    for declared, names in [
        ({}, ["u__a", "u__fallback"]),
        ({"sampling": {}}, ["u__a"]),
        ({"sampling": {}, "elicitation": {"form": {}}}, ["u__a", "u__ask"]),
        ({"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}, "experimental": {}}, ["u__a", "u__ask"]),
        ({"sampling": True}, ["u__a", "u__fallback"]),  # not an object: not declared
    ]:
        seen = catalog.visible("tools", lambda _u, _n: True, client_capabilities(declared))
        assert [t["name"] for t in seen] == names, declared
    assert [t["name"] for t in catalog.page("tools", None)["tools"]] == ["u__a", "u__fallback"]


if __name__ == "__main__":
    sys.exit(serve_upstream_main(build_upstream, __doc__))
