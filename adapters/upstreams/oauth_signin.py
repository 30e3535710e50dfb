"""An admin's one-time sign-in for an upstream that needs the authorization code grant.

:meth:`AuthorizationCodeSignIn.begin` discovers the upstream's authorization server (RFC 9728,
RFC 8414 with its issuer check, the 2025-03-26 fallbacks), registers Triplock there
(oauth_registration.py), chooses the scope as MCP says (the challenge's ``scope``, else the
protected resource's ``scopes_supported``, else none; with the scopes a step-up asked for; plus
``offline_access`` when the server lists it, for a refresh token), keeps a pending sign-in under
an unguessable single-use ``state`` in the store, and returns the authorization URL (PKCE S256,
RFC 8707 ``resource``). :meth:`finish` checks the response's ``iss`` (RFC 9207, simple string
comparison), exchanges the code and stores the grant for every replica. Implements
`gateway.ports.grants.UpstreamSignIn`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from adapters.upstreams.oauth_authorization_code import (
    AuthorizationCodeTokenSource,
    grant_from_answer,
    sign_in_hint,
    with_resource,
)
from adapters.upstreams.oauth_discovery import AuthorizationServer, Challenge, DiscoveryFailed, discover_server
from adapters.upstreams.oauth_errors import TokenRequestFailed
from adapters.upstreams.oauth_registration import ClientRegistration, register_client
from gateway.config import UpstreamConfig
from gateway.ports.grants import SIGNIN_TTL, GrantStatus, GrantStore, SignInDone, SignInError, SignInStarted

OFFLINE_ACCESS = "offline_access"


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def choose_scope(configured: str | None, challenge: Challenge, server: AuthorizationServer,
                 wanted: list[str] | None) -> str | None:
    """The scope to ask for: configured, else (challenge or the resource's scopes_supported) plus what a
    step-up asked for; ``offline_access`` added when the server lists it (SEP-2207); None to omit it."""
    if configured:
        scopes = configured.split()
    else:
        base = challenge.scope.split() if challenge.scope else list(server.scopes_supported)
        scopes = list(dict.fromkeys([*base, *(wanted or [])]))
    if scopes and OFFLINE_ACCESS in server.as_scopes_supported and OFFLINE_ACCESS not in scopes:
        scopes.append(OFFLINE_ACCESS)
    return " ".join(scopes) or None


def require_secure_endpoint(url: str, what: str, issuer: str) -> None:
    """Refuse an endpoint that is not https:// (http:// only on a loopback host): the code, the PKCE verifier
    and client secrets go there. Raises SignInError naming the endpoint's origin."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme else repr(url[:80])
    raise SignInError(f"the authorization server {issuer} names {what} {origin}, which is not https:// (http:// is"
                      " allowed only on a loopback host: 127.0.0.1, ::1, localhost): refusing to sign in over it")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


class AuthorizationCodeSignIn:
    """The sign-in of one upstream; shares its token source (the challenge it saw, the grant it caches)."""

    def __init__(self, config: UpstreamConfig, grants: GrantStore, source: AuthorizationCodeTokenSource,
                 *, metadata_url: str | None = None, http: httpx.AsyncClient | None = None) -> None:
        assert config.url is not None
        self.upstream = config.name
        self.config = config
        self.grants = grants
        self.source = source
        self.metadata_url = config.oauth_client_metadata_url or metadata_url
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)

    async def _challenge(self) -> Challenge:
        """The upstream's challenge: the last one it sent, else one asked for now (an unauthenticated POST)."""
        if self.source.last_challenge.scope or self.source.last_challenge.resource_metadata:
            return self.source.last_challenge
        assert self.config.url is not None
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "triplock", "version": "0"}}}
        try:
            resp = await self._http.post(self.config.url, json=body, headers={
                "accept": "application/json, text/event-stream", **dict(self.config.headers)})
            await resp.aclose()
        except httpx.HTTPError:
            return Challenge()
        return Challenge.parse(resp.headers.get("www-authenticate")) if resp.status_code == 401 else Challenge()

    async def begin(self, by: str, redirect_uri: str) -> SignInStarted:
        """The authorization URL for ``by`` to open; the pending sign-in kept for ``SIGNIN_TTL`` seconds."""
        assert self.config.url is not None
        challenge = await self._challenge()
        try:
            server = await discover_server(self._http, self.config.url, challenge)
        except DiscoveryFailed as exc:
            raise SignInError(str(exc)) from None
        if server.grant_types and "authorization_code" not in server.grant_types:
            raise SignInError(f"the authorization server {server.issuer} does not offer the authorization_code grant"
                              f" (only {', '.join(server.grant_types)})")
        if not server.authorization_endpoint:
            raise SignInError(f"the authorization server {server.issuer} names no authorization_endpoint")
        for what, url in (("authorization_endpoint", server.authorization_endpoint),
                          ("token_endpoint", server.token_endpoint),
                          ("registration_endpoint", server.registration_endpoint)):
            if url:
                require_secure_endpoint(url, what, server.issuer)
        if server.code_challenge_methods and "S256" not in server.code_challenge_methods:
            raise SignInError(f"the authorization server {server.issuer} does not support PKCE S256, which MCP"
                              " requires: refusing to sign in without it")
        stored = await self.grants.load_grant(self.upstream)
        kept = ClientRegistration.from_dict(stored.record.get("client")) if stored else None
        wanted = stored.record.get("wanted_scopes") if stored else None
        client = await register_client(self._http, self.config, server, redirect_uri, self.metadata_url, kept)
        scope = choose_scope(self.config.oauth_scope, challenge, server, wanted)
        verifier, code_challenge = pkce_pair()
        state = secrets.token_urlsafe(32)
        expires_at = time.time() + SIGNIN_TTL
        await self.grants.save_signin(state, {
            "upstream": self.upstream, "by": by, "verifier": verifier, "redirect_uri": redirect_uri,
            "issuer": server.issuer, "iss_supported": server.iss_parameter_supported,
            "dpop_es256": "ES256" in server.dpop_algs,  # 'auto' binds the token when the server offers DPoP
            "token_endpoint": server.token_endpoint, "resource": server.resource, "scope": scope,
            "client": client.to_dict(), "expires_at": expires_at}, SIGNIN_TTL)
        params = {"response_type": "code", "client_id": client.client_id, "redirect_uri": redirect_uri,
                  "state": state, "code_challenge": code_challenge, "code_challenge_method": "S256",
                  "resource": server.resource}
        if scope:
            params["scope"] = scope
        return SignInStarted(self.upstream, _with_query(server.authorization_endpoint, params), expires_at)

    async def finish(self, pending: dict[str, Any], params: dict[str, str]) -> SignInDone:
        """Check the authorization response, exchange the code, store the grant. Raises SignInError."""
        if params.get("error"):
            reason = params["error"] if params["error"].replace("_", "").isalnum() else "error"
            raise SignInError(f"the authorization server refused the sign-in ({reason[:64]})")
        issuer: str = str(pending["issuer"])
        iss = params.get("iss")
        if iss is not None and iss != issuer:  # RFC 9207: simple string comparison, no normalisation
            raise SignInError(f"the authorization response names issuer {iss!r}, not {issuer!r} (RFC 9207): refused,"
                              " it may come from another authorization server")
        if iss is None and pending.get("iss_supported"):
            raise SignInError(f"the authorization server {issuer} promises an iss parameter (RFC 9207) and the"
                              " response has none: refused")
        code = params.get("code")
        if not code:
            raise SignInError("the authorization response has no code")
        client = ClientRegistration.from_dict(pending.get("client"))
        if client is None:
            raise SignInError("the pending sign-in is damaged; start again")
        form = with_resource({"grant_type": "authorization_code", "code": code,
                              "redirect_uri": str(pending["redirect_uri"]), "code_verifier": str(pending["verifier"])},
                             pending.get("resource"))
        try:
            doc = await self.source.exchange_code(self._http, str(pending["token_endpoint"]), form, client,
                                                  offers_dpop=pending.get("dpop_es256") is True)
        except TokenRequestFailed as exc:
            raise SignInError(str(exc)) from None
        fields = grant_from_answer(doc, pending.get("scope"), None)
        record = {**fields, "lifetime": fields["expires_at"] - time.time(), "issuer": issuer,
                  "token_endpoint": pending["token_endpoint"], "resource": pending.get("resource"),
                  "client": client.to_dict(), "by": pending.get("by"), "authorized_at": time.time()}
        saved = await self.grants.save_grant(self.upstream, record)
        assert saved is not None  # an unconditional write always lands
        self.source.adopt(saved)
        return SignInDone(self.upstream, str(pending.get("by")), tuple(fields["scopes"]), fields["expires_at"])

    async def status(self) -> GrantStatus:
        """Connected or not, with scopes and expiry; never a token."""
        stored = await self.grants.load_grant(self.upstream)
        if stored is None:
            return GrantStatus(self.upstream, False, f"needs sign-in: {sign_in_hint(self.upstream)}")
        rec = stored.record
        refreshable = bool(rec.get("refresh_token"))
        expired = float(rec.get("expires_at") or 0) <= time.time()
        detail = "connected" if not expired or refreshable else f"expired: {sign_in_hint(self.upstream)} again"
        if rec.get("wanted_scopes") and set(rec["wanted_scopes"]) - set(rec.get("scopes") or ()):
            detail = f"needs more scope ({' '.join(rec['wanted_scopes'])}): {sign_in_hint(self.upstream)} again"
        return GrantStatus(self.upstream, detail == "connected", detail, tuple(rec.get("scopes") or ()),
                           rec.get("expires_at"), refreshable, rec.get("issuer"),
                           {"by": rec.get("by"), "authorized_at": rec.get("authorized_at")})

    async def aclose(self) -> None:
        await self._http.aclose()
