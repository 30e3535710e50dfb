"""The approvers' REST API under ``/api/approvals``, and :func:`build_routes` (it and the console).

``GET /api/approvals`` lists (filters: state, upstream, tool, principal, limit), ``GET
/api/approvals/{id}`` shows one, ``POST /api/approvals/{id}/approve`` and ``/deny`` decide it with
a JSON ``{"reason": ...}``. An approval may say what it covers: ``{"scope": "once" | "session" |
"principal_tool", "minutes": N}`` (default ``once``; ``minutes`` only, and always, with
``principal_tool``, at most ``approvals.max_scope_minutes``); a bad choice is 400 with ``field``
naming the input. Each approval's JSON carries ``scope``, ``scope_until`` and ``abandoned_at``
(when the waiting agent stopped waiting; it may still be approved, and its repeat then runs).
Every route needs an approver's bearer credential (401 otherwise): an
approver token, or the API key or IdP access token of a principal whose roles may approve.

An approver sees and decides only the categories its roles' ``approve`` patterns cover: the others
are left out of the list, and showing or deciding one is 403 ``category_forbidden``.

Answers: unknown id 404; already decided or expired 409; approver == requester 403; store down
503. The decision itself is the store's atomic compare-and-set, so of two approvers racing, one
wins and the other gets 409: nothing here re-implements that rule.

What the console shares with this API (approvers and their authentication, the UI settings, the
notifier interface, :func:`~gateway.approvals.core.decide`) lives in :mod:`gateway.approvals.core`;
it is re-exported here for the callers that import it from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.approvals.console import Console
from gateway.approvals.core import (
    MAX_REASON,
    AnyApproverAuth,
    ApprovalsUISettings,
    Approver,
    ApproverAuth,
    AuditHook,
    DecisionResult,
    Notifier,
    PrincipalApproverAuth,
    ScopeChoice,
    ScopeError,
    SessionHistory,
    TokenApproverAuth,
    call_audit,
    category_forbidden,
    decide,
    may_decide,
    parse_scope,
)
from gateway.approvals.pins_api import PinAdmins
from gateway.guard.pin_book import PinBook
from gateway.ports.records import APPROVAL_STATES, PendingApproval
from gateway.ports.store import Store, StoreUnavailable

MAX_LIMIT = 1000
_NEED_APPROVER = "An approver's bearer token (approver token, API key or access token) is required."


def approval_json(approval: PendingApproval) -> dict[str, Any]:
    """The REST form of an approval: the store's JSON-ready dict (legs as "PU" strings)."""
    return approval.to_dict()


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
        approver = await self._approver(request)
        if approver is None:
            return _error(401, "unauthorized", _NEED_APPROVER)
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

        async def fetch(n: int) -> list[PendingApproval]:
            return await self.store.list_approvals(
                state=state,  # narrowed to ApprovalState by the check above
                upstream=q.get("upstream") or None, tool=q.get("tool") or None,
                principal=q.get("principal") or None, limit=n)

        try:
            rows = await fetch(limit)
            visible = [a for a in rows if may_decide(self.settings.access, approver, a)]
            if len(visible) < len(rows) == limit:
                # Others' categories took part of the page: look further so the page is as full as it can be.
                visible = [a for a in await fetch(MAX_LIMIT) if may_decide(self.settings.access, approver, a)][:limit]
        except StoreUnavailable:
            return _error(503, "unavailable", "The approval store is unavailable.")
        return JSONResponse({"approvals": [approval_json(a) for a in visible]})

    async def show(self, request: Request) -> Response:
        approver = await self._approver(request)
        if approver is None:
            return _error(401, "unauthorized", _NEED_APPROVER)
        try:
            approval = await self.store.get_approval(request.path_params["approval_id"])
        except StoreUnavailable:
            return _error(503, "unavailable", "The approval store is unavailable.")
        if approval is None:
            return _error(404, "not_found", "No approval with this id.")
        if not may_decide(self.settings.access, approver, approval):
            refused = category_forbidden(approval)
            return _error(refused.status, refused.code, refused.message)
        return JSONResponse(approval_json(approval))

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, approve=True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: Request, approve: bool) -> Response:
        approver = await self._approver(request)
        if approver is None:
            return _error(401, "unauthorized", _NEED_APPROVER)
        body = await _read_decision(request, approve, self.settings.max_scope_minutes)
        if isinstance(body, Response):
            return body
        reason, scope = body
        result = await decide(self.store, request.path_params["approval_id"], approve, approver, reason,
                              access=self.settings.access, audit=self.audit, notifier=self.notifier,
                              console_url=self.settings.console_url, scope=scope)
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


async def _read_decision(request: Request, approve: bool, max_minutes: int) -> tuple[str, ScopeChoice] | Response:
    """The optional ``reason``, ``scope`` and ``minutes`` from a JSON body; an empty body means none."""
    body = await request.body()
    if not body.strip():
        return "", ScopeChoice()
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
        return _error(400, "bad_request", "reason must be a string", field="reason")
    if len(reason) > MAX_REASON:
        return _error(400, "bad_request", f"reason is longer than {MAX_REASON} characters", field="reason")
    try:
        scope = parse_scope(data.get("scope"), data.get("minutes"), max_minutes, approve=approve)
    except ScopeError as exc:
        return _error(400, "bad_request", str(exc), field=exc.field)
    return reason.strip(), scope


def build_routes(store: Store, settings: ApprovalsUISettings, *, audit: AuditHook | None = None,
                 session_history: SessionHistory | None = None,
                 notifier: Notifier | None = None, pins: PinBook | None = None,
                 pin_admins: PinAdmins | None = None) -> list[BaseRoute]:
    """All approver-facing routes: the REST API and the web console (with its changed-tools page
    when ``pins`` is given), ready to mount."""
    api = ApprovalsApi(store, settings, audit=audit, notifier=notifier)
    console = Console(store, settings, audit=audit, session_history=session_history, notifier=notifier,
                      pins=pins, pin_admins=pin_admins)
    return [*api.routes(), *console.routes()]


__all__ = [
    "MAX_LIMIT",
    "MAX_REASON",
    "AnyApproverAuth",
    "ApprovalsApi",
    "ApprovalsUISettings",
    "Approver",
    "ApproverAuth",
    "AuditHook",
    "DecisionResult",
    "Notifier",
    "PrincipalApproverAuth",
    "SessionHistory",
    "TokenApproverAuth",
    "approval_json",
    "bearer_token",
    "build_routes",
    "call_audit",
    "decide",
]
