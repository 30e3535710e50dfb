"""Fail closed for real: real gateway processes, the demo upstream over HTTP, real redis-server.

A warm session (its legs, first use and pins in the gateway's cache) must still be refused its
E-leg calls while Redis is stopped or frozen, with reads following ``store_unavailable_reads``,
and must run again once Redis is back. Two gateways sharing Redis serve one MCP session: legs
one of them recorded reach the other's next decision.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

from demo_upstream.data import INJECTION_TEXT
from tests.guard.redis_proc import RedisProcess
from tests.guard.test_approval_flow import e2e_policy
from tests.support import MCP_HEADERS, demo_http_cmd, free_port, gateway_cmd, initialize, running, write_config

OUTSIDE = {"url": "https://blog.vendor.example/post/ai-tips"}  # U+E: the URL itself leaves the organisation
INSIDE = {"url": "https://status.example.com/"}  # allowlisted: no legs, a plain read
STORE_DOWN = "Denied by policy: the state store is unreachable: failing closed"
BLOG = "Ten tips for working with AI assistants. Tip 7: " + INJECTION_TEXT  # the page: the call ran


def config(tmp: Path, name: str, port: int, upstream_port: int, redis_url: str, reads: str = "allow") -> Path:
    policy = e2e_policy(tmp)
    policy.write_text(policy.read_text().replace("store_unavailable_reads: allow", f"store_unavailable_reads: {reads}"))
    return write_config(
        tmp / f"{name}.toml", port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{upstream_port}/mcp"}],
        policy={"file": str(policy)}, approvals={"hold_wait": 0.5},
        store={"kind": "redis", "redis_url": redis_url, "timeout": 0.5, "health_interval": 0.2},
    )


def text(result: Any) -> str:
    return str(result.content[0].text)


def wait_ready(base: str, deadline: float = 20.0) -> None:
    """Poll /readyz (it probes the store) until the gateway says the store is back."""
    end = time.monotonic() + deadline
    while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < end, "the gateway never saw the store come back"
        time.sleep(0.05)  # poll interval; readiness is checked each round


async def test_warm_session_refused_e_legs_while_redis_is_stopped_and_runs_when_back(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    base = f"http://127.0.0.1:{gw_port}"
    with RedisProcess() as redis, running(demo_http_cmd(up_port), None):
        cfg = config(tmp_path, "gw", gw_port, up_port, redis.url)
        with running(gateway_cmd(cfg), f"{base}/readyz"):
            async with Client(f"{base}/mcp", mode="legacy") as agent:
                for _ in range(3):  # warm: legs U+E, first use and pin cached
                    assert text(await agent.call_tool("demo__fetch_url", OUTSIDE)) == BLOG
                redis.stop()
                refused = await agent.call_tool("demo__fetch_url", OUTSIDE)
                assert (refused.is_error, text(refused)) == (True, STORE_DOWN)
                read = await agent.call_tool("demo__fetch_url", INSIDE)  # store_unavailable_reads: allow
                assert (read.is_error, text(read)) == (False, "All systems operational.")
                redis.start()  # the same port and append-only file: nothing recorded is lost
                wait_ready(base)
                assert text(await agent.call_tool("demo__fetch_url", OUTSIDE)) == BLOG


async def test_warm_session_refused_while_redis_is_frozen_reads_too_when_so_configured(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    base = f"http://127.0.0.1:{gw_port}"
    with RedisProcess() as redis, running(demo_http_cmd(up_port), None):
        cfg = config(tmp_path, "gw", gw_port, up_port, redis.url, reads="deny")
        with running(gateway_cmd(cfg), f"{base}/readyz"):
            async with Client(f"{base}/mcp", mode="legacy") as agent:
                for _ in range(3):
                    assert text(await agent.call_tool("demo__fetch_url", OUTSIDE)) == BLOG
                    assert text(await agent.call_tool("demo__fetch_url", INSIDE)) == "All systems operational."
                redis.freeze()  # SIGSTOP: connections open, no answers; the store timeout applies
                try:
                    refused = await agent.call_tool("demo__fetch_url", OUTSIDE)
                    assert (refused.is_error, text(refused)) == (True, STORE_DOWN)
                    read = await agent.call_tool("demo__fetch_url", INSIDE)  # store_unavailable_reads: deny
                    assert (read.is_error, text(read)) == (True, STORE_DOWN)
                finally:
                    redis.thaw()
                wait_ready(base)
                assert text(await agent.call_tool("demo__fetch_url", OUTSIDE)) == BLOG


def raw_call(http: httpx.Client, url: str, sid: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One tools/call over raw HTTP in session ``sid``; its result (JSON or the SSE stream's last event)."""
    r = http.post(url, headers={**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"},
                  json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}})
    assert r.status_code == 200, r.text
    if r.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        body = json.loads(data[-1])
    else:
        body = r.json()
    return dict(body["result"])


async def test_legs_recorded_through_one_gateway_reach_the_other_ones_decision(tmp_path: Path) -> None:
    up_port, a_port, b_port = free_port(), free_port(), free_port()
    a_url, b_url = f"http://127.0.0.1:{a_port}/mcp", f"http://127.0.0.1:{b_port}/mcp"
    with RedisProcess() as redis, running(demo_http_cmd(up_port), None):
        cfg_a = config(tmp_path, "a", a_port, up_port, redis.url)
        cfg_b = config(tmp_path, "b", b_port, up_port, redis.url)
        with running(gateway_cmd(cfg_a), f"http://127.0.0.1:{a_port}/readyz"), \
                running(gateway_cmd(cfg_b), f"http://127.0.0.1:{b_port}/readyz"), httpx.Client(timeout=30) as http:
            sid = initialize(http, a_url)  # one MCP session, served by both (restored from Redis)
            for _ in range(3):  # gateway B is warm for this session: no legs yet, fetch_url used and pinned
                result = raw_call(http, b_url, sid, "demo__fetch_url", INSIDE)
                assert result["content"][0]["text"] == "All systems operational.", result
            inbox = raw_call(http, a_url, sid, "demo__read_inbox", {})  # through A: the session gains P+U
            assert not inbox.get("isError"), inbox
            held = raw_call(http, b_url, sid, "demo__fetch_url", OUTSIDE)  # through B: P+U+E, the trifecta
            assert held["isError"] is True
            assert held["content"][0]["text"].startswith("Held for human approval: demo__fetch_url"), held
            assert held["_meta"]["triplock/approval"]["approval_id"]
