"""Approval metrics read from a real state store: expiry, a suspension's denials, approved-then-expired, pending.

The outcomes no in-band wait sees (the sweep expires an approval, a suspension denies it) reach the
metrics the way they do in a gateway: as audit events of the process that won them, looked up in the
store (SQLite here) for the approval's creation time and rule ids.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.store import PendingApproval
from gateway.telemetry.approval_metrics import DECISION_EVENTS, ApprovalMetrics
from gateway.telemetry.audit import AuditLog, EventType
from gateway.telemetry.metrics import Metrics

RULES = ("approval_required:email_send", "trifecta.hold")
RULE = ",".join(RULES)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(str(tmp_path / "state.sqlite")) as s:
        yield s


def approval(now: float, ttl: float, subject: str) -> PendingApproval:
    return PendingApproval.new(principal="agent:a", session_id="s1", upstream="demo", tool="send_email",
                               arguments={"subject": subject}, policy_revision="r1", ttl_seconds=ttl, now=now,
                               category="email_send", rule_ids=RULES)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}


def latency(metrics: Metrics, state: str) -> tuple[float, float]:
    """(count, sum) of the approval latency for ``state`` and :data:`RULE`."""
    got = samples(metrics)
    labels = (("triplock_approval_state", state), ("triplock_rule_id", RULE))
    return (got.get(("triplock_approval_duration_seconds_count", labels), 0.0),
            got.get(("triplock_approval_duration_seconds_sum", labels), 0.0))


async def test_expiry_suspension_and_approved_then_expired_each_count_once(store: SqliteStore) -> None:
    metrics = Metrics()
    watcher = ApprovalMetrics(metrics)
    watcher.watch(store)
    audit = AuditLog([])
    audit.listen(watcher.listen, DECISION_EVENTS)
    t0 = time.time() - 100
    lapsed, approved, suspended = approval(t0, 30, "lapsed"), approval(t0, 60, "approved"), approval(t0, 90, "s")
    for a in (lapsed, approved, suspended):
        await store.create_approval(a)

    won = await store.decide(approved.id, True, "alice", "ok", t0 + 12.5)
    assert won.won
    audit.emit(EventType.APPROVAL_GRANTED, approval_id=approved.id)
    denied = await store.decide(suspended.id, False, "admin", "suspended: incident", t0 + 20)
    assert denied.won
    audit.emit("suspension.created", target="principal:agent:a", denied_approvals=[suspended.id])
    expired = await store.expire_due(t0 + 70)  # the sweep: the lapsed one, and the approved one never used
    assert sorted(a.id for a in expired) == sorted([lapsed.id, approved.id])
    for a in expired:
        audit.emit(EventType.APPROVAL_EXPIRED, approval_id=a.id)
    audit.emit(EventType.APPROVAL_GRANTED, approval_id=approved.id)  # heard twice: still once
    await watcher.settle()

    assert latency(metrics, "approved") == (1.0, 12.5)
    assert latency(metrics, "denied") == (1.0, 20.0)
    assert latency(metrics, "expired") == (1.0, 30.0)  # until it lapsed, not until the sweep noticed


async def test_pending_counts_the_store_not_this_process(store: SqliteStore) -> None:
    metrics = Metrics()
    await metrics.refresh()
    assert ("triplock_approvals_pending", ()) not in samples(metrics)  # no store to read: absent, not 0
    watcher = ApprovalMetrics(metrics)
    watcher.watch(store)
    now = time.time()
    # Created by "another process": this Metrics never saw them held.
    for a in (approval(now, 600, "one"), approval(now, 600, "two"), approval(now - 700, 600, "lapsed, not swept")):
        await store.create_approval(a)
    await metrics.refresh()
    assert samples(metrics)[("triplock_approvals_pending", ())] == 2.0
    await store.aclose()  # the store goes away: the gauge says nothing rather than a stale 2
    await metrics.refresh()
    assert ("triplock_approvals_pending", ()) not in samples(metrics)
