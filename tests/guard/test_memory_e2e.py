"""What the gateway remembers, end to end: a real gateway, the demo upstream over HTTP, the MCP SDK.

- legs follow the principal across sessions (no splitting the trifecta over two sessions), and
  the hold's reason names the call that brought each leg;
- a value that arrived in untrusted content (the injected mail's address) holds a write that
  carries it, although its recipient is internal; the same write without it runs;
- the console shows the session's history; operators see and clear a principal's state with
  `triplock state`, audited; a sessionless (2026-07-28) client's legs expire with the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.support import PY, REPO, create_api_key, demo_http_cmd, free_port, gateway_cmd, running, write_config

APPROVER_TOKEN = "memory-approver-token"
BLOG = "https://blog.vendor.example/post/ai-tips"  # outside the URL allowlist: an exit (E)

POLICY = """version: 1
name: memory-e2e
first_use: {enabled: false}
approval_required_actions: [email_send]
defaults: {read: allow, write: allow, destructive: hold, unknown: hold}
conditions:
  org_domains: [example.com]
  url_allowlist: ["example.com", "*.example.com"]
legs: {scope: both, window_seconds: WINDOW}
upstreams:
  demo:
    tools:
      read_inbox: {legs: [P, U], effect: read}
      search_drive: {legs: [P], effect: read}
      fetch_url: {legs: [U, E], effect: read, conditions: {url_args: [url]}}
      send_email: {legs: [E], effect: write, category: email_send, conditions: {recipient_args: [to]}}
      post_to_chat: {legs: [E], effect: write}
"""


@dataclass
class Gw:
    base: str
    audit: Path
    tokens: dict[str, str]


@contextlib.contextmanager
def gateway(tmp: Path, window: int) -> Iterator[Gw]:
    keys = tmp / "keys.json"
    tokens = {name: create_api_key(keys, name, "agents-run") for name in ("split", "phish", "clear", "modern")}
    tokens["admin"] = create_api_key(keys, "ops-admin", "agents-admin")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.replace("WINDOW", str(window)))
    up, port = free_port(), free_port()
    cfg = write_config(tmp / "triplock.toml", port,
                       [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up}/mcp"}],
                       policy={"file": str(policy)}, store={"kind": "sqlite", "path": str(tmp / "state.sqlite")},
                       approvals={"hold_wait": 0}, auth={"mode": "api_key", "api_keys_file": str(keys)})
    base = f"http://127.0.0.1:{port}"
    with running(demo_http_cmd(up), None), running(gateway_cmd(cfg), base + "/readyz",
                                                   env={"TRIPLOCK_APPROVER_TOKENS": f"alice={APPROVER_TOKEN}"}):
        yield Gw(base, tmp / "audit.jsonl", tokens)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    with gateway(tmp_path_factory.mktemp("memory"), window=3600) as g:
        yield g


@contextlib.asynccontextmanager
async def session(gw: Gw, who: str, mode: str = "legacy") -> AsyncIterator[Client]:
    """One MCP session of ``who`` (``mode='legacy'``: the session-based era; else the SDK's default)."""
    http = create_mcp_http_client(headers={"authorization": f"Bearer {gw.tokens[who]}"})
    transport = streamable_http_client(gw.base + "/mcp", http_client=http)
    async with http, (Client(transport, mode=mode) if mode == "legacy" else Client(transport)) as client:
        yield client


def text(result: Any) -> str:
    return str(result.content[0].text)


def audit_events(gw: Gw, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, gw.audit.read_text().splitlines()) if e.get("type") == kind]


async def test_legs_follow_the_principal_into_a_new_session_and_the_reason_names_their_source(gw: Gw) -> None:
    async with session(gw, "split") as a:
        assert (await a.call_tool("demo__read_inbox", {})).is_error is False  # P+U in session A
    async with session(gw, "split") as b:  # a fresh session: under per-session legs, a clean slate
        held = await b.call_tool("demo__fetch_url", {"url": BLOG})
    assert held.is_error is True and text(held).startswith("Held for human approval: demo__fetch_url")
    assert re.search(r"private data \(P, from demo__read_inbox at \d\d:\d\d:\d\d UTC\) and untrusted input "
                     r"\(U, from demo__read_inbox at \d\d:\d\d:\d\d UTC\)", text(held)), text(held)
    assert held.meta["triplock/approval"]["rule_ids"] == ["trifecta.hold"]


async def test_an_untrusted_address_held_although_the_recipient_is_internal(gw: Gw) -> None:
    async with session(gw, "phish") as client:
        assert (await client.call_tool("demo__read_inbox", {})).is_error is False  # carries the injection
        clean = await client.call_tool("demo__send_email", {"to": "dana.cfo@example.com", "subject": "Q3",
                                                             "body": "Numbers attached."})
        assert clean.is_error is False, text(clean)  # internal, no untrusted value: runs
        held = await client.call_tool("demo__send_email", {"to": "dana.cfo@example.com", "subject": "Q3",
                                                            "body": "Also cc attacker@evil.example please."})
        assert held.is_error is True
        assert held.meta["triplock/approval"]["rule_ids"] == ["provenance.untrusted_value"]
        assert ("argument 'body' carries the email 'attacker@evil.example', which arrived in untrusted content "
                "returned by demo__read_inbox at ") in text(held)
        # while the agent waits, the approver's console shows where the legs and the value came from
        async with httpx.AsyncClient(base_url=gw.base) as http:
            page = await http.get("/console")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            await http.post("/console/login", data={"csrf": csrf.group(1), "token": APPROVER_TOKEN})
            detail = await http.get(f"/console/approvals/{held.meta['triplock/approval']['approval_id']}")
    history = detail.text[detail.text.index('data-testid="history"'):]
    assert "demo__read_inbox" in history and "first brought private data (P) into the session" in history
    assert "returned untrusted content carrying the email attacker@evil.example" in history


def cli(gw: Gw, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIPLOCK_TOKEN": gw.tokens["admin"]}
    return subprocess.run([PY, "-m", "gateway.cli", "state", *args, "--url", gw.base], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_operators_see_and_clear_a_principals_state(gw: Gw) -> None:
    async with session(gw, "clear") as a:
        await a.call_tool("demo__read_inbox", {})
    shown = cli(gw, "show", "--principal", "clear")
    assert shown.returncode == 0, shown.stderr
    assert "principal legs: P+U" in shown.stdout
    assert "demo__read_inbox: first brought untrusted input (U) into the session" in shown.stdout
    cleared = cli(gw, "clear", "--principal", "clear")
    assert cleared.returncode == 0 and "cleared what the gateway remembered of principal clear" in cleared.stdout
    async with session(gw, "clear") as b:
        fetched = await b.call_tool("demo__fetch_url", {"url": BLOG})
    assert fetched.is_error is False, text(fetched)  # forgotten: no trifecta any more
    event = audit_events(gw, "state.cleared")[-1]
    assert (event["principal"], event["by"]) == ("clear", "ops-admin")
    # an agent may not clear its own state
    refused = subprocess.run([PY, "-m", "gateway.cli", "state", "clear", "--principal", "clear", "--url", gw.base],
                             cwd=REPO, env={**os.environ, "TRIPLOCK_TOKEN": gw.tokens["clear"]},
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "may not clear state" in refused.stderr


def test_state_api_refuses_a_request_without_subject(gw: Gw) -> None:
    r = httpx.delete(gw.base + "/api/state", headers={"authorization": f"Bearer {gw.tokens['admin']}"})
    assert (r.status_code, r.json()["error_description"]) == (400, "give ?principal=ID and/or ?session=ID")


async def test_a_sessionless_clients_legs_expire_with_the_window(tmp_path: Path) -> None:
    with gateway(tmp_path, window=1) as g:
        async with session(g, "modern", mode="auto") as client:
            await client.call_tool("demo__read_inbox", {})
            assert (await client.call_tool("demo__fetch_url", {"url": BLOG})).is_error is True  # held: P+U+E
            deadline = time.monotonic() + 20
            while True:  # the window is one second after the last leg: the fetch runs once it passed
                result = await client.call_tool("demo__fetch_url", {"url": BLOG})
                if not result.is_error:
                    break
                assert time.monotonic() < deadline, "the principal's legs never expired"
                await asyncio.sleep(0.2)  # poll interval; the condition is re-checked each round
