"""Nothing lost: a restart (kill -9) mid-approval, two gateways sharing Redis, a store that dies.

Real gateway processes, the demo upstream over HTTP, the official SDK client, real redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.guard.test_approval_flow import APPROVER, OUTSIDE, approve, e2e_policy, pending_approval, sent_count
from tests.redis_server import redis_server
from tests.support import demo_http_cmd, free_port, gateway_cmd, running, write_config

ENV = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}


def gateway_config(tmp: Path, name: str, port: int, upstream_port: int, store: dict[str, Any],
                   hold_wait: float) -> Path:
    return write_config(
        tmp / f"{name}.toml", port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{upstream_port}/mcp"}],
        policy={"file": str(e2e_policy(tmp))}, store=store, approvals={"hold_wait": hold_wait},
    )


@contextlib.contextmanager
def gateway(cfg: Path, port: int) -> Iterator[int]:
    with running(gateway_cmd(cfg), f"http://127.0.0.1:{port}/readyz", env=ENV) as proc:
        yield proc.pid


@pytest.fixture(params=["sqlite", "redis"])
def store_cfg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"kind": "sqlite", "path": str(tmp_path / "state.sqlite")}
    else:
        with redis_server() as url:
            yield {"kind": "redis", "redis_url": url}


async def test_pending_approval_survives_kill_9(tmp_path: Path, store_cfg: dict[str, Any]) -> None:
    up_port, gw_port = free_port(), free_port()
    cfg = gateway_config(tmp_path, "gw", gw_port, up_port, store_cfg, hold_wait=1.0)
    base, mcp = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{gw_port}/mcp"
    with running(demo_http_cmd(up_port), None):
        first = gateway(cfg, gw_port)
        pid = first.__enter__()
        try:
            async with Client(mcp, mode="legacy") as agent:
                await agent.call_tool("demo__read_inbox", {})
                held = await agent.call_tool("demo__send_email", OUTSIDE)
                approval_id = (held.meta or {})["triplock/approval"]["approval_id"]
                os.kill(pid, signal.SIGKILL)  # no shutdown hooks: only what was durable survives
                first.__exit__(None, None, None)
                with gateway(cfg, gw_port):
                    # After the restart the approval can still be decided...
                    assert (await approve(base, approval_id)).status_code == 200
                    # ...and the agent's repeat, in the same MCP session, runs exactly once.
                    ran = await agent.call_tool("demo__send_email", OUTSIDE)
                    assert not ran.is_error, ran
        finally:
            first.__exit__(None, None, None)
        assert await sent_count(f"http://127.0.0.1:{up_port}/mcp") == 1


async def test_held_on_one_gateway_approved_through_another(tmp_path: Path) -> None:
    up_port, a_port, b_port = free_port(), free_port(), free_port()
    with redis_server() as url, running(demo_http_cmd(up_port), None):
        store = {"kind": "redis", "redis_url": url}
        cfg_a = gateway_config(tmp_path, "a", a_port, up_port, store, hold_wait=60.0)
        cfg_b = gateway_config(tmp_path, "b", b_port, up_port, store, hold_wait=60.0)
        with gateway(cfg_a, a_port), gateway(cfg_b, b_port):
            async with Client(f"http://127.0.0.1:{a_port}/mcp", mode="legacy") as agent:
                await agent.call_tool("demo__read_inbox", {})
                call = asyncio.create_task(agent.call_tool("demo__send_email", OUTSIDE))
                # The approver only talks to gateway B; the call waits on gateway A.
                approval = await pending_approval(f"http://127.0.0.1:{b_port}")
                assert (await approve(f"http://127.0.0.1:{b_port}", approval["id"])).status_code == 200
                result = await asyncio.wait_for(call, 30)
            assert not result.is_error, result
        assert await sent_count(f"http://127.0.0.1:{up_port}/mcp") == 1


async def test_store_unreachable_fails_closed_for_writes(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    redis_cm = redis_server()
    url = redis_cm.__enter__()
    try:
        cfg = gateway_config(tmp_path, "gw", gw_port, up_port, {"kind": "redis", "redis_url": url}, 1.0)
        with running(demo_http_cmd(up_port), None), gateway(cfg, gw_port):
            redis_cm.__exit__(None, None, None)  # the store dies; the gateway keeps running
            redis_cm = None
            async with Client(f"http://127.0.0.1:{gw_port}/mcp", mode="legacy") as agent:
                write = await agent.call_tool("demo__post_to_chat", {"channel": "#general", "text": "hi"})
                assert write.is_error
                assert "store is unreachable" in write.content[0].text  # type: ignore[union-attr]
                read = await agent.call_tool("demo__search_drive", {"query": "q3"})
                assert not read.is_error, "reads follow the policy's store_unavailable_reads: allow"
    finally:
        if redis_cm is not None:
            redis_cm.__exit__(None, None, None)
