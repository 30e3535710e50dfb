"""A held call whose client's connection drops is abandoned, like a cancelled one (#17 item 2).

The approval shows ``abandoned_at`` in the API and the audit log has ``triplock.approval.abandoned``
with ``reason`` ``disconnected``, for a handshake-era session client whose reply is plain JSON and
for a stateless 2026-07-28 client (it has no other way to give up). A session client whose reply
already became a resumable SSE stream keeps its hold: it reconnects with ``Last-Event-ID`` and gets
the answer once the approver approves.

Real parts: ``triplock serve`` on both HTTP servers (its own and uvicorn) in front of the demo
upstream over HTTP, requests written on a real socket that the test then closes, the REST API.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.guard.test_approval_flow import APPROVER, OUTSIDE, approve, e2e_policy, pending_approval, sent_count
from tests.support import MCP_HEADERS, demo_http_cmd, free_port, gateway_cmd, initialize, running, write_config

AUTH = {"authorization": f"Bearer {APPROVER[1]}"}
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
TOOL = "demo__send_email"


class Stack:
    def __init__(self, port: int, upstream_port: int, audit: Path) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.mcp = f"{self.base}/mcp"
        self.upstream_mcp = f"http://127.0.0.1:{upstream_port}/mcp"
        self.audit = audit


@pytest.fixture(params=["triplock", "uvicorn"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """hold_wait of 60 s, so a held call waits in-band until its client leaves."""
    up_port, gw_port = free_port(), free_port()
    cfg = write_config(
        tmp_path / "triplock.toml", gw_port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
        server={"runtime": request.param},
        policy={"file": str(e2e_policy(tmp_path))},
        store={"kind": "sqlite", "path": str(tmp_path / "state.sqlite")},
        approvals={"hold_wait": 60.0},
    )
    env = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}
    with running(demo_http_cmd(up_port), None), running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz",
                                                         env=env):
        yield Stack(gw_port, up_port, tmp_path / "audit.jsonl")


def open_post(port: int, body: dict[str, Any], headers: dict[str, str]) -> socket.socket:
    """Send a POST to /mcp on a new connection and leave it open (its answer is not read)."""
    data = json.dumps(body).encode()
    head = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items()),
            f"Content-Length: {len(data)}"]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def tools_call(rid: int, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": TOOL, "arguments": OUTSIDE}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


async def shown(stack: Stack, approval_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{stack.base}/api/approvals/{approval_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def abandoned(stack: Stack, approval_id: str, deadline: float = 20.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The approval as the API shows it once marked abandoned, and its audit record (polled with a deadline)."""
    end = time.monotonic() + deadline
    while True:
        approval = await shown(stack, approval_id)
        records = [json.loads(line) for line in stack.audit.read_text().splitlines() if line.strip()]
        audited = [r for r in records if r["type"] == "triplock.approval.abandoned" and r["approval_id"] == approval_id]
        if approval["abandoned_at"] is not None and audited:
            assert len(audited) == 1, audited
            return approval, audited[0]
        assert time.monotonic() < end, f"approval {approval_id} never marked abandoned: {approval}"
        await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round


async def drop_while_held(stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> None:
    sock = open_post(stack.port, body, headers)
    try:
        held = await pending_approval(stack.base)
        assert held["abandoned_at"] is None
    finally:
        sock.close()  # the client goes away while its call waits for a human
    approval, record = await abandoned(stack, held["id"])
    assert (approval["state"], approval["tool"], approval["upstream"]) == ("pending", "send_email", "demo")
    assert approval["abandoned_at"] >= approval["created_at"]
    assert (record["reason"], record["principal"], record["tool"], record["upstream"], record["args_hash"]) == (
        "disconnected", "local-dev", "send_email", "demo", held["args_hash"])
    # Still decidable, like a cancelled hold: approving it is the documented way to let the repeat run.
    r = await approve(stack.base, held["id"])
    assert r.status_code == 200, r.text
    assert await sent_count(stack.upstream_mcp) == 0  # the dropped call itself never ran


async def test_a_session_client_that_disconnects_abandons_its_hold(stack: Stack) -> None:
    with httpx.Client() as http:
        sid = initialize(http, stack.mcp)
    headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    await drop_while_held(stack, tools_call(7), headers)


async def test_a_stateless_client_that_disconnects_abandons_its_hold(stack: Stack) -> None:
    headers = {**MCP_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": TOOL}
    await drop_while_held(stack, tools_call(7, META), headers)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


async def test_a_resumable_stream_keeps_its_hold_and_the_client_resumes_it(stack: Stack) -> None:
    with httpx.Client() as http:
        sid = initialize(http, stack.mcp)
    headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    sock = open_post(stack.port, tools_call(8, {"progressToken": "p1"}), headers)
    try:
        held = await pending_approval(stack.base)
        # The first progress notification turns the reply into SSE: a priming event with an id, then it.
        seen = read_until(sock, b"notifications/progress")
    finally:
        sock.close()
    last_id = re.findall(rb"^id: (\S+)$", seen, re.MULTILINE)[-1].decode()
    async with httpx.AsyncClient(timeout=30) as http, http.stream(
        "GET", stack.mcp, headers={**headers, "accept": "text/event-stream", "last-event-id": last_id}
    ) as resumed:
        assert resumed.status_code == 200
        r = await approve(stack.base, held["id"])
        assert r.status_code == 200, r.text
        answer = None
        async for line in resumed.aiter_lines():
            if line.startswith("data:") and '"result"' in line:
                answer = json.loads(line[5:])
                break
    assert answer is not None and answer["id"] == 8
    assert answer["result"].get("isError") is not True, answer
    assert (await shown(stack, held["id"]))["abandoned_at"] is None
    assert await sent_count(stack.upstream_mcp) == 1
