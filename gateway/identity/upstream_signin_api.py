"""Connecting an upstream that needs a person's OAuth grant: the admin API and the browser's callback.

``POST /api/upstreams/{name}/authorize`` (action ``connect_upstream``, ``agents-admin`` has it)
starts a sign-in and answers the authorization URL for the admin to open. The authorization server
sends the browser back to ``GET /oauth/upstreams/callback``, which needs no login: it is
authenticated by its ``state``, unguessable, single use, bound to the admin who started the
sign-in and expiring in minutes (`gateway.ports.grants.SIGNIN_TTL`). Any replica can finish it
(the pending sign-in is in the store). A finished sign-in is audited as
``triplock.upstream.authorized`` (who, upstream, scopes; never a token); a refused one as
``triplock.upstream.authorization_refused``. ``GET /api/upstreams/status`` shows each such
upstream's grant: connected or not, scopes, expiry, never a token.

``GET /oauth/client-metadata.json`` is this gateway's OAuth client ID metadata document (SEP-991),
served when ``server.public_url`` is https (an authorization server must be able to fetch it).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.identity.principal import Authenticator
from gateway.identity.roles import AccessPolicy
from gateway.identity.suspension_api import authorized
from gateway.ports.grants import GrantStore, SignInError, UpstreamSignIn
from gateway.ports.store import StoreUnavailable
from gateway.telemetry.audit_hook import call_audit

log = logging.getLogger("triplock.upstream.signin")

CALLBACK_PATH = "/oauth/upstreams/callback"
METADATA_PATH = "/oauth/client-metadata.json"
AUTHORIZED = "triplock.upstream.authorized"
REFUSED = "triplock.upstream.authorization_refused"
_STATE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Triplock: {title}</title>
<meta name="viewport" content="width=device-width"></head><body style="font-family:sans-serif;margin:3em">
<h1>{title}</h1><p>{body}</p></body></html>"""


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _page(status: int, title: str, body: str) -> HTMLResponse:
    # Everything shown is escaped: upstream names, issuers and errors come from config and from the network.
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=html.escape(body)), status_code=status,
                        headers={"cache-control": "no-store", "referrer-policy": "no-referrer",
                                 "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'"})


def gateway_base_url(public_url: str | None, host: str, port: int, mcp_path: str) -> str:
    """The gateway's own base URL (public_url without the MCP path, else the bind address)."""
    base = (public_url or f"http://{host}:{port}").rstrip("/")
    return base[: -len(mcp_path)] if mcp_path != "/" and base.endswith(mcp_path) else base


def client_metadata(base_url: str) -> dict[str, Any]:
    """This gateway's client ID metadata document (SEP-991): a public client with one redirect URI."""
    return {"client_id": base_url + METADATA_PATH, "client_name": "Triplock gateway",
            "redirect_uris": [base_url + CALLBACK_PATH], "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "token_endpoint_auth_method": "none", "application_type": "web"}


class UpstreamSignInApi:
    """Handlers of the sign-in routes; build with :func:`routes`."""

    def __init__(self, signins: Mapping[str, UpstreamSignIn], grants: GrantStore, base_url: str,
                 authenticator: Authenticator, access: AccessPolicy, audit: Callable[..., Any] | None = None,
                 on_connected: Callable[[str], object] | None = None) -> None:
        self.signins = signins
        self.grants = grants
        self.redirect_uri = base_url + CALLBACK_PATH
        self.base_url = base_url
        self.authenticator = authenticator
        self.access = access
        self.audit = audit
        self.on_connected = on_connected

    async def _record(self, event_type: str, **fields: Any) -> None:
        await call_audit(self.audit, event_type, **fields)

    async def authorize(self, request: Request) -> Response:
        who = await authorized(request, self.authenticator, self.access, "connect_upstream")
        if not isinstance(who, Response):
            name = request.path_params["name"]
            signin = self.signins.get(name)
            if signin is None:
                return _error(404, "not_found", f"no upstream {name!r} with oauth_grant = 'authorization_code'")
            try:
                started = await signin.begin(who.id, self.redirect_uri)
            except SignInError as exc:
                return _error(502, "sign_in_failed", f"upstream {name!r}: {exc}")
            except StoreUnavailable as exc:
                return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")
            log.info("sign-in for upstream %s started by %s", name, who.id)
            return JSONResponse({"upstream": name, "authorization_url": started.url,
                                 "expires_at": started.expires_at, "redirect_uri": self.redirect_uri})
        return who

    async def status(self, request: Request) -> Response:
        who = await authorized(request, self.authenticator, self.access, "connect_upstream")
        if isinstance(who, Response):
            return who
        out = []
        try:
            for name in sorted(self.signins):
                s = await self.signins[name].status()
                out.append({"upstream": s.upstream, "connected": s.connected, "detail": s.detail,
                            "scopes": list(s.scopes), "expires_at": s.expires_at, "refreshable": s.refreshable,
                            "issuer": s.issuer, **s.extra})
        except StoreUnavailable as exc:
            return _error(503, "store_unavailable", f"the state store is unavailable: {exc}")
        return JSONResponse({"upstreams": out})

    async def callback(self, request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in ("code", "state", "iss", "error")}
        state = params.get("state", "")
        if not _STATE.match(state):
            return _page(400, "Sign-in refused", "The link has no valid state: start the sign-in again.")
        try:
            pending = await self.grants.take_signin(state)
        except StoreUnavailable:
            return _page(503, "Sign-in failed", "The state store is unavailable; try again in a moment.")
        if pending is None or pending.get("upstream") not in self.signins:
            return _page(400, "Sign-in refused", "This sign-in is unknown, expired or already used: start it again"
                         " with `triplock upstreams authorize NAME`.")
        name = str(pending["upstream"])
        try:
            done = await self.signins[name].finish(pending, params)
        except (SignInError, StoreUnavailable) as exc:
            await self._record(REFUSED, upstream=name, by=pending.get("by"), reason=str(exc)[:300])
            log.warning("sign-in for upstream %s refused: %s", name, exc)
            return _page(400, "Sign-in refused", f"Upstream {name}: {exc}")
        await self._record(AUTHORIZED, upstream=name, by=done.by, scopes=list(done.scopes))
        log.info("upstream %s connected by %s", name, done.by)
        if self.on_connected is not None:
            self.on_connected(name)
        return _page(200, "Connected", f"Upstream {name} is connected (signed in for {done.by}"
                     f"{'; scopes ' + ' '.join(done.scopes) if done.scopes else ''}). You can close this page.")

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(client_metadata(self.base_url))


def routes(signins: Mapping[str, UpstreamSignIn], grants: GrantStore, base_url: str, authenticator: Authenticator,
           access: AccessPolicy, audit: Callable[..., Any] | None = None,
           on_connected: Callable[[str], object] | None = None) -> list[Route]:
    """The Starlette routes of upstream sign-in (the metadata document only for an https base URL)."""
    api = UpstreamSignInApi(signins, grants, base_url, authenticator, access, audit, on_connected)
    out = [Route("/api/upstreams/{name}/authorize", api.authorize, methods=["POST"]),
           Route("/api/upstreams/status", api.status, methods=["GET"]),
           Route(CALLBACK_PATH, api.callback, methods=["GET"])]
    if base_url.startswith("https://"):
        out.append(Route(METADATA_PATH, api.metadata, methods=["GET"]))
    return out
