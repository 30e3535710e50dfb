"""Requests an upstream sends to its client (sampling, elicitation, roots) reach it only when they should.

End to end with real parts: the upstream below is an official-SDK ``MCPServer`` over streamable HTTP
on 127.0.0.1 that deliberately does *not* check its client's capabilities (a careless server the
gateway must hold back); real Triplock processes front it; the agents are the SDK ``Client`` (and
raw HTTP where the wire itself is the point). Every case also reads the gateway's audit file for
its ``triplock.upstream.request`` record. The pure decision has its own table of cases.

Run the upstream alone: ``python -m tests.mcp.test_server_requests --port 8940``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp import Client
from mcp.client.session import SamplingFnT
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitResult,
    ListRootsRequest,
    ListRootsResult,
    Root,
    SamplingMessage,
    TextContent,
)
from pydantic import FileUrl, ValidationError

from gateway.config import UpstreamConfig
from gateway.mcp.server_requests import CAPABILITY_OF, Verdict, audit_fields, decide, is_server_request, refusal
from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, initialize, running, write_config

UPSTREAM_WAIT_SECONDS = 20.0  # how long the upstream waits for an answer it asked for before saying "timeout"
SECRET_PROMPT = "prompt-text-that-must-never-be-audited"
TOOL = "up__"  # the upstream is configured as "up": its tools are up__NAME


# --- the upstream ------------------------------------------------------------------------------------------


def build_upstream() -> MCPServer:
    """Tools that ask the client things during the call, and one that asks after the call has returned."""
    server: MCPServer = MCPServer("asks-back", version="1.0.0", log_level="WARNING")
    later: dict[str, asyncio.Task[str]] = {}

    async def outcome(asking: Awaitable[Any]) -> str:
        """What the client (or the gateway, refusing for it) answered, as text the test can read."""
        try:
            async with asyncio.timeout(UPSTREAM_WAIT_SECONDS):
                result = await asking
        except MCPError as exc:
            return f"refused {exc.code}: {exc.message}"
        except TimeoutError:
            return "timeout"
        if isinstance(result, CreateMessageResult):
            return f"answered: {getattr(result.content, 'text', result.content)}"
        if isinstance(result, ListRootsResult):
            return f"answered: {[str(r.uri) for r in result.roots]}"
        return f"answered: {result.action} {result.content}"

    def sampling(prompt: str) -> list[SamplingMessage]:
        return [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))]

    @server.tool(description="Asks the client's model, during this call (sampling/createMessage)")
    async def ask_llm(prompt: str, ctx: Context) -> str:
        return await outcome(
            ctx.session.create_message(messages=sampling(prompt), max_tokens=20, related_request_id=ctx.request_id)
        )

    @server.tool(description="Asks the client's user, during this call (elicitation/create)")
    async def ask_user(message: str, ctx: Context) -> str:
        schema = {"type": "object", "properties": {"name": {"type": "string"}}}
        return await outcome(ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id))

    @server.tool(description="Asks the client's roots, during this call (roots/list)")
    async def ask_roots(ctx: Context) -> str:
        # ServerSession.list_roots() has no related_request_id (it would go on the GET stream): ask on this call's.
        related = ServerMessageMetadata(related_request_id=ctx.request_id)
        return await outcome(ctx.session.send_request(ListRootsRequest(), ListRootsResult, metadata=related))

    @server.tool(description="Asks the client's roots the SDK's plain way: on the GET stream, during this call")
    async def list_roots_plainly(ctx: Context) -> str:
        return await outcome(ctx.session.list_roots())

    @server.tool(description="Pings its client (the gateway), on the GET stream")
    async def ping_client(ctx: Context) -> str:
        try:
            await ctx.session.send_ping()
        except MCPError as exc:
            return f"refused {exc.code}: {exc.message}"
        return "pong"

    @server.tool(description="Asks the client's model later, on the session's GET stream, outside any call")
    async def schedule_unsolicited(prompt: str, ctx: Context) -> str:
        session = ctx.session  # no related_request_id below: the SDK sends it on the standalone (GET) stream
        token = uuid.uuid4().hex
        later[token] = asyncio.get_running_loop().create_task(
            outcome(session.create_message(messages=sampling(prompt), max_tokens=20))
        )
        return token

    @server.tool(description="How the request scheduled by schedule_unsolicited was answered")
    async def unsolicited_outcome(token: str) -> str:
        return await later.pop(token)

    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the upstream of tests/mcp/test_server_requests.py")
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args(argv).port
    asyncio.run(build_upstream().run_streamable_http_async(host="127.0.0.1", port=port))
    return 0


# --- the stack ---------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    mcp: str
    audit: Path


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    port = free_port()
    with running([PY, "-m", "tests.mcp.test_server_requests", "--port", str(port)], None):
        yield f"http://127.0.0.1:{port}/mcp"


def start_gateway(tmp: Path, upstream_url: str, **upstream: Any) -> Iterator[Gateway]:
    port = free_port()
    cfg = write_config(tmp / "triplock.toml", port,
                       [{"name": "up", "transport": "http", "url": upstream_url, **upstream}])
    with running(gateway_cmd(cfg), f"http://127.0.0.1:{port}/readyz"):
        yield Gateway(f"http://127.0.0.1:{port}/mcp", tmp / "audit.jsonl")


@pytest.fixture(scope="module")
def gateway(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The default: unsolicited requests from the upstream are not relayed."""
    yield from start_gateway(tmp_path_factory.mktemp("default"), upstream_url)


@pytest.fixture(scope="module")
def permissive_gateway(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The operator lets this upstream's requests reach clients outside their calls."""
    yield from start_gateway(tmp_path_factory.mktemp("permissive"), upstream_url, unsolicited_requests=True)


class AuditTail:
    """The audit records a gateway writes from now on (the file is read from its size at creation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        return [line for line in complete.split(b"\n") if line.strip()]

    async def request_events(self, expected: int = 1, deadline: float = 10.0) -> tuple[list[dict[str, Any]], bytes]:
        """The ``triplock.upstream.request`` records, once ``expected`` have been written (polled with a deadline)."""
        end = time.monotonic() + deadline
        while True:
            lines = self.lines()
            events = [r for r in map(orjson.loads, lines) if r["type"] == "triplock.upstream.request"]
            if len(events) >= expected or time.monotonic() > end:
                return events, b"\n".join(lines)
            await asyncio.sleep(0.05)  # poll interval: the condition is re-checked each round


AUDIT_KEYS = {"upstream", "method", "outcome", "reason", "principal", "session",
              "event_id", "time", "type", "prev_hash", "hash"}


async def one_event(tail: AuditTail, **expected: Any) -> dict[str, Any]:
    """The one upstream-request record the action wrote: the expected fields, nothing of the request's content."""
    events, raw = await tail.request_events()
    assert len(events) == 1, events
    event = events[0]
    for key, value in expected.items():
        if value is None:
            assert key not in event, event
        else:
            assert event.get(key) == value, event
    assert set(event) <= AUDIT_KEYS, event  # no params, no content
    assert SECRET_PROMPT.encode() not in raw  # in no record at all
    return event


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def sampler(seen: list[str]) -> SamplingFnT:
    """A sampling callback that answers "sampled!" and remembers the prompts it was asked."""

    async def on_sampling(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        seen.append(getattr(params.messages[0].content, "text", ""))
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="sampled!"), model="m")

    return on_sampling


SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
SAMPLING_REQUEST = re.compile(r'"method"\s*:\s*"sampling/createMessage"')  # the request itself, on the wire
REFUSED_SAMPLING = "refused -32600: Triplock did not relay sampling/createMessage"


# --- during a call -----------------------------------------------------------------------------------------


async def test_in_call_sampling_reaches_a_client_that_declared_it(gateway: Gateway) -> None:
    """(a) The request reaches the client's sampling callback; its answer goes back; the tool returns it."""
    tail, seen = AuditTail(gateway.audit), list[str]()
    async with Client(gateway.mcp, mode="legacy", sampling_callback=sampler(seen)) as client:
        result = await client.call_tool(f"{TOOL}ask_llm", {"prompt": SECRET_PROMPT})
    assert text_of(result) == "answered: sampled!"
    assert seen == [SECRET_PROMPT]
    event = await one_event(tail, upstream="up", method="sampling/createMessage", outcome="relayed", reason=None,
                            principal="local-dev")
    assert SESSION_ID.match(event["session"])


async def test_in_call_sampling_never_reaches_a_client_that_did_not_declare_it(gateway: Gateway) -> None:
    """(b) Refused by the gateway for the client: the upstream gets the gateway's error at once, not the client's.

    The SDK client answers "Sampling not supported" itself when a request reaches it; the gateway's
    own words in the tool's result prove the request never got that far.
    """
    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy") as client:
        result = await client.call_tool(f"{TOOL}ask_llm", {"prompt": SECRET_PROMPT})
    assert text_of(result) == f"{REFUSED_SAMPLING}: the client did not declare the sampling capability"
    event = await one_event(tail, method="sampling/createMessage", outcome="refused",
                            reason="capability_not_declared", principal="local-dev")
    assert SESSION_ID.match(event["session"])


async def test_on_the_wire_a_client_without_sampling_sees_only_the_answer(gateway: Gateway) -> None:
    """(b) A raw client that would never answer: the call still completes, its stream carries no request."""
    tail = AuditTail(gateway.audit)
    with httpx.Client() as sync_http:
        sid = initialize(sync_http, gateway.mcp)  # capabilities: {}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(gateway.mcp, headers={**MCP_HEADERS, "mcp-session-id": sid}, json={
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": f"{TOOL}ask_llm", "arguments": {"prompt": SECRET_PROMPT}}})
    assert not SAMPLING_REQUEST.search(r.text), r.text
    assert "the client did not declare the sampling capability" in r.text
    await one_event(tail, outcome="refused", reason="capability_not_declared", session=sid)


async def test_in_call_elicitation_is_relayed_only_to_a_client_that_declared_it(gateway: Gateway) -> None:
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "ann"})

    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool(f"{TOOL}ask_user", {"message": "your name?"})
    assert text_of(result) == "answered: accept {'name': 'ann'}" and asked == ["your name?"]
    await one_event(tail, method="elicitation/create", outcome="relayed", reason=None)

    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy", sampling_callback=sampler([])) as client:  # sampling only
        result = await client.call_tool(f"{TOOL}ask_user", {"message": "your name?"})
    assert text_of(result) == (
        "refused -32600: Triplock did not relay elicitation/create: the client did not declare the elicitation"
        " capability"
    )
    await one_event(tail, method="elicitation/create", outcome="refused", reason="capability_not_declared")


async def test_in_call_roots_list_needs_the_roots_capability(gateway: Gateway) -> None:
    async def on_roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl("file:///srv/work"))])

    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy", list_roots_callback=on_roots) as client:
        assert text_of(await client.call_tool(f"{TOOL}ask_roots", {})) == "answered: ['file:///srv/work']"
    await one_event(tail, method="roots/list", outcome="relayed")

    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy") as client:
        answer = text_of(await client.call_tool(f"{TOOL}ask_roots", {}))
    assert answer == ("refused -32600: Triplock did not relay roots/list: the client did not declare the roots"
                      " capability"), answer
    await one_event(tail, method="roots/list", outcome="refused", reason="capability_not_declared")


async def test_a_get_stream_request_during_a_call_of_this_client_is_in_flight(gateway: Gateway) -> None:
    """The SDK's ``list_roots()`` goes on the upstream's GET stream; during one of this client's calls
    to that upstream it is in flight, not unsolicited (the default gateway refuses unsolicited ones)."""
    async def on_roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl("file:///srv/work"))])

    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy", list_roots_callback=on_roots) as client:
        assert text_of(await client.call_tool(f"{TOOL}list_roots_plainly", {})) == "answered: ['file:///srv/work']"
    await one_event(tail, method="roots/list", outcome="relayed")


async def test_upstream_ping_is_answered_by_the_gateway(gateway: Gateway) -> None:
    """A ping checks the upstream's client, which is the gateway: it answers; nothing reaches the agent."""
    tail = AuditTail(gateway.audit)
    async with Client(gateway.mcp, mode="legacy") as client:
        assert text_of(await client.call_tool(f"{TOOL}ping_client", {})) == "pong"
        await client.call_tool(f"{TOOL}ask_llm", {"prompt": SECRET_PROMPT})  # a marker written after the ping
    await one_event(tail, method="sampling/createMessage")  # the marker's record is the only one


async def test_stateless_request_is_decided_on_the_envelope_capabilities(gateway: Gateway) -> None:
    """A 2026-07-28 call (no session): the per-request envelope declared no sampling, so it is refused."""
    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    tail = AuditTail(gateway.audit)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(gateway.mcp, headers={**MCP_HEADERS, "mcp-protocol-version": version,
                                                  "mcp-method": "tools/call", "mcp-name": f"{TOOL}ask_llm"},
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": f"{TOOL}ask_llm", "arguments": {"prompt": SECRET_PROMPT},
                                             "_meta": meta}})
    assert not SAMPLING_REQUEST.search(r.text) and "did not declare the sampling capability" in r.text
    await one_event(tail, outcome="refused", reason="capability_not_declared", principal="local-dev", session=None)


# --- outside any call --------------------------------------------------------------------------------------


async def ask_unsolicited(client: Client) -> str:
    """Have the upstream send a sampling request on its GET stream after the call returned; how was it answered?"""
    token = text_of(await client.call_tool(f"{TOOL}schedule_unsolicited", {"prompt": SECRET_PROMPT}))
    return text_of(await client.call_tool(f"{TOOL}unsolicited_outcome", {"token": token}))


async def test_unsolicited_request_is_refused_by_default(gateway: Gateway) -> None:
    """(c) The client declared sampling, but no call was in flight: it never sees the request."""
    tail, seen = AuditTail(gateway.audit), list[str]()
    async with Client(gateway.mcp, mode="legacy", sampling_callback=sampler(seen)) as client:
        answer = await ask_unsolicited(client)
    assert answer.startswith(f"{REFUSED_SAMPLING}: no call of this client to this server is in flight"), answer
    assert seen == []
    await one_event(tail, outcome="refused", reason="unsolicited", principal="local-dev")


async def test_unsolicited_request_reaches_the_client_when_the_operator_allows_it(
    permissive_gateway: Gateway,
) -> None:
    """(c) ``unsolicited_requests = true``: relayed on the client's GET stream, and its answer goes back."""
    tail, seen = AuditTail(permissive_gateway.audit), list[str]()
    async with Client(permissive_gateway.mcp, mode="legacy", sampling_callback=sampler(seen)) as client:
        answer = await ask_unsolicited(client)
    assert answer == "answered: sampled!" and seen == [SECRET_PROMPT]
    await one_event(tail, outcome="relayed", reason=None, principal="local-dev")


async def test_unsolicited_request_still_needs_the_capability(permissive_gateway: Gateway) -> None:
    tail = AuditTail(permissive_gateway.audit)
    async with Client(permissive_gateway.mcp, mode="legacy") as client:
        answer = await ask_unsolicited(client)
    assert answer == f"{REFUSED_SAMPLING}: the client did not declare the sampling capability"
    await one_event(tail, outcome="refused", reason="capability_not_declared")


async def test_request_to_the_gateways_own_session_has_no_client(permissive_gateway: Gateway) -> None:
    """Stateless calls share the gateway's own upstream session: a request on its GET stream has no client."""
    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}

    async def call(http: httpx.AsyncClient, tool: str, arguments: dict[str, Any]) -> str:
        r = await http.post(permissive_gateway.mcp,
                            headers={**MCP_HEADERS, "mcp-protocol-version": version, "mcp-method": "tools/call",
                                     "mcp-name": f"{TOOL}{tool}"},
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": f"{TOOL}{tool}", "arguments": arguments, "_meta": meta}})
        return "".join(c["text"] for c in r.json()["result"]["content"])

    tail = AuditTail(permissive_gateway.audit)
    async with httpx.AsyncClient(timeout=30) as http:
        token = await call(http, "schedule_unsolicited", {"prompt": SECRET_PROMPT})
        answer = await call(http, "unsolicited_outcome", {"token": token})
    assert answer == f"{REFUSED_SAMPLING}: no client can receive it here (no client session, or no response stream)"
    await one_event(tail, outcome="refused", reason="client_unreachable", principal=None, session=None)


# --- the pure decision -------------------------------------------------------------------------------------

ALL = {"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": True}}


@pytest.mark.parametrize(("method", "caps", "in_flight", "allow", "expected"), [
    ("sampling/createMessage", ALL, True, False, Verdict(True, None, "sampling")),
    ("elicitation/create", ALL, True, False, Verdict(True, None, "elicitation")),
    ("roots/list", ALL, True, False, Verdict(True, None, "roots")),
    ("sampling/createMessage", ALL, False, True, Verdict(True, None, "sampling")),
    ("sampling/createMessage", ALL, False, False, Verdict(False, "unsolicited", "sampling")),
    ("roots/list", ALL, False, False, Verdict(False, "unsolicited", "roots")),
    ("sampling/createMessage", {"elicitation": {}, "roots": {}}, True, True,
     Verdict(False, "capability_not_declared", "sampling")),
    ("elicitation/create", {"sampling": {}}, True, False, Verdict(False, "capability_not_declared", "elicitation")),
    ("roots/list", {}, False, True, Verdict(False, "capability_not_declared", "roots")),
    ("sampling/createMessage", {"sampling": None}, True, False, Verdict(False, "capability_not_declared", "sampling")),
    ("sampling/createMessage", {"sampling": True}, True, False, Verdict(False, "capability_not_declared", "sampling")),
    ("sampling/createMessage", None, True, True, Verdict(False, "client_unreachable", "sampling")),
    ("tasks/get", ALL, True, True, Verdict(False, "unknown_method")),
    ("sampling/createmessage", ALL, True, True, Verdict(False, "unknown_method")),
    ("", ALL, True, True, Verdict(False, "unknown_method")),
])
def test_decide(method: str, caps: dict[str, Any] | None, in_flight: bool, allow: bool, expected: Verdict) -> None:
    assert decide(method, caps, in_flight=in_flight, allow_unsolicited=allow) == expected


def test_verdicts_are_frozen_and_every_known_method_needs_its_capability() -> None:
    verdict = decide("roots/list", ALL, in_flight=True, allow_unsolicited=False)
    with pytest.raises(AttributeError):
        verdict.relay = False  # type: ignore[misc]
    for method, capability in CAPABILITY_OF.items():
        others = {k: v for k, v in ALL.items() if k != capability}
        assert decide(method, others, in_flight=True, allow_unsolicited=True).reason == "capability_not_declared"


def test_only_requests_are_screened() -> None:
    assert is_server_request({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage"})
    assert is_server_request({"jsonrpc": "2.0", "id": "a", "method": "roots/list"})
    assert not is_server_request({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
    assert not is_server_request({"jsonrpc": "2.0", "method": "notifications/message", "params": {}})
    assert not is_server_request({"jsonrpc": "2.0", "id": 3, "result": {}})


def test_refusal_answers_the_request_and_names_the_reason() -> None:
    declared = refusal(9, "sampling/createMessage", decide("sampling/createMessage", {}, in_flight=True,
                                                            allow_unsolicited=False))
    assert declared == {"jsonrpc": "2.0", "id": 9, "error": {
        "code": -32600, "message": "Triplock did not relay sampling/createMessage: the client did not declare the"
        " sampling capability", "data": {"reason": "capability_not_declared"}}}
    unknown = refusal("x", "x/y", decide("x/y", ALL, in_flight=True, allow_unsolicited=True))
    assert unknown == {"jsonrpc": "2.0", "id": "x", "error": {
        "code": -32601, "message": "Triplock did not relay x/y: the gateway relays only sampling/createMessage,"
        " elicitation/create and roots/list", "data": {"reason": "unknown_method"}}}


def test_audit_fields_carry_the_decision_never_the_request() -> None:
    verdict = decide("sampling/createMessage", ALL, in_flight=False, allow_unsolicited=False)
    fields = audit_fields("up", "sampling/createMessage", verdict, "alice", "s1")
    assert fields == {"upstream": "up", "method": "sampling/createMessage", "outcome": "refused",
                      "reason": "unsolicited", "principal": "alice", "session": "s1"}
    assert len(audit_fields("up", "m" * 5000, verdict, None, None)["method"]) <= 100


def test_unsolicited_requests_setting_is_validated() -> None:
    http = {"name": "up", "transport": "http", "url": "http://127.0.0.1:1/mcp"}
    assert UpstreamConfig.model_validate(http).unsolicited_requests is False
    assert UpstreamConfig.model_validate({**http, "unsolicited_requests": True}).unsolicited_requests is True
    with pytest.raises(ValidationError, match="unsolicited_requests"):
        UpstreamConfig.model_validate({**http, "unsolicited_requests": "yes"})
    with pytest.raises(ValidationError, match="needs transport 'http'"):
        UpstreamConfig.model_validate({"name": "s", "transport": "stdio", "command": "x", "unsolicited_requests": True})


if __name__ == "__main__":
    sys.exit(main())
