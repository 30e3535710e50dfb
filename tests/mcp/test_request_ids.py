"""Two requests with the same JSON-RPC id in one session: both run, and a cancel ends both.

The spec: a request id "MUST NOT have been previously used by the requestor within the same
session". Before, the second request replaced the first's cancel handle, so a
``notifications/cancelled`` for that id cancelled only one of them and the other ran on. A client
that reuses an id is served (refusing it would break clients and load tools that never cancel),
and a cancel for that id stops every request in flight with it: the client cannot say which one it
meant, and stopping both fails safe. Real parts: an official-SDK upstream over HTTP with a tool
that blocks until cancelled, a real gateway, raw HTTP (the wire is the point).

Run the upstream alone: ``python -m tests.mcp.test_request_ids --port 8942``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
from mcp.server.mcpserver import MCPServer

from tests.support import (
    MCP_HEADERS,
    PY,
    free_port,
    gateway_cmd,
    initialize,
    running,
    serve_upstream_main,
    write_config,
)


def build_upstream() -> MCPServer:
    server: MCPServer = MCPServer("blocking", version="1.0.0", log_level="WARNING")
    started = 0

    @server.tool(description="Blocks until the call is cancelled")
    async def block() -> str:
        nonlocal started
        started += 1
        await asyncio.Event().wait()  # never set: only a cancellation ends this call
        return "unreachable"

    @server.tool(description="How many block calls have started")
    def started_count() -> str:
        return str(started)

    return server


def call(rid: int, tool: str) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": f"up__{tool}", "arguments": {}}}


async def test_a_reused_id_is_served_and_one_cancel_ends_both_calls(tmp_path: Path) -> None:
    up, port = free_port(), free_port()
    cfg = write_config(tmp_path / "triplock.toml", port,
                       [{"name": "up", "transport": "http", "url": f"http://127.0.0.1:{up}/mcp"}])
    base = f"http://127.0.0.1:{port}"
    upstream = [PY, "-m", "tests.mcp.test_request_ids", "--port", str(up)]
    with running(upstream, None), running(gateway_cmd(cfg), base + "/readyz"):
        with httpx.Client() as sync:
            sid = initialize(sync, base + "/mcp")
        headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10.0) as http:
            first = asyncio.create_task(http.post("/mcp", json=call(7, "block")))
            second = asyncio.create_task(http.post("/mcp", json=call(7, "block")))  # the same id, reused
            deadline = time.monotonic() + 10
            for poll_id in range(100, 10_000):  # until the upstream runs both calls
                answer = (await http.post("/mcp", json=call(poll_id, "started_count"))).json()
                if answer["result"]["content"][0]["text"] == "2":
                    break
                assert time.monotonic() < deadline, "both calls never reached the upstream"
                await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            assert (await http.post("/mcp", json=cancel)).status_code == 202
            ended = await asyncio.wait_for(asyncio.gather(first, second), 10)
    # cancelled: both exchanges end without an answer (before, the first's handle was lost and it ran on)
    assert [(r.status_code, r.content) for r in ended] == [(204, b""), (204, b"")]


if __name__ == "__main__":
    sys.exit(serve_upstream_main(build_upstream, __doc__))
