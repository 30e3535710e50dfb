"""What the gateway remembers of a principal or a session, shown and cleared over REST: ``/api/state``.

``GET /api/state?principal=P`` (or ``?session=S``) shows the legs and the trail (where each leg
came from, the untrusted values that arrived) kept for it; ``DELETE /api/state?principal=P``
(and/or ``&session=S``) forgets them, in every gateway process sharing the store, and is audited
(``state.cleared``). Callers authenticate like MCP clients and need the ``show_state`` or
``clear_state`` action (:mod:`gateway.identity.roles`; ``agents-admin`` has both). Answers: 400
without a principal or session, 401/403 auth, 503 store down.

Why operators need it: a principal's legs count for ``legs.window_seconds`` (an hour in the
presets), across sessions, so that nobody splits the trifecta over two sessions. When a person
knows a principal's earlier work was benign (a demo, a test), clearing is the honest way out,
and it leaves a record of who did it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.identity.principal import Authenticator, Principal
from gateway.identity.roles import AccessPolicy
from gateway.identity.suspension_api import authorized
from gateway.ports.store import StoreUnavailable
from gateway.telemetry.audit_hook import call_audit

log = logging.getLogger("triplock.state")

PATH = "/api/state"
_MAX_ID = 500

Show = Callable[[str | None, str | None], Awaitable[dict[str, Any]]]
"""``show(principal, session_id)``: legs and trail kept for them."""
Clear = Callable[[str | None, str | None], Awaitable[int]]
"""``clear(principal, session_id)``: forget them; how much was removed."""


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class StateApi:
    """Handlers of ``/api/state``; build with :func:`routes`."""

    def __init__(self, show: Show, clear: Clear, authenticator: Authenticator, access: AccessPolicy,
                 audit: Callable[..., Any] | None = None) -> None:
        self.show_state = show
        self.clear_state = clear
        self.authenticator = authenticator
        self.access = access
        self.audit = audit

    async def _caller(self, request: Request, action: str) -> Principal | Response:
        return await authorized(request, self.authenticator, self.access, action)

    @staticmethod
    def _subject(request: Request) -> tuple[str | None, str | None] | Response:
        principal = request.query_params.get("principal") or None
        session = request.query_params.get("session") or None
        if principal is None and session is None:
            return _error(400, "invalid_request", "give ?principal=ID and/or ?session=ID")
        for name, value in (("principal", principal), ("session", session)):
            if value is not None and (len(value) > _MAX_ID or not value.isprintable()):
                return _error(400, "invalid_request", f"'{name}' must be printable and at most {_MAX_ID} characters")
        return principal, session

    async def get(self, request: Request) -> Response:
        who = await self._caller(request, "show_state")
        if isinstance(who, Response):
            return who
        subject = self._subject(request)
        if isinstance(subject, Response):
            return subject
        try:
            return JSONResponse(await self.show_state(*subject))
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")

    async def delete(self, request: Request) -> Response:
        who = await self._caller(request, "clear_state")
        if isinstance(who, Response):
            return who
        subject = self._subject(request)
        if isinstance(subject, Response):
            return subject
        principal, session = subject
        try:
            cleared = await self.clear_state(principal, session)
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")
        await call_audit(self.audit, "state.cleared", principal=principal, session_id=session, by=who.id,
                           cleared=cleared)
        log.warning("state of %s cleared by %s", principal or f"session {session}", who.id)
        return JSONResponse({"principal": principal, "session": session, "cleared": cleared})


def routes(show: Show, clear: Clear, authenticator: Authenticator, access: AccessPolicy,
           audit: Callable[..., Any] | None = None) -> list[Route]:
    """The Starlette routes of the state API."""
    api = StateApi(show, clear, authenticator, access, audit)
    return [Route(PATH, api.get, methods=["GET"]), Route(PATH, api.delete, methods=["DELETE"])]
