"""Triplock toward an upstream that speaks 2026-07-28 (issue #17 item 4, upstream side).

Real parts: an official-SDK ``MCPServer`` served stateless (this module, run with ``--port``),
behind the layer of tests/mcp/modern_only_upstream.py, which records every POST's headers and body
(``GET /recorded``) and, with ``--modern-only``, refuses ``initialize`` as a 2026-07-28-only server
does; a real ``triplock serve``; SDK clients of both eras. Asserted: the exact headers and
``_meta`` envelope the upstream received, the exact results, and an input-required round trip
both ways (a 2026-07-28 client sees the upstream's keys and never its ``requestState``; a
session-era client is asked by elicitation and its answer reaches the upstream).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import (
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
    TextContent,
)
from pydantic import Field

from tests.mcp.modern_only_upstream import MODERN, modern_only_layer, serve, serve_json
from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, running, write_config

STATE = "upstream-secret-state-1"
ASK_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def build_app(modern_only: bool) -> Any:
    """The recording upstream: an SDK server (stateless) behind a layer that keeps each POST's headers and body."""
    server = MCPServer("modern-upstream")
    recorded: list[dict[str, Any]] = []

    @server.tool()
    def lookup(region: str = Field(json_schema_extra={"x-mcp-header": "Region"}), q: str = "") -> str:
        """Look something up in a region."""
        return f"{q}@{region}"

    @server.tool()
    async def confirm(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Ask the client to confirm, then say what it answered."""
        responses = ctx.input_responses
        if not responses:
            ask = ElicitRequest(params=ElicitRequestFormParams(message="Proceed?", requested_schema=ASK_SCHEMA))
            return InputRequiredResult(input_requests={"confirm_1": ask}, request_state=STATE)
        answer = responses["confirm_1"].model_dump(mode="json", exclude_none=True)
        text = f"state={ctx.request_state} answer={json.dumps(answer, sort_keys=True)}"
        return CallToolResult(content=[TextContent(type="text", text=text)])

    def record(headers: dict[str, str], parsed: Any) -> None:
        recorded.append({"headers": headers, "body": parsed})

    inner = server.streamable_http_app(stateless_http=True)
    return modern_only_layer(inner, routes={"/recorded": serve_json(recorded)}, on_post=record,
                             refuse_initialize=modern_only)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--modern-only", action="store_true")
    args = parser.parse_args(argv)
    serve(build_app(args.modern_only), args.port)
    return 0


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Triplock in front of a 2026-07-28-only upstream (``protocol`` left at ``auto``)."""
    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    cfg = write_config(tmp_path_factory.mktemp("modern-up") / "triplock.toml", gw_port,
                       [{"name": "m", "prefix": "", "transport": "http", "url": f"{upstream}/mcp"}])
    with (
        running([PY, "-m", "tests.mcp.test_modern_upstream", "--port", str(up_port), "--modern-only"],
                None),
        running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"),
    ):
        yield f"http://127.0.0.1:{gw_port}/mcp", upstream


def recorded(upstream: str, method: str) -> list[dict[str, Any]]:
    posts = httpx.get(f"{upstream}/recorded", timeout=5).json()
    return [p for p in posts if isinstance(p["body"], dict) and p["body"].get("method") == method]


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def test_a_modern_only_upstream_is_discovered_and_spoken_to_with_the_exact_headers(
    setup: tuple[str, str],
) -> None:
    url, upstream = setup
    async with Client(url, mode="legacy") as client:
        result = await client.call_tool("lookup", {"region": "eu-west", "q": "bob"})
    assert text_of(result) == "bob@eu-west"
    assert [p["body"]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
            for p in recorded(upstream, "server/discover")][:1] == [MODERN]
    assert len(recorded(upstream, "initialize")) == 1  # tried once, refused, remembered: never again
    call = recorded(upstream, "tools/call")[-1]
    headers, meta = call["headers"], call["body"]["params"]["_meta"]
    assert headers["mcp-protocol-version"] == MODERN
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-name"] == "lookup"
    assert headers["mcp-param-region"] == "eu-west"
    assert "mcp-session-id" not in headers
    assert meta["io.modelcontextprotocol/protocolVersion"] == MODERN
    assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "mcp"  # the session-era client's own info
    assert call["body"]["params"]["arguments"] == {"region": "eu-west", "q": "bob"}
    listing = recorded(upstream, "tools/list")[-1]["headers"]
    assert (listing["mcp-method"], "mcp-name" in listing) == ("tools/list", False)


def modern_call(http: httpx.Client, url: str, params: dict[str, Any]) -> dict[str, Any]:
    headers = {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": params["name"]}
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {**params, "_meta": meta}}
    response = http.post(url, headers=headers, json=body)
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    datas = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return dict(json.loads([d for d in datas if d][-1]))


def test_a_modern_client_gets_the_upstreams_input_request_with_its_keys_and_the_gateways_state(
    setup: tuple[str, str],
) -> None:
    url, upstream = setup
    with httpx.Client(timeout=30) as http:
        first = modern_call(http, url, {"name": "confirm", "arguments": {}})["result"]
        assert first["resultType"] == "input_required"
        assert first["inputRequests"] == {"confirm_1": {"method": "elicitation/create", "params": {
            "mode": "form", "message": "Proceed?", "requestedSchema": ASK_SCHEMA}}}
        assert first["requestState"] != STATE and STATE not in json.dumps(first)
        answer = {"action": "accept", "content": {"ok": True}}
        final = modern_call(http, url, {"name": "confirm", "arguments": {},
                                        "inputResponses": {"confirm_1": answer},
                                        "requestState": first["requestState"]})["result"]
    assert final["content"] == [{"type": "text", "text": f'state={STATE} answer={json.dumps(answer, sort_keys=True)}'}]
    retry = recorded(upstream, "tools/call")[-1]["body"]["params"]
    # the upstream got its own (SDK-sealed) requestState back, not the gateway's token, and the answers by key
    assert retry["requestState"] != first["requestState"] and retry["requestState"].startswith("v1.")
    assert retry["inputResponses"] == {"confirm_1": answer}
    # the client's own capabilities went to the upstream (what it may ask depends on them)
    assert retry["_meta"]["io.modelcontextprotocol/clientCapabilities"] == {"elicitation": {"form": {}}}


async def test_a_session_era_client_is_asked_by_elicitation_and_its_answer_reaches_the_upstream(
    setup: tuple[str, str],
) -> None:
    url, upstream = setup
    asked: list[str] = []

    async def elicit(_ctx: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"ok": True})

    async with Client(url, mode="legacy", elicitation_callback=elicit) as client:
        result = await client.call_tool("confirm", {})
    assert asked == ["Proceed?"]
    answer = {"action": "accept", "content": {"ok": True}}
    assert text_of(result) == f"state={STATE} answer={json.dumps(answer, sort_keys=True)}"
    assert result.is_error is False
    assert recorded(upstream, "tools/call")[-1]["body"]["params"]["inputResponses"] == {"confirm_1": answer}


async def test_a_session_era_client_without_elicitation_gets_a_tool_error_saying_what_is_needed(
    setup: tuple[str, str],
) -> None:
    url, _ = setup
    async with Client(url, mode="legacy") as client:
        result = await client.call_tool("confirm", {})
    assert result.is_error is True
    assert text_of(result) == (
        "Upstream 'm' needs input from the client to finish this request (elicitation/create): the client refused"
        " it (elicitation/create: it may not have declared that capability)"
    )


def test_protocol_setting_is_validated() -> None:
    from pydantic import ValidationError

    from gateway.config import UpstreamConfig

    assert UpstreamConfig(name="a", transport="http", url="http://127.0.0.1:1/mcp").protocol == "auto"
    with pytest.raises(ValidationError, match="Input should be 'auto', '2025-11-25' or '2026-07-28'"):
        UpstreamConfig(name="a", transport="http", url="http://127.0.0.1:1/mcp", protocol="2026")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'protocol' 2026-07-28 needs transport 'http'"):
        UpstreamConfig(name="a", transport="stdio", command="x", protocol="2026-07-28")


if __name__ == "__main__":
    sys.exit(main())
