"""What the approvers' REST API and the web console share: who an approver is, and how a call is decided.

Approvers are principals. :class:`Approver` carries a principal id and its roles, whichever way it
logged in: :class:`PrincipalApproverAuth` accepts the gateway's own bearer credentials (a JWT from
the IdP, an API key) of any principal whose roles grant approval rights (the ``approver`` role, or
any role with ``approve`` patterns); :class:`TokenApproverAuth` keeps the static ``name=token``
pairs for automation, and a token named ``ops`` *is* principal ``ops`` with the ``approver`` role.
One namespace, so the store's rule "the approver is never the requester" holds across both.

Per-role approval categories are enforced here: :func:`may_decide` (what an approver sees) and
:func:`decide` (the one path both :mod:`gateway.approvals.api` and :mod:`gateway.approvals.console`
take to approve or deny) consult :meth:`~gateway.identity.roles.AccessPolicy.may_approve`.

The approver also chooses what an approval covers (:func:`parse_scope`, one rule for the API and
the console): ``once`` (the default), ``session`` or ``principal_tool`` for N minutes, at most
``approvals.max_scope_minutes``; :func:`scope_text` says it in words for the console and the CLI.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from gateway.identity.roles import AccessPolicy
from gateway.ports.records import APPROVAL_SCOPES, ApprovalScope, PendingApproval
from gateway.ports.store import Store, StoreUnavailable
from gateway.telemetry.audit import EventType
from gateway.telemetry.audit_hook import call_audit

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.identity.principal import Authenticator

log = logging.getLogger("triplock.approvals")

MAX_REASON = 2000
AuditHook = Callable[..., Any]  # audit(event_type, **fields); may return an awaitable
SessionHistory = Callable[[str, str], "list[dict[str, Any]] | Awaitable[list[dict[str, Any]]]"]
"""``history(session_id, principal)``: what the session (and its principal) did before a held call."""


TOKEN_ROLES = frozenset({"approver"})


@dataclass(frozen=True, slots=True)
class Approver:
    """A principal allowed to decide held calls; ``name`` is its principal id, recorded as ``decided_by``."""

    name: str
    via: str = "token"  # token | api_key | jwt
    roles: frozenset[str] = TOKEN_ROLES

    @property
    def groups(self) -> frozenset[str]:
        """No groups: the roles were resolved at login (an AccessPolicy subject needs the attribute)."""
        return frozenset()


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
    """The gateway's authenticator (JWT, API keys): principals whose roles grant approval rights."""

    def __init__(self, authenticator: Authenticator, access: AccessPolicy | None = None) -> None:
        self.authenticator = authenticator
        self.access = access or AccessPolicy()

    async def authenticate(self, token: str) -> Approver | None:
        from gateway.identity.principal import Principal

        result = await self.authenticator.authenticate({"authorization": f"Bearer {token}"})
        if isinstance(result, Principal) and self.access.approves_anything(result):
            return Approver(result.id, via=result.via, roles=self.access.roles_of(result))
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
    # Which categories each approver's roles may decide (RoleConfig.approve patterns).
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # The longest a principal_tool approval may last (approvals.max_scope_minutes).
    max_scope_minutes: int = 60

    def __post_init__(self) -> None:
        if not self.cookie_secret:
            object.__setattr__(self, "cookie_secret", os.urandom(32))

    @classmethod
    def from_settings(cls, settings: Settings, auth: ApproverAuth | None = None, *,
                      authenticator: Authenticator | None = None,
                      access: AccessPolicy | None = None) -> ApprovalsUISettings:
        """Build from the gateway's config: console URL, who may log in, cookie secret.

        Approver tokens always; with ``authenticator`` (and ``auth.mode`` not ``none``, where every
        request is the local developer) also the principals it accepts whose roles may approve.
        """
        cfg = settings.approvals
        base = settings.server.public_url or f"http://{settings.server.host}:{settings.server.port}"
        console = cfg.console_url or base.rstrip("/") + "/console"
        secret = os.environ.get("TRIPLOCK_CONSOLE_SECRET", "").encode()
        access = access or AccessPolicy.from_config(settings.auth)
        if auth is None:
            auth = TokenApproverAuth.from_env(cfg.approver_tokens_env)
            if authenticator is not None and settings.auth.mode != "none":
                auth = AnyApproverAuth(auth, PrincipalApproverAuth(authenticator, access))
        return cls(
            auth=auth,
            console_url=console,
            cookie_secret=secret,
            cookie_secure=console.startswith("https://"),
            access=access,
            max_scope_minutes=cfg.max_scope_minutes,
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


@dataclass(frozen=True, slots=True)
class ScopeChoice:
    """What the approver chose an approval to cover; ``minutes`` only for ``principal_tool``."""

    scope: ApprovalScope = "once"
    minutes: int | None = None

    def until(self, now: float) -> float | None:
        """When a ``principal_tool`` approval decided at ``now`` stops; None for the other scopes."""
        return now + self.minutes * 60 if self.scope == "principal_tool" and self.minutes else None


class ScopeError(ValueError):
    """A scope choice that cannot be accepted; ``field`` names the input at fault (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_scope(scope: Any, minutes: Any, max_minutes: int, *, approve: bool = True) -> ScopeChoice:
    """Check an approver's scope choice (JSON values or form strings); ScopeError names the bad field.

    No scope means ``once``. ``minutes`` (a whole number from 1 to ``max_minutes``) belongs to
    ``principal_tool`` and only to it. A denial has no scope: it is final for this call.
    """
    if scope in (None, ""):
        scope = "once"
    if not isinstance(scope, str) or scope not in APPROVAL_SCOPES:
        raise ScopeError("scope", f"scope must be one of {', '.join(APPROVAL_SCOPES)}")
    if not approve and scope != "once":
        raise ScopeError("scope", "scope applies to an approval only; a denial is final for this call")
    if scope != "principal_tool":
        if minutes not in (None, ""):
            raise ScopeError("minutes", "minutes applies to scope principal_tool only")
        return ScopeChoice(cast(ApprovalScope, scope))  # checked against APPROVAL_SCOPES above
    bad = f"minutes must be a whole number from 1 to {max_minutes} for scope principal_tool"
    if isinstance(minutes, str) and minutes.strip().isdigit():
        minutes = int(minutes.strip())
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= max_minutes:
        raise ScopeError("minutes", bad)
    return ScopeChoice("principal_tool", minutes)


def scope_from_form(form: Mapping[str, str], approve: bool, max_minutes: int) -> ScopeChoice:
    """The console form's choice: its scope radio and minutes belong to the approve button only
    (a denial ignores them), and the minutes field only to ``principal_tool``."""
    if not approve:
        return ScopeChoice()
    chosen = form.get("scope")
    return parse_scope(chosen, form.get("minutes") if chosen == "principal_tool" else None, max_minutes)


def scope_text(approval: PendingApproval) -> str:
    """What an approval covers, in words, for approvers (the console, the CLI)."""
    until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(approval.scope_until or approval.expires_at))
    tool = approval.exposed_name or f"{approval.upstream}/{approval.tool}"
    if approval.scope == "session":
        return f"this call with these arguments, repeatedly, in session {approval.session_id}, until {until}"
    if approval.scope == "principal_tool":
        return f"any call of {tool} by {approval.principal}, any arguments, until {until}"
    return "this exact call, once (from any session of this principal)"


async def standing_approvals(store: Store, access: AccessPolicy, approver: Approver,
                             limit: int = 200) -> list[PendingApproval]:
    """Approvals in force that cover more than one call (scope ``session`` or ``principal_tool``),
    of the categories this approver may decide, newest first: what the console lists beside the held calls."""
    now = time.time()
    rows = await store.list_approvals(state="approved", limit=limit)
    return [a for a in rows if a.scope != "once" and a.expires_at > now and may_decide(access, approver, a)]


def may_decide(access: AccessPolicy, approver: Approver, approval: PendingApproval) -> bool:
    """Whether the approver's roles may decide calls of this approval's category (lists hide the rest)."""
    return access.may_approve(approver, approval.category)


def category_forbidden(approval: PendingApproval) -> DecisionResult:
    """The 403 for an approval outside the approver's categories."""
    category = approval.category or "uncategorized"
    return DecisionResult(403, "category_forbidden",
                          f"Your roles do not allow deciding calls of category {category!r}.")


async def decide(store: Store, approval_id: str, approve: bool, approver: Approver, reason: str, *,
                 access: AccessPolicy | None = None, audit: AuditHook | None = None,
                 notifier: Notifier | None = None, console_url: str = "",
                 scope: ScopeChoice | None = None) -> DecisionResult:
    """Approve or deny through the store's atomic decide; audit and notify only the winner.

    The approver's roles must cover the call's category (``access``; the default roles when None).
    A category never changes once a call is held, so checking it before the atomic decide is sound.
    ``scope`` is what an approval covers (checked by :func:`parse_scope`; default: this call once).
    """
    scope = scope or ScopeChoice()
    access = access or AccessPolicy()
    try:
        current = await store.get_approval(approval_id)
        if current is None:
            status, message = _MESSAGES["not_found"]
            return DecisionResult(status, "not_found", message)
        if not may_decide(access, approver, current):
            return category_forbidden(current)
        now = time.time()
        outcome = await store.decide(approval_id, approve, approver.name, reason, now,
                                     scope=scope.scope if approve else "once", scope_until=scope.until(now))
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
        scoped = {"scope": approval.scope, "scope_until": approval.scope_until} if approve else {}
        await call_audit(audit, EventType.APPROVAL_GRANTED if approve else EventType.APPROVAL_DENIED,
                         approval_id=approval.id, approver=approver.name, via=approver.via,
                         approver_roles=sorted(approver.roles), reason=reason,
                         principal=approval.principal, session_id=approval.session_id,
                         upstream=approval.upstream, tool=approval.tool, args_hash=approval.args_hash, **scoped)
    if notifier is not None:
        try:
            notifier.approval_decided(approval, console_url)
        except Exception:  # a notifier bug must not turn a recorded decision into an error
            log.exception("notifier failed for decision on %s", approval.id)
    return DecisionResult(200, outcome.status, f"{verb.capitalize()} by {approver.name}.", approval)


