"""The 2026-07-28 revision toward clients: removed methods, version errors, caching fields,
``subscriptions/listen``, and input-required results (SEP-2322) for upstreams that ask mid-call.

Real parts: an official-SDK upstream that asks its client during calls (the one of
``tests/mcp/test_server_requests.py``), the changing upstream (announces ``list_changed``), the
demo workspace over stdio (resources), a real ``triplock serve``, and the SDK ``Client`` in its
default mode, which picks 2026-07-28 against Triplock; raw HTTP where the wire is the point.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp_types import CreateMessageRequestParams, CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent
from pydantic import FileUrl

from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, running, write_config

MODERN = "2026-07-28"
SUPPORTED = ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
ALL_CAPS = {"elicitation": {"form": {}}, "sampling": {}, "roots": {}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    up_port, ch_port, gw_port = free_port(), free_port(), free_port()
    cfg = write_config(
        tmp_path_factory.mktemp("modern") / "triplock.toml",
        gw_port,
        [
            {"name": "up", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"},
            {"name": "ch", "transport": "http", "url": f"http://127.0.0.1:{ch_port}/mcp"},
            {"name": "demo", "transport": "stdio", "command": PY,
             "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]},
        ],
    )
    with (
        running([PY, "-m", "tests.mcp.test_server_requests", "--port", str(up_port)], None),
        running([PY, "-m", "tests.mcp.changing_upstream", "--port", str(ch_port)], None),
        running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"),
    ):
        yield f"http://127.0.0.1:{gw_port}/mcp"


def envelope(caps: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": caps or {}}


def modern_post(
    http: httpx.Client, url: str, method: str, params: dict[str, Any], rid: int = 1, version: str = MODERN
) -> httpx.Response:
    """One 2026-07-28 request with its headers (``Mcp-Name`` for the name-bearing methods)."""
    headers = {**MCP_HEADERS, "mcp-protocol-version": version, "mcp-method": method}
    name = params.get("name") if method in ("tools/call", "prompts/get") else params.get("uri")
    if isinstance(name, str):
        headers["mcp-name"] = name
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**params, "_meta": envelope(ALL_CAPS)}}
    return http.post(url, headers=headers, json=body)


def final_message(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether it came as JSON or as the last SSE event."""
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    datas = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return dict(json.loads([d for d in datas if d][-1]))


# --- removed methods and version errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe", "tasks/list"]
)
def test_a_method_the_revision_removed_is_404_method_not_found(gateway: str, method: str) -> None:
    params: dict[str, Any] = {"uri": "workspace://drive/index"} if method.startswith("resources/") else {}
    with httpx.Client(timeout=30) as http:
        r = modern_post(http, gateway, method, params, rid=7)
    assert r.status_code == 404
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32601, "message": f"Method not found: {method} is not part of 2026-07-28"},
    }


def test_an_unsupported_version_is_32022_listing_the_supported_ones(gateway: str) -> None:
    with httpx.Client(timeout=30) as http:
        r = http.post(
            gateway,
            headers={**MCP_HEADERS, "mcp-protocol-version": "1900-01-01", "mcp-method": "tools/list"},
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": envelope()}},
        )
    assert r.status_code == 400
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {
            "code": -32022,
            "message": "Unsupported protocol version '1900-01-01'",
            "data": {"supported": SUPPORTED, "requested": "1900-01-01"},
        },
    }


def test_discover_advertises_no_subscribe_and_no_core_tasks(gateway: str) -> None:
    with httpx.Client(timeout=30) as http:
        result = modern_post(http, gateway, "server/discover", {}).json()["result"]
    assert result["supportedVersions"] == SUPPORTED
    assert "tasks" not in result["capabilities"]
    assert result["capabilities"]["resources"] == {"listChanged": True}


def test_resources_read_carries_cache_scope_and_ttl(gateway: str) -> None:
    """The upstream (2025-11-25) gave none: private and immediately stale, never more cacheable."""
    with httpx.Client(timeout=30) as http:
        result = modern_post(http, gateway, "resources/read", {"uri": "workspace://drive/index"}).json()["result"]
    assert (result["cacheScope"], result["ttlMs"], result["resultType"]) == ("private", 0, "complete")
    assert result["contents"][0]["uri"] == "workspace://drive/index"


# --- subscriptions/listen ------------------------------------------------------------------------------------


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


async def test_listen_acknowledges_what_it_honours_then_relays_list_changes(gateway: str) -> None:
    listen = {
        "jsonrpc": "2.0",
        "id": "sub-1",
        "method": "subscriptions/listen",
        "params": {
            "_meta": envelope(),
            "notifications": {"toolsListChanged": True, "resourceSubscriptions": ["workspace://drive/index"]},
        },
    }
    headers = {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "subscriptions/listen"}
    async with httpx.AsyncClient(timeout=30) as http, http.stream("POST", gateway, headers=headers, json=listen) as r:
        assert r.status_code == 200
        messages = sse_messages(r)
        ack = await anext(messages)
        assert ack == {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {
                "notifications": {"toolsListChanged": True},  # per-resource updates are not offered
                "_meta": {"io.modelcontextprotocol/subscriptionId": "sub-1"},
            },
        }
        # The changing upstream re-describes a tool and announces it: the catalog changes.
        async with Client(gateway, mode="legacy") as client:
            await client.call_tool("ch__rewrite", {"description": "Now it does something else."})
        changed = await asyncio.wait_for(anext(messages), 20)
    assert changed == {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": "sub-1"}},
    }


# --- input-required results ----------------------------------------------------------------------------------


def test_an_upstream_elicitation_becomes_an_input_required_result_and_the_retry_completes(gateway: str) -> None:
    call = {"name": "up__ask_user", "arguments": {"message": "Your name?"}}
    with httpx.Client(timeout=30) as http:
        first = final_message(modern_post(http, gateway, "tools/call", call, rid=1))["result"]
        assert first["resultType"] == "input_required"
        (key, asked), = first["inputRequests"].items()
        assert asked["method"] == "elicitation/create"
        assert asked["params"]["message"] == "Your name?"
        answer = {"action": "accept", "content": {"name": "Ada"}}
        retry = {**call, "inputResponses": {key: answer}, "requestState": first["requestState"]}
        second = final_message(modern_post(http, gateway, "tools/call", retry, rid=2))
        assert second["id"] == 2
        assert second["result"]["content"] == [{"type": "text", "text": "answered: accept {'name': 'Ada'}"}]
        assert second["result"]["resultType"] == "complete"
        # The state was single use: presenting it again is refused.
        again = modern_post(http, gateway, "tools/call", retry, rid=3)
    assert again.status_code == 400
    assert again.json()["error"] == {
        "code": -32602,
        "message": "Invalid params: requestState is unknown, expired, already used, or not for this request",
    }


def test_request_state_is_bound_to_the_original_request(gateway: str) -> None:
    call = {"name": "up__ask_user", "arguments": {"message": "Your name?"}}
    with httpx.Client(timeout=30) as http:
        first = final_message(modern_post(http, gateway, "tools/call", call))["result"]
        state = first["requestState"]
        other = {"name": "up__ask_user", "arguments": {"message": "Something else?"}, "requestState": state}
        refused = modern_post(http, gateway, "tools/call", other, rid=2)
        tampered = {**call, "requestState": first["requestState"] + "-TAMPERED"}
        refused_too = modern_post(http, gateway, "tools/call", tampered, rid=3)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, -32602)
    assert (refused_too.status_code, refused_too.json()["error"]["code"]) == (400, -32602)


async def test_sdk_client_in_default_mode_answers_elicitation_sampling_and_roots(gateway: str) -> None:
    """The SDK picks 2026-07-28 against Triplock; its callbacks answer what the upstream asks mid-call."""

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "Grace"})

    async def on_sampling(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="sampled!"), model="m")

    async def on_roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl("file:///work/project"))])

    async with Client(
        gateway, elicitation_callback=on_elicit, sampling_callback=on_sampling, list_roots_callback=on_roots
    ) as client:
        assert client.protocol_version == MODERN
        elicited = await client.call_tool("up__ask_user", {"message": "Name?"})
        sampled = await client.call_tool("up__ask_llm", {"prompt": "Say something"})
        roots = await client.call_tool("up__ask_roots", {})
    assert [c.text for c in elicited.content] == ["answered: accept {'name': 'Grace'}"]  # type: ignore[union-attr]
    assert [c.text for c in sampled.content] == ["answered: sampled!"]  # type: ignore[union-attr]
    assert [c.text for c in roots.content] == ["answered: ['file:///work/project']"]  # type: ignore[union-attr]


def test_a_capability_the_client_did_not_declare_is_never_asked(gateway: str) -> None:
    call = {"name": "up__ask_llm", "arguments": {"prompt": "hi"}}
    headers = {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "up__ask_llm"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {**call, "_meta": envelope({"elicitation": {}})}}
    with httpx.Client(timeout=30) as http:
        result = final_message(http.post(gateway, headers=headers, json=body))["result"]
    assert result["resultType"] == "complete"
    assert result["content"][0]["text"].startswith(
        "refused -32600: Triplock did not relay sampling/createMessage: the client did not declare the sampling"
    )
