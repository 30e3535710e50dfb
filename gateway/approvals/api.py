"""The approvers' REST API under ``/api/approvals``, and what the console shares with it.

``GET /api/approvals`` lists (filters: state, upstream, tool, principal, limit), ``GET
/api/approvals/{id}`` shows one, ``POST /api/approvals/{id}/approve`` and ``/deny`` decide it with
a JSON ``{"reason": ...}``. Every route needs an approver's bearer token (401 otherwise).

Answers: unknown id 404; already decided or expired 409; approver == requester 403; store down
503. The decision itself is the store's atomic compare-and-set, so of two approvers racing, one
wins and the other gets 409: nothing here re-implements that rule.

Approver authentication is the small :class:`ApproverAuth` seam: :class:`TokenApproverAuth` reads
``name=token`` pairs from an env var today; :class:`PrincipalApproverAuth` accepts any gateway
:class:`~gateway.identity.principal.Authenticator` whose principal has the ``approver`` role.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.ports.store import APPROVAL_STATES, PendingApproval, Store, StoreUnavailable
from gateway.telemetry.audit import EventType

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.identity.principal import Authenticator

log = logging.getLogger("triplock.approvals")

MAX_REASON = 2000
MAX_LIMIT = 1000
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


def approval_json(approval: PendingApproval) -> dict[str, Any]:
    """The REST form of an approval: the store's JSON-ready dict (legs as "PU" strings)."""
    return approval.to_dict()


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


def bearer_token(request: Request) -> str | None:
    """The token from ``Authorization: Bearer <token>``, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="triplock-approvals"'} if status == 401 else None
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


class ApprovalsApi:
    """Request handlers; one instance per gateway, holding the store and hooks."""

    def __init__(self, store: Store, settings: ApprovalsUISettings, *, audit: AuditHook | None = None,
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.settings = settings
        self.audit = audit
        self.notifier = notifier

    async def _approver(self, request: Request) -> Approver | None:
        token = bearer_token(request)
        return None if token is None else await self.settings.auth.authenticate(token)

    async def list(self, request: Request) -> Response:
        if await self._approver(request) is None:
            return _error(401, "unauthorized", "An approver bearer token is required.")
        q = request.query_params
        state = q.get("state") or None
        if state is not None and state not in APPROVAL_STATES:
            return _error(400, "bad_request", f"state must be one of {', '.join(APPROVAL_STATES)}")
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            return _error(400, "bad_request", "limit must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, "bad_request", f"limit must be between 1 and {MAX_LIMIT}")
        try:
            rows = await self.store.list_approvals(
                state=state,  # narrowed to ApprovalState by the check above
                upstream=q.get("upstream") or None, tool=q.get("tool") or None,
                principal=q.get("principal") or None, limit=limit)
        except StoreUnavailable:
            return _error(503, "unavailable", "The approval store is unavailable.")
        return JSONResponse({"approvals": [approval_json(a) for a in rows]})

    async def show(self, request: Request) -> Response:
        if await self._approver(request) is None:
            return _error(401, "unauthorized", "An approver bearer token is required.")
        try:
            approval = await self.store.get_approval(request.path_params["approval_id"])
        except StoreUnavailable:
            return _error(503, "unavailable", "The approval store is unavailable.")
        if approval is None:
            return _error(404, "not_found", "No approval with this id.")
        return JSONResponse(approval_json(approval))

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, approve=True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: Request, approve: bool) -> Response:
        approver = await self._approver(request)
        if approver is None:
            return _error(401, "unauthorized", "An approver bearer token is required.")
        reason = await _read_reason(request)
        if isinstance(reason, Response):
            return reason
        result = await decide(self.store, request.path_params["approval_id"], approve, approver, reason,
                              audit=self.audit, notifier=self.notifier, console_url=self.settings.console_url)
        if result.status != 200:
            extra = {"approval": approval_json(result.approval)} if result.approval is not None else {}
            return _error(result.status, result.code, result.message, **extra)
        assert result.approval is not None
        return JSONResponse(approval_json(result.approval))

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/approvals", self.list, methods=["GET"]),
            Route("/api/approvals/{approval_id}", self.show, methods=["GET"]),
            Route("/api/approvals/{approval_id}/approve", self.approve, methods=["POST"]),
            Route("/api/approvals/{approval_id}/deny", self.deny, methods=["POST"]),
        ]


async def _read_reason(request: Request) -> str | Response:
    """The optional ``reason`` from a JSON body; an empty body means no reason."""
    body = await request.body()
    if not body.strip():
        return ""
    try:
        data = await request.json()
    except ValueError:
        return _error(400, "bad_request", 'body must be JSON like {"reason": "..."}')
    if not isinstance(data, dict):
        return _error(400, "bad_request", 'body must be a JSON object like {"reason": "..."}')
    reason = data.get("reason", "")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        return _error(400, "bad_request", "reason must be a string")
    if len(reason) > MAX_REASON:
        return _error(400, "bad_request", f"reason is longer than {MAX_REASON} characters")
    return reason.strip()


def build_routes(store: Store, settings: ApprovalsUISettings, *, audit: AuditHook | None = None,
                 session_history: SessionHistory | None = None,
                 notifier: Notifier | None = None) -> list[BaseRoute]:
    """All approver-facing routes: the REST API and the web console, ready to mount."""
    from gateway.approvals.console import Console

    api = ApprovalsApi(store, settings, audit=audit, notifier=notifier)
    console = Console(store, settings, audit=audit, session_history=session_history, notifier=notifier)
    return [*api.routes(), *console.routes()]
