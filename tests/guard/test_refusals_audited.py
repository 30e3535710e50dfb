"""Every refusal is audited: tools hidden by action control, unknown tools, prompts and resources.

Real parts: `triplock serve` with API keys, the demo upstream over stdio twice (``demo``, and
``ro`` under ``action_control: read_only``), and the `mcp` SDK client. A hidden tool is answered
exactly like a name nothing serves ("Unknown tool: X": its existence is never revealed), and each
refusal leaves one ``connector.call.completed`` record naming the principal and the rule ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from tests.support import PY, create_api_key, free_port, gateway_cmd, running, write_config

POLICY = """version: 1
name: refusals
first_use: {enabled: false}
defaults: {read: allow, write: hold, destructive: hold, unknown: hold}
approval_required_actions: [email_send]
upstreams:
  demo:
    action_control: allow_all
    new_actions_default: hold
    actions_denied: [post_to_chat]
    tools:
      read_inbox: {legs: [P, U], effect: read, category: email_read}
      send_email: {legs: [E], effect: write, category: email_send}
      post_to_chat: {legs: [E], effect: write}
  ro:
    action_control: read_only
    tools:
      read_inbox: {legs: [P, U], effect: read, category: email_read}
      send_email: {legs: [E], effect: write, category: email_send}
"""


@dataclass
class Gw:
    base: str
    audit: Path
    alice: str


def _demo(name: str) -> dict[str, Any]:
    return {"name": name, "transport": "stdio", "command": PY,
            "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("refusals")
    keys = tmp / "keys.json"
    alice = create_api_key(keys, "alice", "agents-run")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    port = free_port()
    cfg = write_config(tmp / "triplock.toml", port, [_demo("demo"), _demo("ro")], policy={"file": str(policy)},
                       auth={"mode": "api_key", "api_keys_file": str(keys)})
    base = f"http://127.0.0.1:{port}"
    with running(gateway_cmd(cfg), base + "/readyz"):
        yield Gw(base, tmp / "audit.jsonl", alice)


@contextlib.asynccontextmanager
async def sdk(gw: Gw) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"authorization": f"Bearer {gw.alice}"})
    async with http, Client(streamable_http_client(gw.base + "/mcp", http_client=http), mode="legacy") as client:
        yield client


def records_for(gw: Gw, exposed: str) -> list[dict[str, Any]]:
    """The call records naming ``exposed`` (the answer waits for its record: durable audit is on)."""
    lines = gw.audit.read_bytes().splitlines() if gw.audit.exists() else []
    return [r for r in map(orjson.loads, lines)
            if r.get("type", "").startswith("connector.call.") and r.get("exposed_tool") == exposed]


async def refusal(client: Client, name: str) -> tuple[int, str]:
    with pytest.raises(MCPError) as raised:
        await client.call_tool(name, {"channel": "general", "text": "hello"})
    return raised.value.error.code, raised.value.error.message


async def test_hidden_and_unknown_tools_are_answered_alike_and_each_audited_once(gw: Gw) -> None:
    async with sdk(gw) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        assert {"demo__read_inbox", "ro__read_inbox"} <= listed
        assert not {"demo__post_to_chat", "ro__send_email", "demo__no_such_tool"} & listed
        denied = await refusal(client, "demo__post_to_chat")
        read_only = await refusal(client, "ro__send_email")
        unknown = await refusal(client, "demo__no_such_tool")
    # The same answer whatever the reason: the name differs, nothing else does.
    assert denied == (-32602, "Unknown tool: demo__post_to_chat")
    assert read_only == (-32602, "Unknown tool: ro__send_email")
    assert unknown == (-32602, "Unknown tool: demo__no_such_tool")

    expected = {
        "demo__post_to_chat": ("demo", "post_to_chat", ["action_control.hidden", "action_control.denied"]),
        "ro__send_email": ("ro", "send_email", ["action_control.hidden", "action_control.read_only"]),
        "demo__no_such_tool": ("", "demo__no_such_tool", ["catalog.unknown_tool"]),
    }
    for exposed, (upstream, tool, rule_ids) in expected.items():
        records = records_for(gw, exposed)
        assert [(r["type"], r["principal"], r["upstream"], r["tool"], r["rule_ids"], r["decision"], r["outcome"],
                 r["method"]) for r in records] == [
            ("connector.call.completed", "alice", upstream, tool, rule_ids, "deny", "denied", "tools/call")]
    assert records_for(gw, "demo__post_to_chat")[0]["reasons"][1] == (
        "'post_to_chat' is in actions_denied of upstreams.demo")


async def test_unknown_prompts_and_resources_are_audited(gw: Gw) -> None:
    async with sdk(gw) as client:
        with pytest.raises(MCPError) as prompt:
            await client.get_prompt("demo__no_such_prompt", {})
        with pytest.raises(MCPError) as resource:
            await client.read_resource("nowhere://nothing/here")
    assert (prompt.value.error.code, prompt.value.error.message) == (-32602, "Unknown prompt: demo__no_such_prompt")
    assert (resource.value.error.code, resource.value.error.message) == (
        -32002, "Resource not found: nowhere://nothing/here")
    for exposed, method, rule_id in (("demo__no_such_prompt", "prompts/get", "catalog.unknown_prompt"),
                                     ("nowhere://nothing/here", "resources/read", "catalog.unknown_resource")):
        assert [(r["principal"], r["method"], r["rule_ids"], r["outcome"]) for r in records_for(gw, exposed)] == [
            ("alice", method, [rule_id], "denied")]


async def test_refusals_count_in_metrics_under_a_fixed_label(gw: Gw) -> None:
    def denied_without_category() -> float:
        text = httpx.get(gw.base + "/metrics", timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return sum(s.value for s in families["triplock_decisions"].samples if s.name.endswith("_total")
                   and s.labels.get("triplock_decision") == "deny" and s.labels.get("triplock_category") == "")

    before = denied_without_category()
    async with sdk(gw) as client:
        for i in range(3):
            await refusal(client, f"demo__flood_{i}")
    assert denied_without_category() == before + 3
    families = list(text_string_to_metric_families(httpx.get(gw.base + "/metrics", timeout=10).text))
    labels = {value for f in families for s in f.samples for value in s.labels.values()}
    assert not any("flood" in value for value in labels)  # no series of any metric is named after them
    durations = [s for f in families if f.name == "mcp_server_operation_duration_seconds" for s in f.samples
                 if s.name.endswith("_count") and s.labels.get("error_type") == "-32602"]
    assert durations and {s.labels["gen_ai_tool_name"] for s in durations} == {""}
