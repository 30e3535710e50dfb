"""Approving new tools and re-approving changed tool definitions over REST: ``/api/pins``.

``GET /api/pins`` lists every pin (who pinned it, when), the tools withheld because their
definition changed, and the ``new`` tools nobody reviewed yet (no pin, no first-use record);
``GET /api/pins/review?upstream=U&tool=T`` shows one changed tool's pinned
and current definitions and their unified diff; ``POST /api/pins/approve`` with
``{"upstream": U, "tool": T, "hash": H}`` re-pins it, where ``H`` is the current hash the
review showed: a definition that changed again since is refused (409), so nobody approves a
definition they did not see. Callers authenticate like MCP clients and need the ``pin`` action
(:mod:`gateway.identity.roles`). Answers: 401/403 auth, 404 unknown, 409 nothing to approve or
stale, 503 store down. Approving a ``new`` tool (with the ``current_hash`` the listing showed)
approves it once for everyone: its first use is recorded and its definition pinned.

:class:`PinAdmins` answers the console's question "may this token's holder re-approve pins?".
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.approvals.core import Approver
from gateway.guard.pin_book import PinBook
from gateway.identity.principal import Authenticator, AuthFailure, Principal
from gateway.identity.roles import AccessPolicy
from gateway.ports.store import StoreUnavailable

PATH = "/api/pins"
_MAX_FIELD = 1000


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


class PinAdmins:
    """Who may re-approve pins: a principal whose roles grant the ``pin`` action.

    With ``auth.mode = "none"`` (local development) every request is the local developer, who
    holds every role; the console then grants pins to whoever logged in with an approver token,
    never to an arbitrary string.
    """

    def __init__(self, authenticator: Authenticator, access: AccessPolicy, *, local_dev: bool) -> None:
        self.authenticator = authenticator
        self.access = access
        self.local_dev = local_dev

    async def principal(self, headers: dict[str, str]) -> Principal | Response:
        """The caller of a REST request if it may pin, else the answer to send."""
        who = await self.authenticator.authenticate({k.lower(): v for k, v in headers.items()})
        if isinstance(who, AuthFailure):
            return JSONResponse(who.body, status_code=who.status, headers=dict(who.headers))
        if not self.access.may(who, "pin"):
            return _error(403, "forbidden", f"principal {who.id!r} may not re-approve tool definitions (action 'pin')")
        return who

    async def admin(self, token: str, approver: Approver | None) -> str | None:
        """The name to record for a console login with ``token``, if its holder may pin."""
        if self.local_dev:
            return approver.name if approver is not None else None
        who = await self.authenticator.authenticate({"authorization": f"Bearer {token}"})
        return who.id if isinstance(who, Principal) and self.access.may(who, "pin") else None


class PinsApi:
    """Handlers of ``/api/pins``."""

    def __init__(self, pins: PinBook, admins: PinAdmins) -> None:
        self.pins = pins
        self.admins = admins

    async def index(self, request: Request) -> Response:
        who = await self.admins.principal(dict(request.headers))
        if isinstance(who, Response):
            return who
        try:
            records = await self.pins.store.list_pins()
            new = await self.pins.new_tools()
        except StoreUnavailable:
            return _error(503, "unavailable", "The state store is unavailable.")
        changed = self.pins.changed()
        withheld = {(c.upstream, c.tool) for c in changed}
        return JSONResponse({
            "pins": [{"upstream": p.upstream, "tool": p.tool, "hash": p.definition_hash, "pinned_by": p.pinned_by,
                      "pinned_at": p.pinned_at, "changed": (p.upstream, p.tool) in withheld} for p in records],
            "changed": [c.to_json() for c in changed],
            "new": [n.to_json() for n in new],
        })

    async def review(self, request: Request) -> Response:
        who = await self.admins.principal(dict(request.headers))
        if isinstance(who, Response):
            return who
        changed = self.pins.find(request.query_params.get("upstream", ""), request.query_params.get("tool", ""))
        if changed is None:
            return _error(404, "not_found", "No tool with a changed definition by that upstream and name.")
        try:
            review = await self.pins.review(changed)
        except StoreUnavailable:
            return _error(503, "unavailable", "The state store is unavailable.")
        return JSONResponse(review.to_json())

    async def approve(self, request: Request) -> Response:
        who = await self.admins.principal(dict(request.headers))
        if isinstance(who, Response):
            return who
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            upstream, tool, digest = (_text(body, k) for k in ("upstream", "tool", "hash"))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return _error(400, "bad_request", str(exc))
        result = await self.pins.approve(upstream, tool, digest, who.id)
        if result.status != 200:
            return _error(result.status, result.code, result.message)
        return JSONResponse({"upstream": upstream, "tool": tool, "hash": digest, "pinned_by": who.id,
                             "first_use": result.code == "approved_new", "message": result.message})

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PATH, self.index, methods=["GET"]),
            Route(PATH + "/review", self.review, methods=["GET"]),
            Route(PATH + "/approve", self.approve, methods=["POST"]),
        ]


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        raise ValueError(f"{key!r} must be a non-empty string (upstream, tool and the reviewed hash)")
    return value
