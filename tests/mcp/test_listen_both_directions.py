"""``subscriptions/listen`` in both directions (issue #17 item 4: what a client would get from the upstream directly).

Real parts: an official-SDK ``MCPServer`` that speaks only 2026-07-28, with a subscription bus
(this module, run with ``--port``), behind the layer of tests/mcp/modern_only_upstream.py, here
listing the listen streams open right now (``GET /listens``), publishing a resource update
(``POST /touch?uri=``) and adding a tool with a ``tools/list_changed`` on the bus
(``POST /add_tool?name=``); a session-era SDK server (``--handshake``) whose
``resources/subscribe`` is recorded per session (``GET /subscribed``) and which sends
``notifications/resources/updated`` to its subscribers (``POST /touch?uri=``); a real
``triplock serve`` with a policy that denies one URI; 2026-07-28 listen streams read as raw SSE
with httpx (the SDK client has no listen), and an SDK session client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged
from mcp_types import EmptyResult, SubscribeRequestParams, ToolListChangedNotification, UnsubscribeRequestParams
from starlette.responses import JSONResponse, Response

from tests.mcp.modern_only_upstream import MODERN, OpenListens, modern_only_layer, publish_resource_update, serve
from tests.mcp.test_resource_bridge import until
from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, running, write_config

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
POLICY = """\
version: 1
name: listen-test
mode: enforce
default_upstream:
  action_control: allow_all
  new_actions_default: allow
  trust_annotations: true
rules:
  - {id: no-secret, action: deny, resources: ["test://secret"]}
"""


def build_modern_app() -> Any:
    """The 2026-07-28-only upstream, its listens visible and its bus driven over HTTP."""
    bus = InMemorySubscriptionBus()
    server = MCPServer("modern-upstream", subscriptions=bus)
    listens = OpenListens()
    for uri in ("test://a", "test://b", "test://secret"):
        server.resource(uri, name=uri.removeprefix("test://"), mime_type="text/plain")(lambda: "text")

    @server.tool()
    def hello() -> str:
        """Say hello."""
        return "hello"

    async def add_tool(query: str) -> Response:
        server.add_tool(lambda: "new", name=query.removeprefix("name="), description="Added at run time.")
        await bus.publish(ToolsListChanged())
        return Response(status_code=204)

    routes = {"/listens": listens.route, "/touch": publish_resource_update(bus), "/add_tool": add_tool}
    return modern_only_layer(server.streamable_http_app(stateless_http=True), routes=routes,
                             on_post=lambda _headers, parsed: listens.note(parsed))


def build_handshake_app() -> Any:
    """A session-era upstream whose resources can be subscribed and updated."""
    server = MCPServer("handshake-upstream")
    subscribed: dict[str, dict[Any, Any]] = {}  # uri -> MCP session id -> that session (to send it updates)
    for uri in ("test://h/a", "test://h/b"):
        server.resource(uri, name=uri.removeprefix("test://"), mime_type="text/plain")(lambda: "text")

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscribed.setdefault(str(params.uri), {})[ctx.request.headers["mcp-session-id"]] = ctx.session
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribed.get(str(params.uri), {}).pop(ctx.request.headers["mcp-session-id"], None)
        return EmptyResult()

    server._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    server._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    inner = server.streamable_http_app()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, query = scope.get("path"), scope.get("query_string", b"").decode()
        if scope["type"] == "http" and path == "/subscribed":
            await JSONResponse({uri: len(s) for uri, s in subscribed.items() if s})(scope, receive, send)
            return
        if scope["type"] == "http" and path == "/touch":
            uri = query.removeprefix("uri=")
            for session in list(subscribed.get(uri, {}).values()):
                await session.send_resource_updated(uri)
            await Response(status_code=204)(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--handshake", action="store_true")
    args = parser.parse_args(argv)
    serve(build_handshake_app() if args.handshake else build_modern_app(), args.port)
    return 0


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    """Triplock in front of the 2026-07-28-only upstream ``u`` and the session-era upstream ``h``."""
    up_port, hs_port, gw_port = free_port(), free_port(), free_port()
    tmp = tmp_path_factory.mktemp("listen")
    (tmp / "policy.yaml").write_text(POLICY)
    cfg = write_config(tmp / "triplock.toml", gw_port,
                       [{"name": "u", "prefix": "", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"},
                        {"name": "h", "prefix": "h", "transport": "http", "url": f"http://127.0.0.1:{hs_port}/mcp"}],
                       policy={"file": str(tmp / "policy.yaml")})
    module = [PY, "-m", "tests.mcp.test_listen_both_directions", "--port"]
    with (
        running([*module, str(up_port)], None),
        running([*module, str(hs_port), "--handshake"], None),
        running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"),
    ):
        yield (f"http://127.0.0.1:{gw_port}/mcp", f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{hs_port}",
               tmp / "audit.jsonl")


def modern_headers(method: str) -> dict[str, str]:
    return {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": method}


def modern_body(rid: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**params, "_meta": meta}}


@contextlib.asynccontextmanager
async def listening(url: str, rid: str, notifications: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
    """A 2026-07-28 client's listen stream, its messages collected as they arrive; closed when the block ends."""
    seen: list[dict[str, Any]] = []
    body = modern_body(rid, "subscriptions/listen", {"notifications": notifications})
    async with httpx.AsyncClient(timeout=None) as http:

        async def read() -> None:
            async with http.stream("POST", url, headers=modern_headers("subscriptions/listen"), json=body) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))

        reader = asyncio.create_task(read())
        try:
            await until(lambda: seen or reader.done(), f"listen {rid} acknowledged")
            yield seen
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def acked(seen: list[dict[str, Any]]) -> dict[str, Any]:
    assert seen[0]["method"] == "notifications/subscriptions/acknowledged"
    return dict(seen[0]["params"]["notifications"])


def updates(seen: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["params"]["uri"], m["params"]["_meta"][SUBSCRIPTION_ID]) for m in seen
            if m.get("method") == "notifications/resources/updated"]


def upstream_uris(upstream: str) -> list[list[str]]:
    return [sorted(x.get("resourceSubscriptions", [])) for x in httpx.get(f"{upstream}/listens", timeout=5).json()]


def session_era_subscribed(upstream: str) -> dict[str, int]:
    return dict(httpx.get(f"{upstream}/subscribed", timeout=5).json())


async def test_a_tool_added_at_a_2026_upstream_reaches_listeners_of_both_eras(
    setup: tuple[str, str, str, Path],
) -> None:
    url, upstream, _, _ = setup
    await until(lambda: httpx.get(f"{upstream}/listens", timeout=5).json() == [
        {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}],
        "Triplock listens to the 2026-07-28 upstream for its list changes")
    session_heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            session_heard.append(message.method)

    async with (
        Client(url, mode="legacy", message_handler=on_message),
        listening(url, "tools-listen", {"toolsListChanged": True}) as seen,
    ):
        assert acked(seen) == {"toolsListChanged": True}
        httpx.post(f"{upstream}/add_tool?name=fresh", timeout=5)
        await until(lambda: len(seen) > 1, "the listener hears the change")
        assert seen[1:] == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                             "params": {"_meta": {SUBSCRIPTION_ID: "tools-listen"}}}]
        await until(lambda: session_heard, "the session client hears the change")
        assert session_heard == ["notifications/tools/list_changed"]
    listed = httpx.post(url, headers=modern_headers("tools/list"), json=modern_body(1, "tools/list", {}), timeout=10)
    assert sorted(t["name"] for t in listed.json()["result"]["tools"]) == ["fresh", "hello"]


async def test_resource_updates_reach_exactly_the_listeners_that_accepted_the_uri(
    setup: tuple[str, str, str, Path],
) -> None:
    url, upstream, handshake, _ = setup
    async with (
        listening(url, "one", {"resourceSubscriptions": ["test://a", "test://h/a"]}) as one,
        listening(url, "two", {"resourceSubscriptions": ["test://b", "test://h/a"]}) as two,
    ):
        assert acked(one) == {"resourceSubscriptions": ["test://a", "test://h/a"]}
        assert acked(two) == {"resourceSubscriptions": ["test://b", "test://h/a"]}
        # one upstream listen, the union (the one it replaced closes in the background)
        await until(lambda: upstream_uris(upstream) == [["test://a", "test://b"]], "one listen for the union")
        assert session_era_subscribed(handshake) == {"test://h/a": 1}  # once on the shared session
        for uri in ("test://a", "test://h/a", "test://b"):
            server = handshake if uri.startswith("test://h/") else upstream
            httpx.post(f"{server}/touch?uri={uri}", timeout=5)
        await until(lambda: len(updates(one)) == 2 and len(updates(two)) == 2, "the updates arrive")
        assert sorted(updates(one)) == [("test://a", "one"), ("test://h/a", "one")]
        assert sorted(updates(two)) == [("test://b", "two"), ("test://h/a", "two")]
    await until(lambda: session_era_subscribed(handshake) == {}, "both streams closed: test://h/a unsubscribed")


async def test_a_uri_the_policy_forbids_or_the_catalog_lacks_is_not_acknowledged(
    setup: tuple[str, str, str, Path],
) -> None:
    url, upstream, _, audit = setup
    wanted = ["test://secret", "nowhere://x", "test://a"]
    async with listening(url, "picky", {"resourcesListChanged": True, "resourceSubscriptions": wanted}) as seen:
        assert acked(seen) == {"resourcesListChanged": True, "resourceSubscriptions": ["test://a"]}
        await until(lambda: upstream_uris(upstream) == [["test://a"]], "the upstream listen carries test://a alone")
        httpx.post(f"{upstream}/touch?uri=test://secret", timeout=5)
        httpx.post(f"{upstream}/touch?uri=test://a", timeout=5)
        await until(lambda: updates(seen), "the accepted URI's update")
        assert updates(seen) == [("test://a", "picky")]
    # Each URI was decided and audited as resources/subscribe is.
    records = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    checked = {r["exposed_tool"]: (r["method"], r["outcome"], r["rule_ids"]) for r in records
               if r.get("type", "").startswith("connector.call.") and r.get("exposed_tool") in wanted}
    assert checked == {"test://secret": ("resources/subscribe", "denied", ["rule:no-secret"]),
                       "nowhere://x": ("resources/subscribe", "denied", ["catalog.unknown_resource"]),
                       "test://a": ("resources/subscribe", "allowed", ["default.read"])}


async def test_closing_the_stream_closes_the_upstream_subscriptions(setup: tuple[str, str, str, Path]) -> None:
    url, upstream, handshake, _ = setup
    async with listening(url, "brief", {"resourceSubscriptions": ["test://b", "test://h/b"]}) as seen:
        assert acked(seen) == {"resourceSubscriptions": ["test://b", "test://h/b"]}
        await until(lambda: upstream_uris(upstream) == [["test://b"]], "the upstream listen carries test://b")
        assert session_era_subscribed(handshake) == {"test://h/b": 1}
    await until(lambda: upstream_uris(upstream) == [[]], "the upstream listen no longer carries test://b")
    await until(lambda: session_era_subscribed(handshake) == {}, "test://h/b unsubscribed at the session-era upstream")


def test_discover_advertises_resource_subscriptions(setup: tuple[str, str, str, Path]) -> None:
    url, _, _, _ = setup
    reply = httpx.post(url, headers=modern_headers("server/discover"), json=modern_body(1, "server/discover", {}),
                       timeout=10)
    assert reply.json()["result"]["capabilities"]["resources"] == {"listChanged": True, "subscribe": True}


if __name__ == "__main__":
    raise SystemExit(main())
