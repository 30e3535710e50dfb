"""Hold and approval metrics that stay true whatever a hold's outcome, with any number of processes on one store.

Who records what, so that each event counts once over all the processes sharing a state store:

- ``triplock_holds_total``: the process whose call created the approval, when that call is answered
  (approved or denied while it waited, left pending when the wait ran out, abandoned by the client).
- ``triplock_holds_waiting``: each process, its own held calls being answered now (sum them).
- ``triplock_approvals_pending``: read from the store at each scrape, so every process sharing the
  store reports the same number (take the max) and nothing can drift: an approval decided through
  another process, or expired by another process's sweep, leaves it at once.
- ``triplock_approval_duration_seconds`` (its ``_count``: decisions by state and rule ids): the process
  that won the decision, which alone audits it (console and REST API, so the CLI too; a suspension's
  denials; the expiry sweep). Its audit log tells :meth:`ApprovalMetrics.listen`, which reads the
  approval back for its creation time and rule ids. A decision the agent's own user made through
  elicitation has no audit event of its own: the waiting call records it
  (:meth:`ApprovalMetrics.records_in_band`).

Without a store to read (:meth:`ApprovalMetrics.watch` not called) the pending gauge is absent and
the waiting call records the decisions it sees, as a single process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway.ports.store import PendingApproval, Store
from gateway.telemetry.audit import EventType
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("triplock.metrics")

SUSPENSION_CREATED = "suspension.created"  # gateway.identity.suspension_api: carries the approvals it denied
DECISION_EVENTS = (EventType.APPROVAL_GRANTED, EventType.APPROVAL_DENIED, EventType.APPROVAL_EXPIRED,
                   SUSPENSION_CREATED)
PENDING_READ_LIMIT = 10_000  # approvals read per scrape at most (humans keep far fewer waiting)
_STATES = {"approved": "approved", "executed": "approved", "denied": "denied", "expired": "expired"}


def rule_label(rule_ids: tuple[str, ...] | list[str]) -> str:
    """The rule ids that held a call, as one label value (the policy's ids: a bounded set)."""
    return ",".join(rule_ids)


class ApprovalMetrics:
    """Approval decisions and the pending gauge, read from the state store the gateway shares."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.store: Store | None = None
        self._lookups: set[asyncio.Task[None]] = set()  # kept referenced until done
        self._refresher: asyncio.Task[None] | None = None

    def watch(self, store: Store) -> None:
        """Read pending approvals and decided approvals from ``store`` (the one the gateway holds calls in)."""
        self.store = store
        self.metrics.observe_approvals_pending(self.count_pending)

    async def count_pending(self) -> int:
        """Approvals still waiting for a human: pending and not past their expiry."""
        assert self.store is not None
        now = time.time()
        pending = await self.store.list_approvals(state="pending", limit=PENDING_READ_LIMIT)
        return sum(1 for a in pending if a.expires_at > now)

    def records_in_band(self, approval: PendingApproval) -> bool:
        """Whether the call that waited on ``approval`` records its decision (nobody else will)."""
        return self.store is None or (approval.decided_by or "").startswith("end-user:")

    def resolved(self, approval: PendingApproval) -> None:
        """Observe ``approval``'s decision or expiry once (an approval approved and later expired unused
        was counted as approved)."""
        state = _STATES.get(approval.state)
        if state is None or (state == "expired" and approval.decided_by):
            return
        end = approval.expires_at if state == "expired" else approval.decided_at
        if end is None:
            return
        self.metrics.approval_resolved(approval.id, state, approval.created_at, end, rule_label(approval.rule_ids))

    def listen(self, record: dict[str, Any]) -> None:
        """An :meth:`AuditLog.listen` hook for :data:`DECISION_EVENTS`: this process won those decisions."""
        if self.store is None or not self.metrics.enabled:
            return
        if record.get("type") == SUSPENSION_CREATED:
            ids = record.get("denied_approvals")
            ids = ids if isinstance(ids, list) else []
        else:
            ids = [record.get("approval_id")]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # emitted outside the loop (a test, a CLI): nothing to read the store with
            return
        for approval_id in ids:
            if isinstance(approval_id, str):
                task = loop.create_task(self._lookup(approval_id), name="triplock-approval-metrics")
                self._lookups.add(task)
                task.add_done_callback(self._lookups.discard)

    async def _lookup(self, approval_id: str) -> None:
        assert self.store is not None
        try:
            approval = await self.store.get_approval(approval_id)
        except Exception as exc:  # a down store loses one observation, never the decision itself
            log.warning("approval %s decided, but its latency could not be read: %s", approval_id, exc)
            return
        if approval is not None:
            self.resolved(approval)

    async def settle(self) -> None:
        """Wait until the decisions heard so far are recorded (their lookups done)."""
        while self._lookups:
            await asyncio.gather(*self._lookups, return_exceptions=True)

    def start(self, interval: float | None) -> None:
        """Refresh the store-backed gauges every ``interval`` seconds (for an OTLP push; scrapes refresh
        them themselves). None: no refresher."""
        if interval is not None and self.store is not None and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_every(interval),
                                                                     name="triplock-metrics-refresh")

    async def _refresh_every(self, interval: float) -> None:
        while True:
            await self.metrics.refresh()
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Cancel the refresher and any lookup still running."""
        tasks = [t for t in (self._refresher, *self._lookups) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._refresher = None


__all__ = ["DECISION_EVENTS", "ApprovalMetrics", "rule_label"]
