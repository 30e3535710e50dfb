"""The frozen records the state store exchanges, and the pure helpers that build and check them.

`PendingApproval` (one held call and its decision), `CallStateRecord` (what one tools/call reads),
`DecideOutcome` and `decide_transition` (the approve/deny rule every adapter applies atomically),
and the canonical forms they rest on: legs as 'P'/'U'/'E', the arguments' hash, approval ids.

An approval binds principal, upstream, tool and the arguments' hash (and the policy revision it was
decided under), not the MCP session: clients such as `codex exec` open a new session per run, and
"approve, then repeat the same call" must work across them. The approver picks its scope
(`APPROVAL_SCOPES`): `once` (this exact call, single use), `session` (this exact call, repeatedly,
from the session it came from) or `principal_tool` (this tool, any arguments, this principal, for
the minutes the approver chose). `PendingApproval.covers` is the one rule every store applies.
No I/O and no asyncio: the interface that stores these is `gateway.ports.store.Store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

import orjson

ApprovalState = Literal["pending", "approved", "denied", "expired", "executed"]
APPROVAL_STATES: tuple[ApprovalState, ...] = ("pending", "approved", "denied", "expired", "executed")
ApprovalScope = Literal["once", "session", "principal_tool"]
APPROVAL_SCOPES: tuple[ApprovalScope, ...] = ("once", "session", "principal_tool")
DecideStatus = Literal["approved", "denied", "conflict", "expired", "forbidden", "not_found"]
VALID_LEGS = frozenset({"P", "U", "E"})


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


def binding_key(*parts: str) -> str:
    """An unambiguous key for a tuple of strings (JSON, so no separator can be smuggled in).

    An approval's exact-call key is ``binding_key(principal, upstream, tool, args_hash)``
    (`PendingApproval.binding`), its tool key ``binding_key(principal, upstream, tool)``
    (`PendingApproval.tool_binding`, what a `principal_tool` scope covers).
    """
    return json.dumps(list(parts), separators=(",", ":"))


def check_scope(scope: str) -> ApprovalScope:
    """`scope` if it is one of `APPROVAL_SCOPES`; ValueError otherwise (a typo must not widen anything)."""
    if scope not in APPROVAL_SCOPES:
        raise ValueError(f"unknown approval scope {scope!r}; scopes are {', '.join(APPROVAL_SCOPES)}")
    return cast(ApprovalScope, scope)


@dataclass(frozen=True, slots=True)
class CallStateRecord:
    """What the policy needs from the store for one tools/call, read in one round trip."""

    legs: frozenset[str] = frozenset()
    tool_used_before: bool = False
    pinned_hash: str | None = None
    principal_legs: frozenset[str] = frozenset()  # the principal's legs over its window, when asked for


@dataclass(frozen=True, slots=True)
class PinRecord:
    """One pinned tool: the definition hash its calls must match, who pinned it and when."""

    upstream: str
    tool: str
    definition_hash: str
    pinned_by: str
    pinned_at: float


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
    scope: ApprovalScope = "once"  # what an approval covers (see the module docstring); chosen by the approver
    scope_until: float | None = None  # set on approval: when it stops covering calls (== expires_at from then on)
    abandoned_at: float | None = None  # when the waiting client cancelled or went away (still decidable)

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
        """The exact-call key: principal, upstream, tool and argument hash (not the session)."""
        return binding_key(self.principal, self.upstream, self.tool, self.args_hash)

    @property
    def tool_binding(self) -> str:
        """The tool key a `principal_tool` scope covers: principal, upstream and tool."""
        return binding_key(self.principal, self.upstream, self.tool)

    def covers(self, principal: str, session_id: str, upstream: str, tool: str, args_digest: str) -> bool:
        """Whether this approval's scope covers that call (state, revision and time are `usable`'s).

        Never broader than what the approver saw: always this principal and this tool; the exact
        arguments unless the scope is `principal_tool`; the session the call came from if `session`.
        """
        if principal != self.principal or upstream != self.upstream or tool != self.tool:
            return False
        if self.scope == "principal_tool":
            return True
        return args_digest == self.args_hash and (self.scope == "once" or session_id == self.session_id)

    def usable(self, policy_revision: str, now: float) -> bool:
        """Approved, decided under this policy revision, and neither expired nor past its scope."""
        return (self.state == "approved" and self.policy_revision == policy_revision and self.expires_at > now
                and (self.scope_until is None or self.scope_until > now))

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
            scope=check_scope(str(data.get("scope") or "once")),  # records written before scopes: once
            scope_until=_opt_float(data.get("scope_until")), abandoned_at=_opt_float(data.get("abandoned_at")),
        )


def _opt_float(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


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


def check_decision_scope(scope: str, scope_until: float | None, now: float) -> ApprovalScope:
    """The scope of an approval being decided, checked: known, and `principal_tool` with a future end."""
    checked = check_scope(scope)
    if checked == "principal_tool" and (scope_until is None or scope_until <= now):
        raise ValueError("a principal_tool approval needs scope_until in the future")
    return checked


def decide_transition(current: PendingApproval | None, approve: bool, approver: str, reason: str,
                      now: float, scope: str = "once", scope_until: float | None = None) -> DecideOutcome:
    """The decision rule as a pure function; adapters apply it inside one atomic step.

    Order matters and is part of the contract: unknown, then self-approval, then already
    decided, then expired by the clock, then the decision itself. An approval records its
    `scope` and `scope_until`: the approver's `scope_until` for `principal_tool` (which then is
    the record's new `expires_at` too), the approval's own expiry otherwise. A denial has no scope.
    """
    checked: ApprovalScope = check_decision_scope(scope, scope_until, now) if approve else "once"
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
        until = scope_until if checked == "principal_tool" and scope_until is not None else current.expires_at
        return DecideOutcome("approved", replace(current, state="approved", decided_by=approver, decided_at=now,
                                                 reason=reason, scope=checked, scope_until=until,
                                                 expires_at=until), changed=True)
    return DecideOutcome("denied", replace(current, state="denied", decided_by=approver, decided_at=now,
                                           reason=reason), changed=True)
