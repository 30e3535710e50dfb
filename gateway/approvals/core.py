"""What the approvers' REST API and the web console share: who an approver is, and how a call is decided.

:class:`Approver` and the :class:`ApproverAuth` seam (:class:`TokenApproverAuth` reads ``name=token``
pairs from an env var; :class:`PrincipalApproverAuth` accepts any gateway
:class:`~gateway.identity.principal.Authenticator` whose principal has the ``approver`` role),
:class:`ApprovalsUISettings`, the :class:`Notifier` interface, and :func:`decide`: the one path both
:mod:`gateway.approvals.api` and :mod:`gateway.approvals.console` take to approve or deny.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.ports.records import PendingApproval
from gateway.ports.store import Store, StoreUnavailable
from gateway.telemetry.audit import EventType

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.identity.principal import Authenticator

log = logging.getLogger("triplock.approvals")

MAX_REASON = 2000
AuditHook = Callable[..., Any]  # audit(event_type, **fields); may return an awaitable
SessionHistory = Callable[[str], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]


@dataclass(frozen=True, slots=True)
class Approver:
    """A person allowed to decide held calls; ``name`` is recorded as ``decided_by``."""

    name: str
    via: str = "token"


class ApproverAuth(Protocol):
    """Turns a presented bearer credential into an :class:`Approver`, or None."""

    async def authenticate(self, token: str) -> Approver | None: ...


class TokenApproverAuth:
    """Static approver tokens: ``name=token`` pairs, compared in constant time."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Keyed by name so a duplicate token cannot silently shadow another approver.
        self._tokens = {name: token.encode() for name, token in tokens.items() if name and token}

    @classmethod
    def parse(cls, spec: str) -> TokenApproverAuth:
        """Parse ``"alice=tok1, bob=tok2"``; a pair without ``=`` is an error, not ignored."""
        tokens: dict[str, str] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, token = part.partition("=")
            if not sep or not name.strip() or not token.strip():
                raise ValueError("approver tokens must be comma-separated name=token pairs")
            tokens[name.strip()] = token.strip()
        return cls(tokens)

    @classmethod
    def from_env(cls, env_var: str = "TRIPLOCK_APPROVER_TOKENS") -> TokenApproverAuth:
        """Read the pairs from ``env_var``; unset means nobody can approve (fail closed)."""
        return cls.parse(os.environ.get(env_var, ""))

    def __len__(self) -> int:
        return len(self._tokens)

    async def authenticate(self, token: str) -> Approver | None:
        presented = token.encode()
        found: str | None = None
        # Compare against every entry (no early exit) so timing does not reveal which matched.
        for name, expected in self._tokens.items():
            if hmac.compare_digest(presented, expected):
                found = name
        return Approver(found) if found is not None else None


class PrincipalApproverAuth:
    """Adapter for the identity work: any authenticator whose principal holds ``role``."""

    def __init__(self, authenticator: Authenticator, role: str = "approver") -> None:
        self.authenticator = authenticator
        self.role = role

    async def authenticate(self, token: str) -> Approver | None:
        from gateway.identity.principal import Principal

        result = await self.authenticator.authenticate({"authorization": f"Bearer {token}"})
        if isinstance(result, Principal) and self.role in result.roles:
            return Approver(result.id, via=result.via)
        return None


class AnyApproverAuth:
    """The first of several authenticators that accepts the token (e.g. tokens, then identity)."""

    def __init__(self, *auths: ApproverAuth) -> None:
        self.auths = auths

    async def authenticate(self, token: str) -> Approver | None:
        for auth in self.auths:
            approver = await auth.authenticate(token)
            if approver is not None:
                return approver
        return None


@dataclass(frozen=True)
class ApprovalsUISettings:
    """What the REST API and the console need to know; see :meth:`from_settings`."""

    auth: ApproverAuth
    console_url: str = "http://127.0.0.1:8080/console"
    # Signs console session cookies. Per process by default, which logs approvers out on restart;
    # set TRIPLOCK_CONSOLE_SECRET when several gateway processes serve one console.
    cookie_secret: bytes = b""
    cookie_secure: bool = False
    session_seconds: float = 8 * 3600.0
    poll_seconds: float = 3.0

    def __post_init__(self) -> None:
        if not self.cookie_secret:
            object.__setattr__(self, "cookie_secret", os.urandom(32))

    @classmethod
    def from_settings(cls, settings: Settings, auth: ApproverAuth | None = None) -> ApprovalsUISettings:
        """Build from the gateway's config: console URL, approver tokens env var, cookie secret."""
        cfg = settings.approvals
        base = settings.server.public_url or f"http://{settings.server.host}:{settings.server.port}"
        console = cfg.console_url or base.rstrip("/") + "/console"
        secret = os.environ.get("TRIPLOCK_CONSOLE_SECRET", "").encode()
        return cls(
            auth=auth or TokenApproverAuth.from_env(cfg.approver_tokens_env),
            console_url=console,
            cookie_secret=secret,
            cookie_secure=console.startswith("https://"),
        )


class Notifier(Protocol):
    """Tells approvers about approvals; implementations must never block or raise."""

    def approval_requested(self, approval: PendingApproval, console_url: str) -> Any: ...

    def approval_decided(self, approval: PendingApproval, console_url: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """The outcome of one approve/deny attempt, already mapped to HTTP terms."""

    status: int
    code: str  # approved, denied, not_found, conflict, expired, forbidden, unavailable
    message: str
    approval: PendingApproval | None = None


_MESSAGES = {
    "not_found": (404, "No approval with this id."),
    "conflict": (409, "This approval was already decided."),
    "expired": (409, "This approval expired before a decision."),
    "forbidden": (403, "An approver cannot decide their own call."),
}


async def decide(store: Store, approval_id: str, approve: bool, approver: Approver, reason: str, *,
                 audit: AuditHook | None = None, notifier: Notifier | None = None,
                 console_url: str = "") -> DecisionResult:
    """Approve or deny through the store's atomic decide; audit and notify only the winner."""
    try:
        outcome = await store.decide(approval_id, approve, approver.name, reason, time.time())
    except StoreUnavailable:
        log.error("approval store unavailable while deciding %s", approval_id)
        return DecisionResult(503, "unavailable", "The approval store is unavailable; nothing was decided.")
    if not outcome.won:
        status, message = _MESSAGES[outcome.status]
        return DecisionResult(status, outcome.status, message, outcome.approval)
    approval = outcome.approval
    assert approval is not None  # a won decision always carries the record
    verb = "approved" if approve else "denied"
    if audit is not None:
        await call_audit(audit, EventType.APPROVAL_GRANTED if approve else EventType.APPROVAL_DENIED,
                         approval_id=approval.id, approver=approver.name, via=approver.via, reason=reason,
                         principal=approval.principal, session_id=approval.session_id,
                         upstream=approval.upstream, tool=approval.tool, args_hash=approval.args_hash)
    if notifier is not None:
        try:
            notifier.approval_decided(approval, console_url)
        except Exception:  # a notifier bug must not turn a recorded decision into an error
            log.exception("notifier failed for decision on %s", approval.id)
    return DecisionResult(200, outcome.status, f"{verb.capitalize()} by {approver.name}.", approval)


async def call_audit(audit: AuditHook, event_type: str, **fields: Any) -> None:
    """Call a sync or async audit hook; its failure is logged, the decision already stands."""
    try:
        result = audit(event_type, **fields)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("audit hook failed for %s", event_type)
