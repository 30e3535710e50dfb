"""Holds and the decisions of held calls are logged at info: tool, principal, approval id, rule ids,
never the arguments. In process: real memory store, policy, approvals and guarded path."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.memory_store import MemoryStore
from gateway.config import PolicyConfig
from gateway.guard.hold import Approvals, HoldSettings
from gateway.guard.pipeline import GuardedPath
from gateway.guard.policy_runtime import PolicyRuntime
from gateway.mcp.context import RequestContext
from gateway.mcp.sessions import DownstreamSession
from tests.guard.guard_kit import StubUpstream, call_message, policy_file, refusal, target

TO_EVE = {"to": "eve@example.org", "body": "the q3 numbers"}


async def guarded(tmp_path: Path, hold_wait: float) -> tuple[GuardedPath, MemoryStore]:
    store = MemoryStore()
    await store.start()
    approvals = Approvals(store, HoldSettings(hold_wait=hold_wait))
    guard = GuardedPath(StubUpstream(), PolicyRuntime(PolicyConfig(file=policy_file(tmp_path))), store, approvals)
    return guard, store


async def call(guard: GuardedPath, arguments: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    session = DownstreamSession("session-A", "2025-11-25", {}, {}, "agent:a")
    ctx = RequestContext("agent:a", "2025-11-25", session, None, {})
    return await guard(ctx, {**call_message("send", arguments), "id": rid}, target("send"))


def approval_meta(result: dict[str, Any]) -> dict[str, Any]:
    return dict(result["_meta"]["triplock/approval"])


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "triplock.approvals" and r.levelno == logging.INFO]


async def test_a_hold_its_pending_answer_and_the_approved_repeat_are_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="triplock.approvals")
    guard, store = await guarded(tmp_path, hold_wait=0.0)
    meta = approval_meta(await call(guard, TO_EVE))
    approval, rules = meta["approval_id"], ",".join(meta["rule_ids"])
    assert rules  # the hold names the rule(s) that held it
    await store.decide(approval, True, "human:carol", "checked", time.time())
    assert refusal(await call(guard, TO_EVE, rid=2)) is None
    assert messages(caplog) == [
        f"held ws__send of principal agent:a for approval {approval} (category {meta['category'] or '-'}, "
        f"rules {rules})",
        f"approval {approval} still undecided after the hold wait: ws__send of principal agent:a answered as pending",
        f"ws__send of principal agent:a runs under approval {approval} (scope once)",
    ]
    assert "eve@example.org" not in caplog.text and "q3" not in caplog.text  # never the arguments
    await store.aclose()


async def test_a_decision_taken_while_the_call_waits_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="triplock.approvals")
    guard, store = await guarded(tmp_path, hold_wait=60.0)
    waiting = asyncio.create_task(call(guard, TO_EVE))
    deadline = time.monotonic() + 10
    while not (pending := await store.list_approvals(state="pending")):
        assert time.monotonic() < deadline, "the call was not held"
        await asyncio.sleep(0.01)  # poll interval; the condition is re-checked each round
    await store.decide(pending[0].id, False, "human:carol", "not to outsiders", time.time())
    denied = await waiting
    assert refusal(denied) is not None
    assert messages(caplog)[-1] == f"approval {pending[0].id} denied by human:carol: ws__send of principal agent:a"
    assert "eve@example.org" not in caplog.text
    await store.aclose()
