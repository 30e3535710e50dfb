"""Session clients of an upstream Triplock speaks 2026-07-28 to (issue #17 item 4, the era bridge).

Real parts: an official-SDK ``MCPServer`` served stateless that refuses ``initialize`` (this module,
run with ``--port``), behind the layer of tests/mcp/modern_only_upstream.py, here keeping each
POST's body (``GET /recorded``), listing the ``subscriptions/listen`` streams open right now
(``GET /listens``) and publishing a resource update on its subscription bus (``POST /touch?uri=``);
a real ``triplock serve``; SDK clients of both eras. Asserted: one upstream listen carries the
union of the sessions' URIs, each update reaches exactly the sessions that subscribed its URI,
unsubscribing and ending the session narrow and close the listen, the per-session cap; the log
level a session client gets; the ``server/discover`` answer's shape; ``inputResponses`` sent
without ``requestState``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import (
    CallToolResult,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
    LoggingMessageNotificationParams,
    ResourceUpdatedNotification,
    TextContent,
)

from gateway.mcp.resource_bridge import MAX_PER_SESSION
from tests.mcp.modern_only_upstream import (
    MODERN,
    OpenListens,
    modern_only_layer,
    publish_resource_update,
    serve,
    serve_json,
)
from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, running, write_config

# The session-era client methods this module drives are deprecated for 2026-07-28 in the SDK: that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def build_app() -> Any:
    """The upstream: 2026-07-28 only, with a subscription bus the test publishes on."""
    bus = InMemorySubscriptionBus()
    server = MCPServer("updates-upstream", subscriptions=bus)
    recorded: list[dict[str, Any]] = []
    listens = OpenListens()

    @server.resource("test://a", name="a", mime_type="text/plain")
    def resource_a() -> str:
        return "a"

    @server.resource("test://b", name="b", mime_type="text/plain")
    def resource_b() -> str:
        return "b"

    @server.resource("test://n/{n}", name="numbered", mime_type="text/plain")
    def numbered(n: str) -> str:
        return n

    @server.tool()
    async def chatter(ctx: Context) -> str:
        """Log one message at each of three levels."""
        for level in ("debug", "info", "warning"):
            await ctx.log(level, f"{level} message")
        return "done"

    @server.tool()
    async def greet(ctx: Context) -> CallToolResult | InputRequiredResult:
        """Ask the user's name (no requestState), then greet them."""
        answer = (ctx.input_responses or {}).get("user_name")
        if not isinstance(answer, ElicitResult):
            ask = ElicitRequest(params=ElicitRequestFormParams(message="Your name?", requested_schema=NAME_SCHEMA))
            return InputRequiredResult(input_requests={"user_name": ask})
        return CallToolResult(content=[TextContent(type="text", text=f"Hello, {(answer.content or {})['name']}!")])

    def record_and_note_listens(_headers: dict[str, str], parsed: Any) -> Callable[[], None] | None:
        recorded.append(parsed)
        return listens.note(parsed)

    routes = {"/recorded": serve_json(recorded), "/listens": listens.route,
              "/touch": publish_resource_update(bus)}
    return modern_only_layer(server.streamable_http_app(stateless_http=True), routes=routes,
                             on_post=record_and_note_listens)


def build_handshake_server() -> MCPServer:
    """A session-era upstream whose completion logs at two levels while it works."""
    server = MCPServer("handshake-upstream")

    @server.prompt()
    def ask(topic: str) -> str:
        """Ask about a topic."""
        return f"Tell me about {topic}"

    async def complete(ctx: Any, params: CompleteRequestParams) -> CompleteResult:
        for level in ("info", "warning"):
            await ctx.session.send_log_message(level, f"{level} while completing", related_request_id=ctx.request_id)
        return CompleteResult(completion=Completion(values=["tea"], total=1, has_more=False))

    server._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, complete)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--handshake", action="store_true")
    args = parser.parse_args(argv)
    if args.handshake:
        asyncio.run(build_handshake_server().run_streamable_http_async(host="127.0.0.1", port=args.port))
        return 0
    serve(build_app(), args.port)
    return 0


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Triplock in front of the 2026-07-28-only upstream (``protocol`` left at ``auto``) and a session-era one."""
    up_port, hs_port, gw_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    cfg = write_config(tmp_path_factory.mktemp("bridge") / "triplock.toml", gw_port,
                       [{"name": "u", "prefix": "", "transport": "http", "url": f"{upstream}/mcp"},
                        {"name": "h", "prefix": "h", "transport": "http", "url": f"http://127.0.0.1:{hs_port}/mcp"}])
    module = [PY, "-m", "tests.mcp.test_resource_bridge", "--port"]
    with (
        running([*module, str(up_port)], None),
        running([*module, str(hs_port), "--handshake"], None),
        running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"),
    ):
        yield f"http://127.0.0.1:{gw_port}/mcp", upstream


def listens(upstream: str) -> list[list[str]]:
    """The URIs each open upstream listen carries."""
    return [x.get("resourceSubscriptions", []) for x in httpx.get(f"{upstream}/listens", timeout=5).json()]


def posts(upstream: str, method: str) -> list[dict[str, Any]]:
    return [p for p in httpx.get(f"{upstream}/recorded", timeout=5).json()
            if isinstance(p, dict) and p.get("method") == method]


async def until(check: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + within
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g}s: {what}")
        await asyncio.sleep(0.05)


def updates_into(seen: list[str]) -> Any:
    async def handle(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            seen.append(str(message.params.uri))

    return handle


async def test_subscriptions_share_one_listen_and_each_update_reaches_only_its_subscribers(
    setup: tuple[str, str],
) -> None:
    url, upstream = setup
    seen_1: list[str] = []
    seen_2: list[str] = []
    async with (
        Client(url, mode="legacy", message_handler=updates_into(seen_1)) as one,
        Client(url, mode="legacy", message_handler=updates_into(seen_2)) as two,
    ):
        assert (await one.subscribe_resource("test://a")).model_dump(exclude_none=True) == {}
        await two.subscribe_resource("test://b")
        await until(lambda: listens(upstream) == [["test://a", "test://b"]], "one listen for both URIs")
        httpx.post(f"{upstream}/touch?uri=test://a", timeout=5)
        await until(lambda: seen_1 == ["test://a"], "the update of test://a reaches its subscriber")
        httpx.post(f"{upstream}/touch?uri=test://b", timeout=5)
        await until(lambda: seen_2 == ["test://b"], "the update of test://b reaches its subscriber")
        httpx.post(f"{upstream}/touch?uri=test://a", timeout=5)
        await until(lambda: len(seen_1) == 2, "a second update of test://a")
        assert (seen_1, seen_2) == (["test://a", "test://a"], ["test://b"])  # never the other's URI

        await one.unsubscribe_resource("test://a")
        await until(lambda: listens(upstream) == [["test://b"]], "the listen narrowed to test://b")
        await two.unsubscribe_resource("test://b")
        await until(lambda: listens(upstream) == [[]], "the listen carries no URI once nobody is subscribed")
    assert posts(upstream, "resources/subscribe") == []  # the removed method never reached the 2026-07-28 upstream


async def test_a_session_that_ends_gives_up_its_subscriptions(setup: tuple[str, str]) -> None:
    url, upstream = setup
    async with Client(url, mode="legacy") as client:
        await client.subscribe_resource("test://a")
        await until(lambda: listens(upstream) == [["test://a"]], "a listen for test://a")
    # The client's DELETE ended the session: within the bridge's sweep the listen closes.
    await until(lambda: listens(upstream) == [[]], "the listen carries no URI after the session ended")


async def test_a_session_holds_at_most_the_cap_of_subscriptions(setup: tuple[str, str]) -> None:
    url, upstream = setup
    async with Client(url, mode="legacy") as client:
        for n in range(MAX_PER_SESSION):
            await client.subscribe_resource(f"test://n/{n}")
        with pytest.raises(Exception) as refused:
            await client.subscribe_resource("test://n/over")
        assert str(refused.value) == (
            f"Too many resource subscriptions: this session holds {MAX_PER_SESSION} (the limit);"
            " unsubscribe from one first")
        await client.subscribe_resource("test://n/0")  # one it holds already: answered {} again
        await until(lambda: [len(x) for x in listens(upstream)] == [MAX_PER_SESSION], "one listen for all")
    await until(lambda: listens(upstream) == [[]], "the listen carries no URI after the session ended")


async def test_a_session_client_gets_logs_at_the_default_level_then_at_the_level_it_set(
    setup: tuple[str, str],
) -> None:
    url, upstream = setup
    logs: list[tuple[str, Any]] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data))

    async with Client(url, mode="legacy", logging_callback=on_log) as client:
        await client.call_tool("chatter", {})
        assert logs == [("debug", "debug message"), ("info", "info message"), ("warning", "warning message")]
        assert posts(upstream, "tools/call")[-1]["params"]["_meta"]["io.modelcontextprotocol/logLevel"] == "debug"
        logs.clear()
        await client.set_logging_level("warning")
        await client.call_tool("chatter", {})
        assert logs == [("warning", "warning message")]
        assert posts(upstream, "tools/call")[-1]["params"]["_meta"]["io.modelcontextprotocol/logLevel"] == "warning"
    assert posts(upstream, "logging/setLevel") == []  # removed in 2026-07-28: kept by Triplock, not sent


def modern_messages(http: httpx.Client, url: str, method: str, params: dict[str, Any],
                    log_level: str | None = None) -> list[dict[str, Any]]:
    """Every message of a 2026-07-28 POST's answer (the SSE stream's, or the one JSON body)."""
    headers = {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": method}
    if "name" in params:
        headers["mcp-name"] = params["name"]
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}
    if log_level is not None:
        meta["io.modelcontextprotocol/logLevel"] = log_level
    body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": {**params, "_meta": meta}}
    response = http.post(url, headers=headers, json=body)
    if response.headers["content-type"].startswith("application/json"):
        return [dict(response.json())]
    datas = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return [dict(json.loads(d)) for d in datas if d]


def modern_post(http: httpx.Client, url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return modern_messages(http, url, method, params)[-1]


def test_server_discover_puts_server_info_in_meta_as_the_schema_has_it(setup: tuple[str, str]) -> None:
    url, _ = setup
    with httpx.Client(timeout=30) as http:
        result = modern_post(http, url, "server/discover", {})["result"]
    assert "serverInfo" not in result
    assert result["_meta"] == {"io.modelcontextprotocol/serverInfo": {
        "name": "triplock", "title": "Triplock MCP gateway", "version": "0.1.0"}}
    assert sorted(result) == ["_meta", "cacheScope", "capabilities", "instructions", "resultType",
                              "supportedVersions", "ttlMs"]


def test_input_responses_without_request_state_reach_the_upstream(setup: tuple[str, str]) -> None:
    """SEP-2322: a request may carry inputResponses without requestState (the upstream asked without one)."""
    url, upstream = setup
    answer = {"action": "accept", "content": {"name": "Ada"}}
    with httpx.Client(timeout=30) as http:
        first = modern_post(http, url, "tools/call", {"name": "greet", "arguments": {}})["result"]
        assert first["resultType"] == "input_required"
        assert list(first["inputRequests"]) == ["user_name"]
        final = modern_post(http, url, "tools/call", {"name": "greet", "arguments": {},
                                                      "inputResponses": {"user_name": answer}})["result"]
    assert final["content"] == [{"type": "text", "text": "Hello, Ada!"}]
    assert posts(upstream, "tools/call")[-1]["params"]["inputResponses"] == {"user_name": answer}



def test_a_stateless_client_gets_an_upstreams_logs_only_at_the_level_it_asked(setup: tuple[str, str]) -> None:
    """completion/complete through a session-era upstream that logs: filtered by the request's logLevel."""
    url, _ = setup
    params = {"ref": {"type": "ref/prompt", "name": "h__ask"}, "argument": {"name": "topic", "value": "t"}}
    with httpx.Client(timeout=30) as http:
        unasked = modern_messages(http, url, "completion/complete", params)
        warned = modern_messages(http, url, "completion/complete", params, log_level="warning")
        everything = modern_messages(http, url, "completion/complete", params, log_level="debug")

    def logs(messages: list[dict[str, Any]]) -> list[str]:
        return [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]

    assert [unasked[-1]["result"]["completion"]["values"], logs(unasked)] == [["tea"], []]
    assert logs(warned) == ["warning while completing"]
    assert logs(everything) == ["info while completing", "warning while completing"]


if __name__ == "__main__":
    raise SystemExit(main())
