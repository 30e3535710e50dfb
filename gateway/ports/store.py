"""The state store: the interface the gateway talks to, and the frozen records it exchanges.

Everything Triplock must not lose lives behind `Store`: session legs, first-use records, tool
pins, suspensions and approvals. Adapters live in `adapters/` (`store_sqlite`, `store_memory`,
`store_redis`); this module does no I/O, so the gateway and the policy tests can import it freely.

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
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol, Self, cast, runtime_checkable

import orjson

ApprovalState = Literal["pending", "approved", "denied", "expired", "executed"]
APPROVAL_STATES: tuple[ApprovalState, ...] = ("pending", "approved", "denied", "expired", "executed")
DecideStatus = Literal["approved", "denied", "conflict", "expired", "forbidden", "not_found"]
VALID_LEGS = frozenset({"P", "U", "E"})
DEFAULT_PREFIX = "triplock:"


class StoreUnavailable(Exception):
    """The state store cannot be reached or written; the gateway refuses holds and writes."""


def check_legs(legs: Iterable[str]) -> frozenset[str]:
    """Return `legs` as a frozenset of 'P', 'U', 'E', refusing anything else (a typo must not vanish).

    Accepts any iterable of legs (policy's `Leg` members are strings) and the text forms 'PU',
    'P+U', 'P,U' and '-' (policy's `Legs.format` for no legs).
    """
    if isinstance(legs, str):
        legs = [c for c in legs if c not in "+,- "]
    out = frozenset(str(leg) for leg in legs)
    unknown = out - VALID_LEGS
    if unknown:
        raise ValueError(f"unknown legs {sorted(unknown)}; legs are P, U, E")
    return out


def legs_text(legs: Iterable[str]) -> str:
    """Legs in the fixed order P, U, E, e.g. 'PE': the storage form."""
    have = set(legs)
    return "".join(leg for leg in ("P", "U", "E") if leg in have)


def canonical_args(arguments: Mapping[str, Any] | None) -> str:
    """The canonical JSON of tool-call arguments: sorted keys, no whitespace, UTF-8 kept (orjson)."""
    return _canonical_bytes(arguments).decode()


def _canonical_bytes(arguments: Mapping[str, Any] | None) -> bytes:
    # orjson: several times the stdlib's speed; this runs on every audited call.
    if type(arguments) is not dict:  # a plain dict (the usual case) is dumped as it is, not copied
        arguments = dict(arguments or {})
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)


def args_hash(arguments: Mapping[str, Any] | None) -> str:
    """'sha256:<hex>' of the canonical arguments: what binds an approval to one exact call."""
    return "sha256:" + hashlib.sha256(_canonical_bytes(arguments)).hexdigest()


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_approval_id(now: float | None = None) -> str:
    """A ULID-style id: 48 bits of milliseconds then 80 random bits, Crockford base32 (26 chars).

    Time-ordered, so ids sort by creation and list newest-first cheaply; the 80 random bits from
    the OS make an id unguessable, which matters because the id is shown to the agent.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def binding_key(principal: str, session_id: str, upstream: str, tool: str, args_digest: str) -> str:
    """An unambiguous key for 'this exact call' (JSON, so no separator can be smuggled in)."""
    return json.dumps([principal, session_id, upstream, tool, args_digest], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class CallStateRecord:
    """What the policy needs from the store for one tools/call, read in one round trip."""

    legs: frozenset[str] = frozenset()
    tool_used_before: bool = False
    pinned_hash: str | None = None


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """One held call and, once decided, its decision. Bound to exactly one call (see `binding`)."""

    id: str
    principal: str
    session_id: str
    upstream: str
    tool: str
    args_hash: str
    args_preview: str  # the JSON arguments, for the approver console (attacker-controlled text)
    policy_revision: str
    category: str | None
    legs_before: frozenset[str]
    legs_after: frozenset[str]
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    created_at: float
    expires_at: float
    state: ApprovalState = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None
    approver_hint: str | None = None
    exposed_name: str | None = None  # the tool's name as the agent sees it (namespaced), for messages

    def __post_init__(self) -> None:
        # normalise legs given as text or as policy `Leg` members, so records compare and store alike
        object.__setattr__(self, "legs_before", check_legs(self.legs_before))
        object.__setattr__(self, "legs_after", check_legs(self.legs_after))

    @classmethod
    def new(cls, *, principal: str, session_id: str, upstream: str, tool: str,
            arguments: Mapping[str, Any] | None, policy_revision: str, ttl_seconds: float = 3600.0,
            now: float | None = None, category: str | None = None, legs_before: Iterable[str] = (),
            legs_after: Iterable[str] = (), rule_ids: Iterable[str] = (), reasons: Iterable[str] = (),
            approver_hint: str | None = None, exposed_name: str | None = None) -> PendingApproval:
        """A fresh pending approval for one call: new id, hashed and previewed arguments."""
        created = time.time() if now is None else now
        return cls(
            id=new_approval_id(created), principal=principal, session_id=session_id, upstream=upstream,
            tool=tool, args_hash=args_hash(arguments), args_preview=canonical_args(arguments),
            policy_revision=policy_revision, category=category, legs_before=check_legs(legs_before),
            legs_after=check_legs(legs_after), rule_ids=tuple(rule_ids), reasons=tuple(reasons),
            created_at=created, expires_at=created + ttl_seconds, approver_hint=approver_hint,
            exposed_name=exposed_name,
        )

    @property
    def binding(self) -> str:
        """The exact-call key: principal, session, upstream, tool and argument hash."""
        return binding_key(self.principal, self.session_id, self.upstream, self.tool, self.args_hash)

    @property
    def decided(self) -> bool:
        """True once the approval left 'pending' (approved, denied, expired or executed)."""
        return self.state != "pending"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (legs as 'PU' strings, tuples as lists): for storage and the REST API."""
        out = asdict(self)
        out["legs_before"] = legs_text(self.legs_before)
        out["legs_after"] = legs_text(self.legs_after)
        out["rule_ids"] = list(self.rule_ids)
        out["reasons"] = list(self.reasons)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingApproval:
        """Inverse of `to_dict`; unknown keys are ignored so old records stay readable."""
        state = str(data.get("state", "pending"))
        if state not in APPROVAL_STATES:
            raise ValueError(f"unknown approval state {state!r}")
        decided_at = data.get("decided_at")
        return cls(
            id=str(data["id"]), principal=str(data["principal"]), session_id=str(data["session_id"]),
            upstream=str(data["upstream"]), tool=str(data["tool"]), args_hash=str(data["args_hash"]),
            args_preview=str(data.get("args_preview", "")), policy_revision=str(data["policy_revision"]),
            category=_opt_str(data.get("category")), legs_before=check_legs(str(data.get("legs_before") or "")),
            legs_after=check_legs(str(data.get("legs_after") or "")),
            rule_ids=tuple(str(x) for x in data.get("rule_ids") or ()),
            reasons=tuple(str(x) for x in data.get("reasons") or ()),
            created_at=float(data["created_at"]), expires_at=float(data["expires_at"]),
            state=cast(ApprovalState, state),  # checked against APPROVAL_STATES above
            decided_by=_opt_str(data.get("decided_by")),
            decided_at=None if decided_at in (None, "") else float(decided_at),
            reason=_opt_str(data.get("reason")), approver_hint=_opt_str(data.get("approver_hint")),
            exposed_name=_opt_str(data.get("exposed_name")),
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class DecideOutcome:
    """The result of `Store.decide`.

    status: 'approved' / 'denied' (this call won), 'conflict' (already decided: HTTP 409),
    'expired' (too late: 409; the approval is now marked expired), 'forbidden' (the approver is
    the requesting principal), 'not_found' (404). `approval` is the record after the call.
    """

    status: DecideStatus
    approval: PendingApproval | None = None
    changed: bool = field(default=False, compare=False)  # whether the store must write `approval`

    @property
    def won(self) -> bool:
        """True when this call decided the approval."""
        return self.status in ("approved", "denied")


def decide_transition(current: PendingApproval | None, approve: bool, approver: str, reason: str,
                      now: float) -> DecideOutcome:
    """The decision rule as a pure function; adapters apply it inside one atomic step.

    Order matters and is part of the contract: unknown, then self-approval, then already
    decided, then expired by the clock, then the decision itself.
    """
    if current is None:
        return DecideOutcome("not_found")
    if approver == current.principal:
        return DecideOutcome("forbidden", current)
    if current.state == "expired":
        return DecideOutcome("expired", current)
    if current.state != "pending":
        return DecideOutcome("conflict", current)
    if current.expires_at <= now:
        return DecideOutcome("expired", replace(current, state="expired", decided_at=now), changed=True)
    if approve:
        return DecideOutcome("approved", replace(current, state="approved", decided_by=approver, decided_at=now,
                                                 reason=reason), changed=True)
    return DecideOutcome("denied", replace(current, state="denied", decided_by=approver, decided_at=now,
                                           reason=reason), changed=True)


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
