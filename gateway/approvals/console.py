"""The approvers' web console at ``/console``: server-rendered, escaped, CSRF-protected, live.

Tool arguments are attacker-controlled (a prompt-injected agent writes them), so every value
reaches the page through Jinja2 with autoescape on, and the Content-Security-Policy allows no
inline script at all: even a value that slipped past escaping could not run. Every value shown
goes through the ``visible`` filters (:mod:`gateway.approvals.visible_text`): bidi controls,
zero-width and control characters appear as ``⟨U+202E⟩`` markers, and host names that mix scripts
or use look-alike letters are flagged with their punycode, so nothing can be visually disguised.

Approvers are principals: any principal whose roles may approve logs in with its bearer credential
(approver token, API key, IdP access token) and sees and decides only the categories its roles
cover (:func:`gateway.approvals.core.may_decide`): others' held calls are not listed, and opening
or deciding one is refused (403).

Live updates are a small fetch poll (``console.js``) of HTML fragments rendered by the same
templates. Polling needs nothing from the store but reads, so it works unchanged with several
gateway processes behind one console, which a server push would need a change feed for.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.approvals.console_session import COOKIE_NAME, COOKIE_PATH, ConsoleSession, SessionCodec
from gateway.approvals.core import (
    MAX_REASON,
    ApprovalsUISettings,
    Approver,
    AuditHook,
    Notifier,
    ScopeError,
    SessionHistory,
    category_forbidden,
    decide,
    may_decide,
    scope_from_form,
    scope_text,
    standing_approvals,
)
from gateway.approvals.pins_api import PinAdmins
from gateway.approvals.pins_console import PinsConsole
from gateway.approvals.visible_text import to_html, to_plain
from gateway.guard.pin_book import PinBook
from gateway.ports.records import PendingApproval, legs_text
from gateway.ports.store import Store, StoreUnavailable

log = logging.getLogger("triplock.console")

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
LIST_LIMIT = 200
HISTORY_LIMIT = 50
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: that makes Chromium send "Origin: null" on POSTs
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_CSRF_FAILED = "<h1>403 Forbidden</h1><p>Missing or invalid CSRF token. Reload the page and retry.</p>"
_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def pretty_arguments(preview: str) -> str:
    """Indented JSON of the arguments (the template's ``visible_block`` filter shows what is invisible)."""
    try:
        return json.dumps(json.loads(preview), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return preview  # not JSON (should not happen): show it verbatim, still escaped


def _utc(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def _history_rows(entries: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Normalise the session-history provider's dicts to when / tool / legs / detail strings."""
    rows = []
    for entry in entries[-HISTORY_LIMIT:]:
        rest = dict(entry)
        when = rest.pop("at", None) or rest.pop("time", None) or rest.pop("ts", None)
        tool = rest.pop("exposed_name", None) or rest.pop("tool", None) or rest.pop("name", None)
        legs = rest.pop("legs", None)
        rows.append({
            "when": _utc(when) if isinstance(when, int | float) else str(when or ""),
            "tool": str(tool or "?"),
            "legs": "".join(legs) if isinstance(legs, list | tuple | set | frozenset) else str(legs or ""),
            "detail": json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str) if rest else "",
        })
    return rows


@dataclass(frozen=True, slots=True)
class _Ctx:
    """A request's console session and whether it was newly minted (and must be set)."""

    session: ConsoleSession
    fresh: bool


class Console:
    """Route handlers for ``/console``; built by :func:`gateway.approvals.api.build_routes`."""

    def __init__(self, store: Store, settings: ApprovalsUISettings, *, audit: AuditHook | None = None,
                 session_history: SessionHistory | None = None, notifier: Notifier | None = None,
                 pins: PinBook | None = None, pin_admins: PinAdmins | None = None) -> None:
        self.store = store
        # The "changed tools" page, when the gateway wires pins in (admins with the 'pin' action).
        self.pin_admins = pin_admins if pins is not None else None
        self.pins_page = PinsConsole(self, pins) if pins is not None else None
        self.settings = settings
        self.audit = audit
        self.session_history = session_history
        self.notifier = notifier
        self.codec = SessionCodec(settings.cookie_secret, settings.session_seconds)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters["utc"] = _utc
        self.env.filters["duration"] = _duration
        self.env.filters["legs"] = legs_text
        # Everything shown goes through these (gateway/approvals/visible_text.py): markers, host flags.
        self.env.filters["visible"] = to_html
        self.env.filters["visible_block"] = lambda value: to_html(value, multiline=True)
        self.env.filters["visible_plain"] = to_plain
        self.env.globals["exposed"] = _exposed
        self.env.globals.update(scope_text=scope_text, max_scope_minutes=settings.max_scope_minutes)  # approvals' scope
        self._static = {name: (HERE / "static" / name).read_bytes() for name in _STATIC}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/console", self.index, methods=["GET"]),
            Route("/console/", self.index, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console/approvals/{approval_id}", self.detail, methods=["GET"]),
            Route("/console/approvals/{approval_id}/decide", self.decide, methods=["POST"]),
            Route("/console/live/pending", self.live_pending, methods=["GET"]),
            Route("/console/live/approvals/{approval_id}", self.live_decision, methods=["GET"]),
            Route("/console/static/{name}", self.static, methods=["GET"]),
            *(self.pins_page.routes() if self.pins_page is not None else []),
        ]

    # -- plumbing ---------------------------------------------------------------------------------

    def _session(self, request: Request) -> _Ctx:
        session = self.codec.decode(request.cookies.get(COOKIE_NAME))
        if session is None:
            return _Ctx(self.codec.anonymous(), fresh=True)
        return _Ctx(session, fresh=False)

    def _render(self, name: str, ctx: _Ctx, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("flash", None)
        values.setdefault("error", None)
        body = self.env.get_template(name).render(
            approver=ctx.session.approver, approves=ctx.session.approves, may_pin=ctx.session.pins,
            csrf=self.codec.csrf_token(ctx.session),
            poll_ms=int(self.settings.poll_seconds * 1000), now=time.time(), **values)
        response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
        if ctx.fresh:
            self._set_cookie(response, ctx.session)
        return response

    def _set_cookie(self, response: Response, session: ConsoleSession) -> None:
        response.set_cookie(COOKIE_NAME, self.codec.encode(session), max_age=int(self.settings.session_seconds),
                            path=COOKIE_PATH, httponly=True, samesite="strict", secure=self.settings.cookie_secure)

    @staticmethod
    def _redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

    @staticmethod
    def _cross_site(request: Request) -> bool:
        """True when the browser says the POST came from another site (defence behind CSRF tokens)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return True
        origin = request.headers.get("origin")
        if origin is None:
            return False  # non-browser clients; the CSRF token still has to match
        # 'null' (opaque origins, or a no-referrer policy) never matches: such a POST is refused.
        return urlsplit(origin).netloc != request.headers.get("host", "")

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded form (first value per field), or None when too large or not a form."""
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
        try:
            parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in parsed.items()}

    async def _checked_post(self, request: Request) -> tuple[_Ctx, dict[str, str]] | Response:
        """Origin and CSRF token checks every console POST goes through."""
        ctx = self._session(request)
        form = await self._form(request)
        if self._cross_site(request) or form is None or ctx.fresh or not self.codec.check_csrf(
                ctx.session, form.get("csrf")):
            return HTMLResponse(_CSRF_FAILED, status_code=403, headers=SECURITY_HEADERS)
        return ctx, form

    # -- pages ------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        ctx = self._session(request)
        if not ctx.session.logged_in:
            next_id = request.query_params.get("next", "")
            return self._render("login.html", ctx, next_id=next_id if _ID_RE.match(next_id) else "")
        if not ctx.session.approves:
            return self._redirect("/console/pins")  # an admin who is not an approver: their page
        return self._render("list.html", ctx, **await self._pending_values(ctx))

    async def login(self, request: Request) -> Response:
        checked = await self._checked_post(request)
        if isinstance(checked, Response):
            return checked
        ctx, form = checked
        next_id = form.get("next", "")
        next_id = next_id if _ID_RE.match(next_id) else ""
        token = form.get("token", "").strip()
        approver = await self.settings.auth.authenticate(token)
        admin = await self.pin_admins.admin(token, approver) if self.pin_admins is not None and token else None
        if approver is None and admin is None:
            log.warning("console login failed from %s", request.client.host if request.client else "?")
            return self._render("login.html", ctx, status=401, error="That approver token is not valid.",
                                next_id=next_id)
        if approver is not None:
            session = self.codec.login(approver.name, approver.via, pins=admin is not None, roles=approver.roles)
        else:
            session = self.codec.login(admin or "", "admin", approves=False, pins=True, roles=())
        landing = f"/console/approvals/{next_id}" if next_id else "/console"
        response = self._redirect(landing if session.approves else "/console/pins")
        self._set_cookie(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        checked = await self._checked_post(request)
        if isinstance(checked, Response):
            return checked
        response = self._redirect("/console")
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    @staticmethod
    def _approver(ctx: _Ctx) -> Approver:
        """The logged-in principal, with the roles it had at login."""
        return Approver(ctx.session.approver or "", ctx.session.via, frozenset(ctx.session.roles))

    async def _pending_values(self, ctx: _Ctx) -> dict[str, Any]:
        """Pending calls of the categories this approver may decide (others' are not listed)."""
        approver = self._approver(ctx)
        try:
            rows = await self.store.list_approvals(state="pending", limit=LIST_LIMIT)
            pending = [a for a in rows if may_decide(self.settings.access, approver, a)]
            standing = await standing_approvals(self.store, self.settings.access, approver)
            return {"pending": pending, "standing": standing, "store_error": None, "limit": LIST_LIMIT}
        except StoreUnavailable:
            return {"pending": [], "standing": [], "store_error": "The approval store is unavailable.",
                    "limit": LIST_LIMIT}

    async def detail(self, request: Request) -> Response:
        ctx = self._session(request)
        approval_id = request.path_params["approval_id"]
        if not ctx.session.logged_in:
            return self._redirect(f"/console?next={approval_id}" if _ID_RE.match(approval_id) else "/console")
        if not ctx.session.approves:
            return self._render("error.html", ctx, status=403, message="Deciding held calls needs an approver.")
        return await self._detail_page(ctx, approval_id, flash=_flash(request.query_params.get("done")))

    async def _detail_page(self, ctx: _Ctx, approval_id: str, status: int = 200, *, flash: str | None = None,
                           error: str | None = None) -> Response:
        try:
            approval = await self.store.get_approval(approval_id)
        except StoreUnavailable:
            return self._render("error.html", ctx, status=503, message="The approval store is unavailable.")
        if approval is None:
            return self._render("error.html", ctx, status=404, message="No approval with this id.")
        if not may_decide(self.settings.access, self._approver(ctx), approval):
            return self._render("error.html", ctx, status=403, message=category_forbidden(approval).message)
        history, history_error = await self._history(approval)
        return self._render("detail.html", ctx, status=status, a=approval, flash=flash, error=error,
                            arguments=pretty_arguments(approval.args_preview), history=history,
                            history_error=history_error, history_wired=self.session_history is not None)

    async def _history(self, approval: PendingApproval) -> tuple[list[dict[str, str]], str | None]:
        """What the session read before this call, from the provider the gateway wires in."""
        if self.session_history is None:
            return [], None
        try:
            result = self.session_history(approval.session_id, approval.principal)
            entries = await result if inspect.isawaitable(result) else result
            return _history_rows([e for e in entries if isinstance(e, dict)]), None
        except Exception:  # the console must still let the approver decide
            log.exception("session history provider failed for %s", approval.session_id)
            return [], "The session history is unavailable."

    async def decide(self, request: Request) -> Response:
        checked = await self._checked_post(request)
        if isinstance(checked, Response):
            return checked
        ctx, form = checked
        approval_id = request.path_params["approval_id"]
        if not ctx.session.logged_in:
            return self._redirect("/console")
        if not ctx.session.approves:
            return self._render("error.html", ctx, status=403, message="Deciding held calls needs an approver.")
        action = form.get("action")
        reason = form.get("reason", "").strip()
        if action not in ("approve", "deny"):
            return await self._detail_page(ctx, approval_id, 400, error="Choose approve or deny.")
        if not reason or len(reason) > MAX_REASON:
            return await self._detail_page(ctx, approval_id, 400,
                                           error=f"Give a reason (1 to {MAX_REASON} characters).")
        try:
            scope = scope_from_form(form, action == "approve", self.settings.max_scope_minutes)
        except ScopeError as exc:
            return await self._detail_page(ctx, approval_id, 400, error=f"{exc.field}: {exc}")
        result = await decide(self.store, approval_id, action == "approve", self._approver(ctx), reason,
                              access=self.settings.access, audit=self.audit, notifier=self.notifier,
                              console_url=self.settings.console_url, scope=scope)
        if result.status == 200:
            return self._redirect(f"/console/approvals/{approval_id}?done={result.code}")
        return await self._detail_page(ctx, approval_id, result.status, error=result.message)

    # -- live fragments ---------------------------------------------------------------------------

    async def live_pending(self, request: Request) -> Response:
        ctx = self._session(request)
        if not ctx.session.logged_in or not ctx.session.approves:
            return Response(status_code=401, headers=SECURITY_HEADERS)
        return self._render("_pending.html", ctx, **await self._pending_values(ctx))

    async def live_decision(self, request: Request) -> Response:
        ctx = self._session(request)
        if not ctx.session.logged_in or not ctx.session.approves:
            return Response(status_code=401, headers=SECURITY_HEADERS)
        try:
            approval = await self.store.get_approval(request.path_params["approval_id"])
        except StoreUnavailable:
            return Response(status_code=503, headers=SECURITY_HEADERS)
        if approval is None:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        if not may_decide(self.settings.access, self._approver(ctx), approval):
            return Response(status_code=403, headers=SECURITY_HEADERS)
        return self._render("_decision.html", ctx, a=approval)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response(status_code=404)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(self._static[name], media_type=_STATIC[name], headers=headers)


def _exposed(approval: PendingApproval) -> str:
    return approval.exposed_name or f"{approval.upstream} / {approval.tool}"


def _flash(done: str | None) -> str | None:
    return {"approved": "Approved. The agent's call can now run, as far as the scope below allows.",
            "denied": "Denied. The agent will be told who denied it and why."}.get(done or "")


__all__ = ["Console", "pretty_arguments"]
