"""Sessions survive a graceful restart (a rolling deploy): SIGTERM keeps them in the store.

A real gateway on a SQLite store fronts the demo upstream over HTTP; the official SDK client opens
a session and reads the inbox (P+U, remembered per session only); the gateway gets SIGTERM and
exits; a new gateway starts on the same store and port. The same client session goes on: the same
``Mcp-Session-Id`` (no new ``initialize``), tools/call works, and its legs are still known, so a
fetch to an outside address is held as the trifecta.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support import demo_http_cmd, free_port, gateway_cmd, running, write_config

BLOG = "https://blog.vendor.example/post/ai-tips"  # outside the URL allowlist: an exit (E)
POLICY = """version: 1
name: restart-sessions
first_use: {enabled: false}
defaults: {read: allow, write: allow, destructive: hold, unknown: hold}
conditions:
  org_domains: [example.com]
  url_allowlist: ["example.com", "*.example.com"]
legs: {scope: session, window_seconds: 3600}
upstreams:
  demo:
    tools:
      read_inbox: {legs: [P, U], effect: read}
      search_drive: {legs: [P], effect: read}
      fetch_url: {legs: [U, E], effect: read, conditions: {url_args: [url]}}
"""


def text(result: Any) -> str:
    return str(result.content[0].text)


async def test_a_session_continues_on_the_next_process_after_sigterm(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    up, port = free_port(), free_port()
    cfg = write_config(tmp_path / "triplock.toml", port,
                       [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up}/mcp"}],
                       policy={"file": str(policy)}, store={"kind": "sqlite", "path": str(tmp_path / "state.sqlite")},
                       approvals={"hold_wait": 0})
    base = f"http://127.0.0.1:{port}"
    sent: list[str | None] = []  # the Mcp-Session-Id of every POST after initialize

    async def note_session(request: httpx2.Request) -> None:
        if request.method == "POST" and b'"initialize"' not in request.content:
            sent.append(request.headers.get("mcp-session-id"))

    with running(demo_http_cmd(up), None), contextlib.ExitStack() as first:
        first_gateway = first.enter_context(running(gateway_cmd(cfg), base + "/readyz"))
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0), event_hooks={"request": [note_session]})
        async with http, Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy") as client:
            assert (await client.call_tool("demo__read_inbox", {})).is_error is False  # P+U, in this session only
            first.close()  # SIGTERM, and wait for the process to exit
            assert first_gateway.returncode == 0  # a graceful shutdown, not a kill
            with running(gateway_cmd(cfg), base + "/readyz"):
                found = await client.call_tool("demo__search_drive", {"query": "roadmap"})
                assert found.is_error is False, text(found)
                held = await client.call_tool("demo__fetch_url", {"url": BLOG})
                assert held.is_error is True and text(held).startswith("Held for human approval: demo__fetch_url")
                assert held.meta["triplock/approval"]["rule_ids"] == ["trifecta.hold"]
    assert len(sent) >= 4 and len(set(sent)) == 1 and sent[0] is not None  # one session id throughout
