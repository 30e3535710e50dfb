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
* Health: every adapter keeps a `StoreHealth` (`store.health`), a small circuit breaker opened
  by any of its operations that failed and closed only by a write or probe that succeeded
  (`ping()` writes), and probes itself every `probe_interval` seconds, so an outage is known
  even while the gateway answers from its cache. `state_stamp()` changes whenever state this
  process read may since have been changed by another process; it costs no round trip.
* `call_state()` is the hot path: one round trip, and it never touches approvals, so the number
  of pending approvals does not slow allowed calls.
* `decide()` is an atomic compare-and-set: of concurrent approve/deny calls on one approval,
  exactly one gets 'approved' or 'denied'; the rest get 'conflict'.
* Approval lifecycle: pending -> approved | denied | expired; approved -> executed (`consume`,
  single use) | expired (an approval not used before `expires_at` lapses in `expire_due`).
  An approval binds principal, upstream, tool, arguments hash and policy revision, not the
  session; its scope (`once`, `session`, `principal_tool`) says what it covers, and only `once`
  is consumed (see `gateway.ports.records`). A pending approval whose client stopped waiting is
  stamped `abandoned_at` (`mark_abandoned`) and stays decidable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol, Self, runtime_checkable

from gateway.ports.grants import GrantStore
from gateway.ports.records import (
    APPROVAL_SCOPES,
    APPROVAL_STATES,
    VALID_LEGS,
    ApprovalScope,
    ApprovalState,
    CallStateRecord,
    DecideOutcome,
    DecideStatus,
    PendingApproval,
    PinRecord,
    args_hash,
    binding_key,
    canonical_args,
    check_legs,
    decide_transition,
    legs_text,
    new_approval_id,
)

DEFAULT_PREFIX = "triplock:"
SATURATED = "!saturated"  # the trail item that says more items arrived than a key keeps


class StoreUnavailable(Exception):
    """The state store cannot be reached or written; the gateway refuses holds and writes."""


class StoreHealth:
    """Whether the store can be trusted right now: the breaker and change counter an adapter keeps.

    Opened (`failed`) by any operation that raised StoreUnavailable or timed out, by anyone who
    saw one (the gateway's state cache), and by the adapter's own probe; closed (`recovered`)
    only by a write or a probe that succeeded, never by a read: a store that still answers reads
    but refuses writes is down for the gateway. `generation` grows on every change of state and
    whenever the adapter may have missed another process's change, so anything cached under an
    older generation is never trusted.
    """

    __slots__ = ("_watch", "generation", "last_error", "last_probe", "ok", "probe_interval")

    def __init__(self, probe_interval: float = 1.0) -> None:
        self.ok = True
        self.last_error: str | None = None
        self.generation = 0
        self.probe_interval = probe_interval
        self.last_probe = 0.0  # time.monotonic() of the last probe
        self._watch: asyncio.Task[None] | None = None

    def failed(self, error: str) -> None:
        """Open the breaker: writes, E legs and holds are refused until a write or probe succeeds."""
        if self.ok:
            self.ok = False
            self.generation += 1
        self.last_error = error

    def recovered(self) -> None:
        """Close the breaker (a write or probe just succeeded)."""
        if not self.ok:
            self.ok = True
            self.last_error = None
            self.generation += 1

    def invalidate(self) -> None:
        """Whatever was cached may be stale (e.g. change notifications may have been missed)."""
        self.generation += 1

    def probe_due(self) -> bool:
        """Whether the last probe is older than `probe_interval` (so a down store is not probed per call)."""
        return time.monotonic() - self.last_probe >= self.probe_interval

    def start_watch(self, probe: Callable[[], Awaitable[bool]]) -> None:
        """Run `probe` every `probe_interval` seconds until `stop_watch` (idempotent): an outage is
        noticed even when no call touches the store."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._probe_forever(probe), name="triplock-store-health")

    def stop_watch(self) -> None:
        """Stop the periodic probe (the adapter's aclose)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def _probe_forever(self, probe: Callable[[], Awaitable[bool]]) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)  # the probe's period, not synchronisation
            if self.probe_due():
                await probe()


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
class Store(GrantStore, Protocol):
    """The gateway's durable state. See the module docstring for the shared contract (upstream sign-ins
    and grants: `gateway.ports.grants`)."""

    async def start(self) -> None:
        """Open connections, create schema, load caches. Raises StoreUnavailable."""

    async def aclose(self) -> None:
        """Release connections and background tasks; idempotent."""

    health: StoreHealth
    """The breaker this adapter keeps from its own operations and probes."""

    async def ping(self) -> bool:
        """The health probe, a small write: True when it succeeded (closing the breaker); False
        (never an exception) when it did not (opening it)."""

    def state_stamp(self) -> Hashable:
        """A value that changes whenever legs or pins this process read may have been changed
        since by another process (or the store's health changed). No round trip; compare with ==."""

    async def call_state(self, legs_key: str, first_use_key: str, upstream: str, tool: str,
                         principal_legs_key: str | None = None) -> CallStateRecord:
        """Hot path: live legs of ``legs_key`` (and, given, of ``principal_legs_key`` apart), whether
        the tool was used before, its pinned hash."""

    def suspended(self) -> frozenset[str]:
        """Suspended ids ('agent:X', 'principal:Y', 'upstream:Z', 'tool:U__T'), from memory."""

    async def add_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None) -> None:
        """Union `legs` into the key; each leg lives `ttl_seconds` from now (None: for ever)."""

    async def mark_used(self, first_use_key: str) -> None:
        """Record that a tool (or a principal's use of it) has run once."""

    async def add_trail(self, key: str, items: Mapping[str, str], ttl_seconds: float, limit: int) -> None:
        """Remember ``items`` (item -> the call it came from) under ``key``, the session's memory.

        An item already there keeps its first source. The key lives ``ttl_seconds`` from this
        write (a sliding window). Past ``limit`` items new ones are not kept; the item
        ``SATURATED`` is kept instead, so readers know the memory is incomplete (and fail closed).
        """
        ...

    async def get_trail(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """The live items of ``keys`` merged, item -> (source, unix time it was first seen); the
        earliest source wins."""
        ...

    async def clear_state(self, keys: Sequence[str]) -> int:
        """Forget legs and memory kept under these keys (legs keys and trail keys alike); returns a
        count of what was removed (0: nothing was kept). Other processes' caches see the change
        (``state_stamp``)."""
        ...

    async def save_session(self, session_id: str, record: Mapping[str, Any], ttl_seconds: float) -> None:
        """Keep a downstream session's record (principal, protocol, client) so it outlives a restart."""
        ...

    async def load_session(self, session_id: str) -> dict[str, Any] | None:
        """The record saved for ``session_id`` unless it expired; None otherwise."""
        ...

    async def drop_session(self, session_id: str) -> None:
        """Forget a session (the client sent DELETE)."""
        ...

    async def drop_legs(self, legs_key: str) -> None:
        """Forget the legs kept under ``legs_key`` (the session they belonged to has ended)."""
        ...

    async def set_pin(self, upstream: str, tool: str, definition_hash: str, by: str) -> None:
        """Pin (or re-pin) a tool's definition hash."""

    async def get_pins(self) -> dict[tuple[str, str], str]:
        """All pins, keyed by (upstream, tool)."""

    async def list_pins(self) -> list[PinRecord]:
        """All pins with who pinned them and when, sorted by (upstream, tool)."""
        ...

    async def save_definitions(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep tool definitions by their pin hash ('sha256:...' -> the definition as listed).

        Content-addressed, so saving a hash again changes nothing: a pin's definition can be
        shown (and diffed against the current one) long after the upstream changed it.
        """
        ...

    async def get_definition(self, definition_hash: str) -> dict[str, Any] | None:
        """The definition saved under ``definition_hash``, or None if it never was."""
        ...

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
                     now: float, scope: ApprovalScope = "once", scope_until: float | None = None) -> DecideOutcome:
        """Atomic compare-and-set of a pending approval; see `decide_transition` (an approval records
        `scope` and `scope_until`; ValueError for an unknown scope or a `principal_tool` without a future end)."""

    async def find_approved(self, principal: str, session_id: str, upstream: str, tool: str, args_hash: str,
                            policy_revision: str, now: float) -> PendingApproval | None:
        """An approval usable for this call (`PendingApproval.usable` and `covers`), whichever session asks.

        Exact-call approvals (`once`, `session`) first, then `principal_tool` ones, oldest first in each.
        """

    async def consume(self, approval_id: str) -> bool:
        """approved -> executed, atomically; False if it was not 'approved' (single use). Only `once`
        approvals are consumed: a broader scope lasts until it expires."""

    async def find_pending(self, principal: str, session_id: str, upstream: str, tool: str,
                           args_hash: str) -> PendingApproval | None:
        """A still-pending, unexpired approval for this exact call, from any session, so a repeat reuses it.

        `session_id` is where the repeat comes from; it is not part of the binding.
        """

    async def mark_abandoned(self, approval_id: str, at: float) -> PendingApproval | None:
        """Stamp `abandoned_at` on a pending approval whose waiting client went away.

        Returns the updated record when this call stamped it; None when it is unknown, no longer
        pending, or already stamped (so the gateway audits each abandonment once). The approval
        stays decidable: the agent may repeat the call after approval.
        """

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
    "APPROVAL_SCOPES",
    "APPROVAL_STATES",
    "DEFAULT_PREFIX",
    "SATURATED",
    "VALID_LEGS",
    "ApprovalScope",
    "ApprovalState",
    "CallStateRecord",
    "DecideOutcome",
    "DecideStatus",
    "DecisionWaiters",
    "PendingApproval",
    "PinRecord",
    "Store",
    "StoreContext",
    "StoreHealth",
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
