"""The suspension kill-switch (control 6.5 of seed 000) as a REST API.

``POST /api/suspensions`` ``{"target": "agent:X", "reason": "..."}`` suspends; ``DELETE
/api/suspensions/{target}`` resumes; ``GET /api/suspensions`` lists. Callers authenticate like
MCP clients (same bearer tokens) and need the ``suspend``/``resume``/``list_suspensions``
actions of :mod:`gateway.identity.roles`.

A suspension takes effect on the next call: the pipeline reads ``store.suspended()`` (kept in
memory and current across processes by the store) and the policy denies. Calls of the target
already waiting for a human are denied here too, so nobody approves them by mistake afterwards.
Both suspending and resuming are audit events.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.identity.principal import Authenticator, AuthFailure, Principal
from gateway.identity.roles import AccessPolicy
from gateway.ports.records import PendingApproval
from gateway.ports.store import Store, StoreUnavailable
from gateway.telemetry.audit_hook import call_audit

log = logging.getLogger("triplock.suspension")

AuditHook = Callable[..., Any]
"""``audit(event_type, **fields)``; may return an awaitable."""

TARGET_KINDS = ("agent", "principal", "upstream", "tool", "resource", "prompt")
# A resource is named by its URI, which may be long: 2,000 characters, the common URL limit.
_TARGET_RE = re.compile(
    r"^(?:(agent|principal|upstream|tool|prompt):([^\s\x00-\x1f\x7f]{1,200})"
    r"|(resource):([^\s\x00-\x1f\x7f]{1,2000}))$"
)
_MAX_REASON = 500
PATH = "/api/suspensions"


def check_target(target: Any) -> str:
    """A valid suspension id ('agent:X', 'principal:Y', 'upstream:Z', 'tool:U__T', 'resource:U__URI',
    'prompt:U__P'), else ValueError."""
    if not isinstance(target, str) or not _TARGET_RE.match(target):
        raise ValueError("'target' must be 'agent:ID', 'principal:ID', 'upstream:NAME', 'tool:UPSTREAM__TOOL', "
                         "'resource:UPSTREAM__URI' or 'prompt:UPSTREAM__PROMPT'")
    return target


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _holds_of(target: str, approval: PendingApproval) -> bool:
    """Whether a pending approval belongs to the suspended target."""
    kind, _, ident = target.partition(":")
    if kind == "principal":
        return approval.principal == ident
    if kind == "agent":
        # Approvals record the principal; an agent's own principal usually carries its id.
        return getattr(approval, "agent", None) == ident or approval.principal == ident
    if kind == "upstream":
        return approval.upstream == ident
    return f"{approval.upstream}__{approval.tool}" == ident


async def authorized(request: Request, authenticator: Authenticator, access: AccessPolicy,
                     action: str) -> Principal | Response:
    """The caller of an admin REST request if its roles grant ``action``, else the answer to send
    (401 with the authenticator's challenge, or 403 naming the action)."""
    who = await authenticator.authenticate({k.lower(): v for k, v in request.headers.items()})
    if isinstance(who, AuthFailure):
        return JSONResponse(who.body, status_code=who.status, headers=dict(who.headers))
    if not access.may(who, action):
        return _error(403, "forbidden", f"principal {who.id!r} may not {action.replace('_', ' ')}")
    return who


class SuspensionApi:
    """Handlers for the three routes; build with :func:`routes`."""

    def __init__(self, store: Store, authenticator: Authenticator, access: AccessPolicy,
                 audit: AuditHook | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.authenticator = authenticator
        self.access = access
        self.audit = audit
        self._clock = clock

    async def _caller(self, request: Request, action: str) -> Principal | Response:
        return await authorized(request, self.authenticator, self.access, action)

    async def _record(self, event_type: str, **fields: Any) -> None:
        # The suspension already took effect: a broken audit sink must not undo the kill-switch.
        await call_audit(self.audit, event_type, **fields)

    async def create(self, request: Request) -> Response:
        who = await self._caller(request, "suspend")
        if isinstance(who, Response):
            return who
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            target = check_target(body.get("target"))
            reason = body.get("reason") or ""
            if not isinstance(reason, str) or len(reason) > _MAX_REASON:
                raise ValueError(f"'reason' must be a string of at most {_MAX_REASON} characters")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return _error(400, "invalid_request", str(exc))
        try:
            await self.store.suspend(target, who.id, reason)
            denied = await self._deny_pending(target, who.id, reason)
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")
        await self._record("suspension.created", target=target, by=who.id, reason=reason, denied_approvals=denied)
        log.warning("%s suspended by %s: %s", target, who.id, reason)
        return JSONResponse({"target": target, "suspended": True, "reason": reason, "denied_approvals": denied},
                            status_code=201)

    async def _deny_pending(self, target: str, by: str, reason: str) -> list[str]:
        """Deny the target's calls still waiting for a human; returns their approval ids."""
        kind, _, ident = target.partition(":")
        principal = ident if kind == "principal" else None
        denied: list[str] = []
        for approval in await self.store.list_approvals(state="pending", principal=principal, limit=1000):
            if not _holds_of(target, approval):
                continue
            outcome = await self.store.decide(approval.id, False, by, f"suspended: {reason}".strip(),
                                              self._clock())
            if outcome.won:
                denied.append(approval.id)
        return denied

    async def delete(self, request: Request) -> Response:
        who = await self._caller(request, "resume")
        if isinstance(who, Response):
            return who
        try:
            target = check_target(request.path_params["target"])
        except ValueError as exc:
            return _error(400, "invalid_request", str(exc))
        try:
            was = target in self.store.suspended()
            await self.store.resume(target, who.id)
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")
        await self._record("suspension.lifted", target=target, by=who.id, was_suspended=was)
        log.warning("%s resumed by %s", target, who.id)
        return JSONResponse({"target": target, "suspended": False, "was_suspended": was})

    async def list(self, request: Request) -> Response:
        who = await self._caller(request, "list_suspensions")
        if isinstance(who, Response):
            return who
        try:
            current = sorted(self.store.suspended())
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")
        return JSONResponse({"suspensions": current})


def routes(store: Store, authenticator: Authenticator, access: AccessPolicy,
           audit: AuditHook | None = None) -> list[Route]:
    """The Starlette routes of the suspension API."""
    api = SuspensionApi(store, authenticator, access, audit)
    return [
        Route(PATH, api.list, methods=["GET"]),
        Route(PATH, api.create, methods=["POST"]),
        Route(PATH + "/{target:path}", api.delete, methods=["DELETE"]),
    ]
