"""Hold metrics on a real gateway's /metrics: every hold counted whatever its outcome, pending true while a call waits.

A real gateway (SQLite store), the demo upstream over HTTP, the SDK client. The session reads the
inbox (P+U) and then sends email outside (E): the send is held. An approver decides through the
REST API while the call waits in-band, or after its wait ran out, through this gateway or another
one on the same store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.guard.test_approval_flow import APPROVER, OUTSIDE, Stack, approve, e2e_policy, pending_approval, start_stack
from tests.support import free_port, gateway_cmd, running, write_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SEND = "demo__send_email"


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{base}/metrics")
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(r.text) for s in f.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def present(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


async def until(base: str, check: Callable[[Samples], bool], deadline: float = 20.0) -> Samples:
    """Scrape until ``check`` holds (the latency is recorded as the decision's audit event is handled)."""
    end = time.monotonic() + deadline
    while True:
        samples = await scrape(base)
        if check(samples):
            return samples
        assert time.monotonic() < end, "metrics never reached the expected values"
        await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round


@pytest.fixture
def waiting_stack(tmp_path: Path) -> Iterator[Stack]:
    """hold_wait of 60 s: held calls wait in-band."""
    yield from start_stack(tmp_path, hold_wait=60.0)


def hold_labels(approval: dict[str, Any]) -> dict[str, str]:
    return {"gen_ai_tool_name": SEND, "triplock_category": approval["category"],
            "triplock_rule_id": ",".join(approval["rule_ids"])}


async def held_call(stack: Stack, agent: Client, arguments: dict[str, Any]) -> tuple[asyncio.Task[Any], dict[str, Any]]:
    call = asyncio.create_task(agent.call_tool(SEND, arguments))
    return call, await pending_approval(stack.base)


async def test_approved_and_denied_holds_while_the_call_waits(waiting_stack: Stack) -> None:
    base = waiting_stack.base
    before = await scrape(base)
    assert value(before, "triplock_approvals_pending") == 0.0
    async with Client(waiting_stack.mcp, mode="legacy") as agent:
        assert not (await agent.call_tool("demo__read_inbox", {})).is_error
        call, approval = await held_call(waiting_stack, agent, OUTSIDE)
        labels = hold_labels(approval)
        assert labels["triplock_category"] and labels["triplock_rule_id"]
        waiting = await scrape(base)
        assert value(waiting, "triplock_approvals_pending") == 1.0
        assert value(waiting, "triplock_holds_waiting") == 1.0
        assert (await approve(base, approval["id"])).status_code == 200
        assert not (await asyncio.wait_for(call, 30)).is_error

        duration = "triplock_approval_duration_seconds_count"
        approved = {"triplock_approval_state": "approved", "triplock_rule_id": labels["triplock_rule_id"]}
        after = await until(base, lambda s: value(s, duration, **approved) == 1.0)
        assert value(after, "triplock_holds_total", **labels) - value(before, "triplock_holds_total", **labels) == 1
        assert value(after, "triplock_approvals_pending") == 0.0
        assert value(after, "triplock_holds_waiting") == 0.0

        call, second = await held_call(waiting_stack, agent, {**OUTSIDE, "subject": "again"})
        assert second["id"] != approval["id"]
        assert value(await scrape(base), "triplock_approvals_pending") == 1.0
        assert (await approve(base, second["id"], approve=False)).status_code == 200
        denied_answer = await asyncio.wait_for(call, 30)
        assert denied_answer.is_error and "Denied by alice" in denied_answer.content[0].text  # type: ignore[union-attr]

    denied = {"triplock_approval_state": "denied", "triplock_rule_id": labels["triplock_rule_id"]}
    end = await until(base, lambda s: value(s, duration, **denied) == 1.0)
    assert value(end, "triplock_holds_total", **labels) - value(before, "triplock_holds_total", **labels) == 2
    assert value(end, duration, **approved) == 1.0
    assert value(end, "triplock_approvals_pending") == 0.0
    assert value(end, "triplock_holds_waiting") == 0.0
    hold = {"triplock_decision": "hold", "triplock_category": labels["triplock_category"], "triplock_mode": "enforce"}
    assert value(end, "triplock_decisions_total", **hold) - value(before, "triplock_decisions_total", **hold) == 2


async def test_abandoned_hold_stays_pending_until_decided(waiting_stack: Stack) -> None:
    base = waiting_stack.base
    async with Client(waiting_stack.mcp, mode="legacy") as agent:
        await agent.call_tool("demo__read_inbox", {})
        call, approval = await held_call(waiting_stack, agent, OUTSIDE)
        call.cancel()  # the client gives up: the SDK sends notifications/cancelled
        with pytest.raises(asyncio.CancelledError):
            await call
        labels = hold_labels(approval)
        # The call is gone, its hold counted; the approval still waits for a human.
        left = await until(base, lambda s: value(s, "triplock_holds_waiting") == 0.0)
        assert value(left, "triplock_holds_total", **labels) == 1.0
        assert value(left, "triplock_approvals_pending") == 1.0
        assert (await approve(base, approval["id"], approve=False)).status_code == 200
    denied = {"triplock_approval_state": "denied", "triplock_rule_id": labels["triplock_rule_id"]}
    end = await until(base, lambda s: value(s, "triplock_approval_duration_seconds_count", **denied) == 1.0)
    assert value(end, "triplock_approvals_pending") == 0.0


async def test_two_gateways_on_one_store_decided_through_the_other(tmp_path: Path) -> None:
    """A hold whose wait ran out on gateway A, approved through gateway B: each event counts once, on the process
    that saw it; both pending gauges read the shared store and drop to 0 together."""
    stack_gen = start_stack(tmp_path, hold_wait=1.0)
    a = next(stack_gen)
    try:
        b_port = free_port()
        cfg_b = write_config(
            tmp_path / "b.toml", b_port,
            [{"name": "demo", "transport": "http", "url": a.upstream_mcp}],
            policy={"file": str(e2e_policy(tmp_path))},
            store={"kind": "sqlite", "path": str(tmp_path / "state.sqlite")},
            approvals={"hold_wait": 1.0},
            audit={"path": str(tmp_path / "audit-b.jsonl")},
        )
        b = f"http://127.0.0.1:{b_port}"
        env = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}
        with running(gateway_cmd(cfg_b), f"{b}/readyz", env=env):
            async with Client(a.mcp, mode="legacy") as agent:
                await agent.call_tool("demo__read_inbox", {})
                held = await agent.call_tool(SEND, OUTSIDE)  # the one-second wait runs out: pending
                assert held.is_error and (held.meta or {})["triplock/approval"]["status"] == "pending"
                approval = await pending_approval(a.base)
                labels = hold_labels(approval)
                assert value(await scrape(a.base), "triplock_approvals_pending") == 1.0
                assert value(await scrape(b), "triplock_approvals_pending") == 1.0
                assert (await approve(b, approval["id"])).status_code == 200
                approved = {"triplock_approval_state": "approved", "triplock_rule_id": labels["triplock_rule_id"]}
                on_b = await until(b, lambda s: value(s, "triplock_approval_duration_seconds_count", **approved) == 1)
                on_a = await scrape(a.base)
                ran = await agent.call_tool(SEND, OUTSIDE)  # the repeat runs: not a new hold
                assert not ran.is_error, ran
            after_a = await scrape(a.base)
        assert (value(on_a, "triplock_holds_total", **labels), value(on_b, "triplock_holds_total", **labels)) == (1, 0)
        assert value(on_a, "triplock_approval_duration_seconds_count", **approved) == 0.0
        assert (value(on_a, "triplock_approvals_pending"), value(on_b, "triplock_approvals_pending")) == (0.0, 0.0)
        assert value(after_a, "triplock_holds_total", **labels) == 1.0
        assert value(after_a, "triplock_approval_duration_seconds_count", **approved) == 0.0
        assert present(after_a, "triplock_holds_waiting") and value(after_a, "triplock_holds_waiting") == 0.0
    finally:
        stack_gen.close()
