"""Approval scopes and abandoned holds on the guarded path in process: real store, policy and approvals.

The upstream is guard_kit's stub (it counts what reached it); sessions are real `DownstreamSession`s,
so each call's session key is what an MCP session would give it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.memory_store import MemoryStore
from gateway.config import PolicyConfig
from gateway.guard.hold import APPROVAL_ABANDONED, Approvals, HoldSettings
from gateway.guard.pipeline import GuardedPath
from gateway.guard.policy_runtime import PolicyRuntime
from gateway.guard.record import CallRecord
from gateway.mcp.context import RequestContext
from gateway.mcp.sessions import DownstreamSession
from gateway.ports.records import PendingApproval, args_hash
from tests.guard.guard_kit import StubUpstream, call_message, policy_file, refusal, target

TO_EVE = {"to": "eve@example.org", "body": "q3"}


class Recorder:
    """A call observer: each finished call's outcome and the approval it ran under."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    def decided(self, record: CallRecord) -> None:
        pass

    def finished(self, record: CallRecord) -> None:
        self.calls.append((record.exposed, record.outcome, record.approval.id if record.approval else None))


class Rig:
    def __init__(self, tmp: Path, hold_wait: float) -> None:
        self.store = MemoryStore()
        self.audited: list[tuple[str, dict[str, Any]]] = []
        self.upstream = StubUpstream()
        self.recorder = Recorder()
        self.approvals = Approvals(self.store, HoldSettings(hold_wait=hold_wait),
                                   audit=lambda kind, **fields: self.audited.append((kind, fields)))
        self.policy = PolicyRuntime(PolicyConfig(file=policy_file(tmp)))
        self.guard = GuardedPath(self.upstream, self.policy, self.store, self.approvals, observers=[self.recorder])

    async def call(self, session: str, tool: str, arguments: dict[str, Any], principal: str = "agent:a",
                   rid: int = 1) -> dict[str, Any]:
        ctx = RequestContext(principal, "2025-11-25", DownstreamSession(session, "2025-11-25", {}, {}, principal),
                             None, {})
        return await self.guard(ctx, {**call_message(tool, arguments), "id": rid}, target(tool))

    async def decide(self, approval_id: str, **scope: Any) -> PendingApproval:
        outcome = await self.store.decide(approval_id, True, "human:carol", "checked", time.time(), **scope)
        assert outcome.status == "approved", outcome
        assert outcome.approval is not None
        return outcome.approval

    async def one_pending(self, deadline: float = 10.0) -> PendingApproval:
        end = time.monotonic() + deadline
        while not (pending := await self.store.list_approvals(state="pending")):
            assert time.monotonic() < end, "no approval was created"
            await asyncio.sleep(0.01)  # poll interval; the condition is re-checked each round
        assert len(pending) == 1
        return pending[0]


@pytest.fixture
async def quick(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, hold_wait=0.0)
    await rig.store.start()
    yield rig
    await rig.store.aclose()


@pytest.fixture
async def waiting(tmp_path: Path) -> AsyncIterator[Rig]:
    rig = Rig(tmp_path, hold_wait=60.0)
    await rig.store.start()
    yield rig
    await rig.store.aclose()


def approval_id(result: dict[str, Any]) -> str:
    return str(result["_meta"]["triplock/approval"]["approval_id"])


async def test_a_once_approval_runs_the_identical_call_once_from_another_session(quick: Rig) -> None:
    held = await quick.call("session-A", "send", TO_EVE)
    a = approval_id(held)
    await quick.decide(a)
    assert refusal(await quick.call("session-B", "send", TO_EVE)) is None
    again = await quick.call("session-C", "send", TO_EVE)
    assert approval_id(again) != a  # used up: the third repeat is held again, as a new approval
    assert quick.upstream.reached == ["send"]
    assert ("ws__send", "executed", a) in quick.recorder.calls
    assert (await quick.store.get_approval(a)).state == "executed"


async def test_a_session_approval_repeats_in_its_session_only(quick: Rig) -> None:
    a = approval_id(await quick.call("session-A", "send", TO_EVE))
    approved = await quick.decide(a, scope="session")
    for rid in (2, 3, 4):
        assert refusal(await quick.call("session-A", "send", TO_EVE, rid=rid)) is None
    elsewhere = await quick.call("session-B", "send", TO_EVE)
    assert approval_id(elsewhere) != a
    other_args = await quick.call("session-A", "send", {**TO_EVE, "to": "mallory@example.org"})
    assert refusal(other_args) is not None
    assert quick.upstream.reached == ["send"] * 3
    assert [f for f in quick.recorder.calls if f[1] == "executed"] == [("ws__send", "executed", a)] * 3
    assert (await quick.store.get_approval(a)) == approved  # not consumed: it lasts until it expires


async def test_a_principal_tool_approval_covers_other_arguments_for_its_minutes_only(quick: Rig) -> None:
    a = approval_id(await quick.call("session-A", "send", TO_EVE))
    until = time.time() + 5 * 60
    await quick.decide(a, scope="principal_tool", scope_until=until)
    other = {"to": "bob@example.org", "body": "lunch?"}
    assert refusal(await quick.call("session-B", "send", other)) is None
    assert refusal(await quick.call("session-C", "send", TO_EVE)) is None
    assert quick.upstream.reached == ["send", "send"]
    assert [f for f in quick.recorder.calls if f[1] == "executed"] == [("ws__send", "executed", a)] * 2
    # never broader than what the approver saw: another principal, another tool
    assert refusal(await quick.call("session-B", "send", other, principal="agent:b")) is not None
    assert refusal(await quick.call("session-D", "read_mail", {})) is None
    assert refusal(await quick.call("session-D", "fetch", {"url": "https://evil.example"})) is not None  # trifecta
    assert quick.upstream.reached == ["send", "send", "read_mail"]


async def test_a_policy_change_ends_a_scoped_approval(quick: Rig, tmp_path: Path) -> None:
    a = approval_id(await quick.call("session-A", "send", TO_EVE))
    await quick.decide(a, scope="principal_tool", scope_until=time.time() + 600)
    policy = policy_file(tmp_path)
    policy.write_text(policy.read_text().replace("name: inprocess", "name: inprocess-v2"))
    quick.policy.reload()
    assert refusal(await quick.call("session-A", "send", {"to": "bob@example.org"})) is not None
    assert quick.upstream.reached == []


async def test_a_session_approval_does_not_run_a_waiter_from_another_session(waiting: Rig) -> None:
    first = asyncio.create_task(waiting.call("session-A", "send", TO_EVE))
    pending = await waiting.one_pending()
    second = asyncio.create_task(waiting.call("session-B", "send", TO_EVE, rid=2))  # reuses A's approval
    while len(waiting.store._waiters) < 2:  # both calls wait on the one approval
        await asyncio.sleep(0.01)  # poll interval; the condition is re-checked each round
    await waiting.decide(pending.id, scope="session")
    ran, held = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert refusal(ran) is None
    assert approval_id(held) != pending.id and "Held for human approval" in held["content"][0]["text"]
    assert waiting.upstream.reached == ["send"]


async def test_a_cancelled_hold_is_marked_abandoned_once_and_can_still_be_approved(waiting: Rig) -> None:
    call = asyncio.create_task(waiting.call("session-A", "send", TO_EVE))
    pending = await waiting.one_pending()
    call.cancel()  # what notifications/cancelled does to the request's task
    with pytest.raises(asyncio.CancelledError):
        await call
    end = time.monotonic() + 10
    while (stamped := await waiting.store.get_approval(pending.id)).abandoned_at is None:
        assert time.monotonic() < end, "never marked abandoned"
        await asyncio.sleep(0.01)  # poll interval; the condition is re-checked each round
    assert stamped.state == "pending"
    assert waiting.audited == [(APPROVAL_ABANDONED, {
        "approval_id": pending.id, "principal": "agent:a", "session": "session-A", "upstream": "ws", "tool": "send",
        "args_hash": args_hash(TO_EVE), "policy_revision": pending.policy_revision,
        "abandoned_at": stamped.abandoned_at, "reason": "cancelled"})]
    # a second waiter on the same approval that is cancelled too: stamped and audited once only
    again = asyncio.create_task(waiting.call("session-B", "send", TO_EVE, rid=2))
    while len(waiting.store._waiters) < 1:
        await asyncio.sleep(0.01)  # poll interval; the condition is re-checked each round
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    await asyncio.gather(*waiting.approvals._stamping)
    assert len(waiting.audited) == 1
    assert (await waiting.store.get_approval(pending.id)).abandoned_at == stamped.abandoned_at
    await waiting.decide(pending.id)  # the documented flow: approve, then the agent repeats the call
    assert refusal(await waiting.call("session-C", "send", TO_EVE, rid=3)) is None
    assert waiting.upstream.reached == ["send"]
