"""The state store: the interface the gateway talks to, and the frozen records it exchanges.

Everything Triplock must not lose lives behind `Store`: session legs, first-use records, tool
pins, suspensions and approvals. Adapters live in `adapters/stores/` (`sqlite_store`, `memory_store`,
`redis_store`); this module does no I/O, so the gateway and the policy tests can import it freely.
The records it exchanges (`PendingApproval`, `CallStateRecord`, `DecideOutcome`, ...) and their pure
helpers live in `gateway.ports.records`; they are re-exported here.

Contract, shared by every adapter (and checked by one test suite, `tests/adapters/stores/`):

* Every async method raises `StoreUnavailable` when the backing store cannot be reached or
  written, never a driver exception, so the gateway can fail closed. `ping()` is the one
  exception: it is the health probe and answers False instead. `suspended()` never does I/O.
* `call_state()` is the hot path: one round trip, and it never touches approvals, so the number
  of pending approvals does not slow allowed calls.
* `decide()` is an atomic compare-and-set: of concurrent approve/deny calls on one approval,
  exactly one gets 'approved' or 'denied'; the rest get 'conflict'.
* Approval lifecycle: pending -> approved | denied | expired; approved -> executed (`consume`,
  single use) | expired (an approval not used before `expires_at` lapses in `expire_due`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, Self, runtime_checkable

from gateway.ports.records import (
    APPROVAL_STATES,
    VALID_LEGS,
    ApprovalState,
    CallStateRecord,
    DecideOutcome,
    DecideStatus,
    PendingApproval,
    args_hash,
    binding_key,
    canonical_args,
    check_legs,
    decide_transition,
    legs_text,
    new_approval_id,
)

DEFAULT_PREFIX = "triplock:"


class StoreUnavailable(Exception):
    """The state store cannot be reached or written; the gateway refuses holds and writes."""


class DecisionWaiters:
    """In-process wake-ups for `wait_decided`: one asyncio.Event per waiting call.

    Adapters call `notify(id)` when they learn of a decision (their own `decide`, or a pub/sub
    message from another process) and `notify_all()` when they may have missed messages.
    """

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    def register(self, approval_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(approval_id, set()).add(event)
        return event

    def unregister(self, approval_id: str, event: asyncio.Event) -> None:
        events = self._events.get(approval_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[approval_id]

    def notify(self, approval_id: str) -> None:
        for event in self._events.get(approval_id, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    def __len__(self) -> int:
        return sum(len(v) for v in self._events.values())


async def wait_for_decision(waiters: DecisionWaiters, approval_id: str, timeout: float,
                            load: Callable[[str], Awaitable[PendingApproval | None]],
                            recheck_every: float | None = None) -> PendingApproval | None:
    """Shared body of `wait_decided`: wake on an event, then re-read the record from the store.

    The event is registered *before* the first read so a decision landing between the read and
    the wait is not missed. A wake-up is only a hint; the store is the truth, so spurious wakes
    just loop. `recheck_every` bounds each wait for stores without cross-process notifications.
    Returns the decided approval, or None if it is unknown or still pending at the deadline.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    event = waiters.register(approval_id)
    try:
        while True:
            event.clear()
            current = await load(approval_id)
            if current is None or current.decided:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait = remaining if recheck_every is None else min(remaining, recheck_every)
            with contextlib.suppress(TimeoutError):  # deadline or re-check: read the store once more
                await asyncio.wait_for(event.wait(), wait)
    finally:
        waiters.unregister(approval_id, event)


@runtime_checkable
class Store(Protocol):
    """The gateway's durable state. See the module docstring for the shared contract."""

    async def start(self) -> None:
        """Open connections, create schema, load caches. Raises StoreUnavailable."""

    async def aclose(self) -> None:
        """Release connections and background tasks; idempotent."""

    async def ping(self) -> bool:
        """True when the store answers; False (never an exception) when it does not."""

    async def call_state(self, legs_key: str, first_use_key: str, upstream: str, tool: str) -> CallStateRecord:
        """Hot path: live session legs, whether the tool was used before, its pinned hash."""

    def suspended(self) -> frozenset[str]:
        """Suspended ids ('agent:X', 'principal:Y', 'upstream:Z', 'tool:U__T'), from memory."""

    async def add_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None) -> None:
        """Union `legs` into the key; each leg lives `ttl_seconds` from now (None: for ever)."""

    async def mark_used(self, first_use_key: str) -> None:
        """Record that a tool (or a principal's use of it) has run once."""

    async def save_session(self, session_id: str, record: Mapping[str, Any], ttl_seconds: float) -> None:
        """Keep a downstream session's record (principal, protocol, client) so it outlives a restart."""
        ...

    async def load_session(self, session_id: str) -> dict[str, Any] | None:
        """The record saved for ``session_id`` unless it expired; None otherwise."""
        ...

    async def drop_session(self, session_id: str) -> None:
        """Forget a session (the client sent DELETE)."""
        ...

    async def set_pin(self, upstream: str, tool: str, definition_hash: str, by: str) -> None:
        """Pin (or re-pin) a tool's definition hash."""

    async def get_pins(self) -> dict[tuple[str, str], str]:
        """All pins, keyed by (upstream, tool)."""

    async def suspend(self, target_id: str, by: str, reason: str) -> None:
        """Suspend an agent, principal, upstream or tool; other processes see it within 1 s."""

    async def resume(self, target_id: str, by: str) -> None:
        """Lift a suspension (no error if there was none)."""

    async def create_approval(self, approval: PendingApproval) -> None:
        """Store a new pending approval; ValueError if the id exists."""

    async def get_approval(self, approval_id: str) -> PendingApproval | None:
        """One approval by id, or None."""

    async def list_approvals(self, state: ApprovalState | None = None, upstream: str | None = None,
                             tool: str | None = None, principal: str | None = None,
                             limit: int = 100) -> list[PendingApproval]:
        """Approvals matching every given filter, newest first, at most `limit`."""

    async def decide(self, approval_id: str, approve: bool, approver: str, reason: str,
                     now: float) -> DecideOutcome:
        """Atomic compare-and-set of a pending approval; see `decide_transition`."""

    async def find_approved(self, principal: str, session_id: str, upstream: str, tool: str, args_hash: str,
                            policy_revision: str, now: float) -> PendingApproval | None:
        """An approved, unexpired, unexecuted approval bound to exactly this call (oldest first)."""

    async def consume(self, approval_id: str) -> bool:
        """approved -> executed, atomically; False if it was not 'approved' (single use)."""

    async def find_pending(self, principal: str, session_id: str, upstream: str, tool: str,
                           args_hash: str) -> PendingApproval | None:
        """A still-pending, unexpired approval for this exact call, so a repeat reuses it."""

    async def wait_decided(self, approval_id: str, timeout: float) -> PendingApproval | None:
        """Wait until decided (in any process); None if still pending at `timeout` or unknown."""

    async def expire_due(self, now: float) -> list[PendingApproval]:
        """Mark pending (and approved but unused) approvals past `expires_at` expired; return them.

        Each approval is returned by exactly one caller, even with several processes sweeping,
        so the gateway can audit each expiry once.
        """


class StoreContext:
    """Mixin: `async with SomeStore(...) as store:` calls start() and aclose()."""

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "APPROVAL_STATES",
    "DEFAULT_PREFIX",
    "VALID_LEGS",
    "ApprovalState",
    "CallStateRecord",
    "DecideOutcome",
    "DecideStatus",
    "DecisionWaiters",
    "PendingApproval",
    "Store",
    "StoreContext",
    "StoreUnavailable",
    "args_hash",
    "binding_key",
    "canonical_args",
    "check_legs",
    "decide_transition",
    "legs_text",
    "new_approval_id",
    "wait_for_decision",
]
