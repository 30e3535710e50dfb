"""Approvals across MCP sessions, end to end: a real gateway, the demo upstream over HTTP, the SDK client.

Every `async with Client(...)` below is a new MCP session, as every `codex exec` run is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from tests.guard.test_approval_flow import APPROVER, OUTSIDE, Stack, pending_approval, sent_count, start_stack

AUTH = {"authorization": f"Bearer {APPROVER[1]}"}


@pytest.fixture
def quick_stack(tmp_path: Path) -> Iterator[Stack]:
    """hold_wait of one second: held calls come back pending."""
    yield from start_stack(tmp_path, hold_wait=1.0)


@pytest.fixture
def waiting_stack(tmp_path: Path) -> Iterator[Stack]:
    """hold_wait of 60 s: held calls wait in-band."""
    yield from start_stack(tmp_path, hold_wait=60.0)


async def decide(base: str, approval_id: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/api/approvals/{approval_id}/approve", headers=AUTH,
                               json={"reason": "checked by alice", **body})


def audit_records(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "audit.jsonl").read_text().splitlines() if line.strip()]


async def held_id(agent: Client, arguments: dict[str, Any]) -> str:
    """The approval id of a call that comes back held (hold_wait is short)."""
    held = await agent.call_tool("demo__send_email", arguments)
    assert held.is_error, held
    return str((held.meta or {})["triplock/approval"]["approval_id"])


async def abandon_held_call(stack: Stack, agent: Client, arguments: dict[str, Any]) -> dict[str, Any]:
    """Start a call that waits in-band, cancel it once its approval exists (the SDK sends
    notifications/cancelled), and return the approval as the API shows it once marked abandoned."""
    call = asyncio.create_task(agent.call_tool("demo__send_email", arguments))
    approval = await pending_approval(stack.base)
    assert approval["abandoned_at"] is None
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    end = time.monotonic() + 20
    async with httpx.AsyncClient() as http:
        while (shown := (await http.get(f"{stack.base}/api/approvals/{approval['id']}",
                                        headers=AUTH)).json())["abandoned_at"] is None:
            assert time.monotonic() < end, "the approval was never marked abandoned"
            await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round
    return shown  # type: ignore[no-any-return]


async def test_a_cancelled_hold_approved_then_repeated_from_a_new_session_runs_once(waiting_stack: Stack) -> None:
    async with Client(waiting_stack.mcp, mode="legacy") as session_a:
        abandoned = await abandon_held_call(waiting_stack, session_a, OUTSIDE)
    assert abandoned["state"] == "pending" and abandoned["abandoned_at"] >= abandoned["created_at"]
    r = await decide(waiting_stack.base, abandoned["id"])  # still decidable: approve, then repeat
    assert r.status_code == 200, r.text
    assert (r.json()["scope"], r.json()["scope_until"]) == ("once", r.json()["expires_at"])
    async with Client(waiting_stack.mcp, mode="legacy") as session_b:  # a new MCP session, like a new `codex exec`
        ran = await session_b.call_tool("demo__send_email", OUTSIDE)
        assert not ran.is_error, ran
        third = await abandon_held_call(waiting_stack, session_b, OUTSIDE)  # used up: held again
    assert third["id"] != abandoned["id"]
    assert await sent_count(waiting_stack.upstream_mcp) == 1


async def test_a_principal_tool_approval_runs_other_arguments_and_audits_its_id(quick_stack: Stack,
                                                                                tmp_path: Path) -> None:
    async with Client(quick_stack.mcp, mode="legacy") as session_a:
        approval_id = await held_id(session_a, OUTSIDE)
    before = time.time()
    r = await decide(quick_stack.base, approval_id, scope="principal_tool", minutes=5)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "principal_tool" and before + 300 <= r.json()["scope_until"] <= time.time() + 300
    async with Client(quick_stack.mcp, mode="legacy") as session_b:
        for subject in ("first", "second"):
            ran = await session_b.call_tool("demo__send_email", {**OUTSIDE, "subject": subject})
            assert not ran.is_error, ran
    assert await sent_count(quick_stack.upstream_mcp) == 2
    records = audit_records(tmp_path)
    granted = [e for e in records if e["type"] == "triplock.approval.granted"]
    assert [(e["approval_id"], e["scope"], e["scope_until"]) for e in granted] == [
        (approval_id, "principal_tool", r.json()["scope_until"])]
    completed = [(e["approval_id"], e["outcome"]) for e in records
                 if e["type"] == "connector.call.completed" and e.get("approval_id") == approval_id]
    assert completed == [(approval_id, "pending"), (approval_id, "executed"), (approval_id, "executed")]
