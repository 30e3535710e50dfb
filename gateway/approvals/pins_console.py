"""The console's tools page: a withheld tool's definition diff and re-approving it, and the new
tools nobody reviewed yet, each approved once for everyone (first use recorded, definition pinned).

A changed description is attacker-controlled text (the rug pull), so the diff reaches the page
only through the console's autoescaping templates, under its no-inline-script CSP, and the
approve form is CSRF-protected like every console POST. It carries the hash of the definition
shown, so a definition that changed again after the page was rendered is refused, not approved.
A new tool's description is shown the same way: untrusted text, escaped.
Only a session with the ``pins`` right (an admin holding the ``pin`` action) gets here.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.guard.pin_book import NewTool, PinBook, PinReview
from gateway.ports.store import StoreUnavailable

_DONE = {
    "approved": "Approved. The tool is listed and callable again with its new definition.",
    "approved_new": "Approved for everyone. Its first call is no longer held as a first use, and its definition "
                    "is pinned.",
}


def visible(text: str) -> str:
    """``text`` with invisible format characters (zero-width, bidi overrides) shown as ``\\uXXXX``."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c for c in text)


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, text) per diff line, with invisible format characters made visible."""
    out = []
    for line in diff.splitlines():
        text = visible(line)
        kind = "meta" if line.startswith(("---", "+++", "@@")) else {"+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append((kind, text))
    return out


def schema_text(definition: dict[str, Any]) -> str:
    """A tool's input schema as indented JSON, invisible format characters made visible (escaped by the template)."""
    return visible(json.dumps(definition.get("inputSchema", {}), indent=2, sort_keys=True, ensure_ascii=False))


class Console(Protocol):
    """What this page uses of :class:`gateway.approvals.console.Console` (sessions, rendering, CSRF)."""

    def _session(self, request: Request) -> Any: ...

    def _render(self, name: str, ctx: Any, status: int = 200, **values: Any) -> HTMLResponse: ...

    @staticmethod
    def _redirect(url: str) -> RedirectResponse: ...

    async def _checked_post(self, request: Request) -> tuple[Any, dict[str, str]] | Response: ...


class PinsConsole:
    """``/console/pins``: list the withheld tools with their diffs; approve one."""

    def __init__(self, console: Console, pins: PinBook) -> None:
        self.console = console
        self.pins = pins

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/console/pins", self.page, methods=["GET"]),
            Route("/console/pins/approve", self.approve, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        ctx = self.console._session(request)
        if not ctx.session.logged_in:
            return self.console._redirect("/console")
        if not ctx.session.pins:
            return self.console._render("error.html", ctx, status=403,
                                        message="Re-approving tool definitions needs an admin with the 'pin' action.")
        return await self._page(ctx, flash=_DONE.get(request.query_params.get("done", "")))

    async def _page(self, ctx: Any, status: int = 200, *, flash: str | None = None,
                    error: str | None = None) -> Response:
        reviews: list[PinReview] = []
        new: list[NewTool] = []
        store_error = None
        try:
            for changed in self.pins.changed():
                reviews.append(await self.pins.review(changed))
            new = await self.pins.new_tools()
        except StoreUnavailable:
            store_error = "The state store is unavailable; the pinned definitions and new tools cannot be shown."
        return self.console._render("pins.html", ctx, status=status, reviews=reviews, new_tools=new,
                                    store_error=store_error, flash=flash, error=error, diff_lines=diff_lines,
                                    schema_text=schema_text, visible=visible)

    async def approve(self, request: Request) -> Response:
        checked = await self.console._checked_post(request)
        if isinstance(checked, Response):
            return checked
        ctx, form = checked
        if not ctx.session.logged_in:
            return self.console._redirect("/console")
        if not ctx.session.pins:
            return self.console._render("error.html", ctx, status=403,
                                        message="Re-approving tool definitions needs an admin with the 'pin' action.")
        upstream, tool, digest = form.get("upstream", ""), form.get("tool", ""), form.get("hash", "")
        if form.get("confirm") != "yes":
            return await self._page(ctx, 400, error="Tick the box to confirm you reviewed the definition.")
        result = await self.pins.approve(upstream, tool, digest, ctx.session.approver or "")
        if result.status == 200:
            return self.console._redirect(f"/console/pins?done={result.code}")
        return await self._page(ctx, result.status, error=result.message)
