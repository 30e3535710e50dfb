"""Credentials toward upstreams: OAuth client credentials with refresh, and the identity header.

Each upstream authenticates the *gateway*, with the gateway's own credentials; the token an
agent presented to Triplock is never forwarded (it was issued for Triplock's audience and
forwarding it would make every upstream a place to replay it). For upstreams that do their own
per-user checks, the calling principal's id can be passed in a configured header instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Self

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.upstreams.oauth_assertion_grants import AssertionGrantTokenSource, assertion_token_source
from adapters.upstreams.oauth_authorization_code import AuthorizationCodeTokenSource
from adapters.upstreams.oauth_discovery import Challenge, DiscoveryFailed, discover
from adapters.upstreams.oauth_errors import NeedsSignIn, UpstreamAuthError
from gateway.config import UpstreamConfig
from gateway.ports.grants import GrantStore

log = logging.getLogger("triplock.upstream.oauth")

__all__ = ["AuthorizationCodeTokenSource", "ClientCredentialsTokenSource", "NeedsSignIn", "TokenSource",
           "UnsafeHeaderValue", "UpstreamAuthError", "header_safe", "identity_headers", "strip_client_credentials",
           "token_source_for"]

_DEFAULT_LIFETIME = 300.0  # when the token endpoint omits expires_in: assume short, refresh often


class UnsafeHeaderValue(ValueError):
    """A value bound for an upstream request header holds CR, LF or NUL: it is never sent."""


def header_safe(value: str) -> bool:
    """False when ``value`` could break out of its header line (CR or LF) or truncate it (NUL)."""
    return "\n" not in value and "\r" not in value and "\x00" not in value


class ClientCredentialsTokenSource:
    """An access token from an OAuth 2.1 ``client_credentials`` grant, refreshed before expiry.

    The token endpoint is configured, or discovered from the upstream's first 401 (RFC 9728, then
    RFC 8414 / OpenID discovery; see oauth_discovery.py), which also gives the resource (RFC 8707)
    and, unless configured, the scope. Refresh starts ``refresh_margin`` seconds before the token
    expires (or at half its lifetime for short-lived tokens), so calls never carry a token that
    expires in flight. Concurrent callers share one refresh. A refusal by the upstream gets one
    fresh token and one retry (:meth:`refused`), never a loop.
    """

    def __init__(
        self,
        token_url: str | None,
        client_id: str,
        client_secret: str | None = None,
        *,
        scope: str | None = None,
        audience: str | None = None,
        private_key: str | None = None,
        auth_method: str = "auto",
        server_url: str | None = None,
        upstream: str = "upstream",
        refresh_margin: float = 60.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._private_key = private_key
        self.configured_scope = scope
        self.scope = scope
        self.audience = audience
        self.auth_method = auth_method
        self.server_url = server_url
        self.upstream = upstream
        self.issuer: str | None = None
        self.refresh_margin = refresh_margin
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        self._owns_http = http is None
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = float("-inf")
        self._lock = asyncio.Lock()
        self._methods: tuple[str, ...] = ("client_secret_basic",)
        self.fetches = 0

    @classmethod
    def from_config(cls, config: UpstreamConfig, *, http: httpx.AsyncClient | None = None,
                    clock: Callable[[], float] = time.monotonic) -> Self | None:
        """The token source an upstream's config asks for, or None when it uses none."""
        if not config.oauth_client_id:
            return None
        secret = key = None
        if config.oauth_client_secret_env:
            secret = os.environ.get(config.oauth_client_secret_env)
            if not secret:
                raise ValueError(f"env var {config.oauth_client_secret_env} (upstream {config.name}) is empty or unset")
        if config.oauth_private_key_file:
            key = config.oauth_private_key_file.read_text(encoding="utf-8")
        return cls(config.oauth_token_url, config.oauth_client_id, secret, scope=config.oauth_scope,
                   audience=config.oauth_audience, private_key=key, auth_method=config.oauth_token_auth_method,
                   server_url=config.url, upstream=config.name, http=http, clock=clock)

    @property
    def ready(self) -> bool:
        """False while the token endpoint is still to be discovered (requests go without a token until a 401)."""
        return self.token_url is not None

    async def token(self) -> str:
        """A token valid for at least ``refresh_margin`` more seconds (fetching one if needed)."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token  # refreshed by another caller while we waited
            return await self._fetch()

    def invalidate(self) -> None:
        """Forget the token (the upstream answered 401): the next call fetches a new one."""
        self._token = None
        self._refresh_at = float("-inf")

    async def refused(self, status: int, www_authenticate: str | None) -> bool:
        """The upstream refused a request (401, or 403 ``insufficient_scope``): prepare one retry.

        Returns True when a retry with a fresh token can succeed: the token is dropped, the
        challenge's ``scope`` adopted (step-up) and, for a discovered upstream, its metadata
        followed again. The caller retries once and reports a second refusal.
        """
        challenge = Challenge.parse(www_authenticate)
        if status == 403 and challenge.error != "insufficient_scope":
            return False
        async with self._lock:
            if self.server_url is not None and (self.token_url is None or challenge.resource_metadata):
                await self._discover(challenge)
            if challenge.scope and not self.configured_scope:
                self.scope = challenge.scope
            self.invalidate()
        return True

    async def headers(self) -> dict[str, str]:
        """The Authorization header for the next upstream request (none while discovery waits for a 401)."""
        if self.token_url is None:
            return {}
        return {"authorization": f"Bearer {await self.token()}"}

    async def _discover(self, challenge: Challenge) -> None:
        assert self.server_url is not None
        try:
            found = await discover(self._http, self.server_url, challenge)
        except DiscoveryFailed as exc:
            raise UpstreamAuthError(str(exc)) from None
        self.token_url, self.issuer, self._methods = found.token_endpoint, found.issuer, found.auth_methods
        self.audience = self.audience or found.resource
        if not self.configured_scope:
            self.scope = challenge.scope or (" ".join(found.scopes_supported) or None)

    def _client_auth(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The form fields and Basic credentials that authenticate the gateway at the token endpoint."""
        method = self.auth_method
        if method == "auto":
            have = ("private_key_jwt",) if self._private_key else ("client_secret_basic", "client_secret_post")
            method = next((m for m in have if m in self._methods), have[0])
        if method == "private_key_jwt":
            if not self._private_key:
                raise UpstreamAuthError("private_key_jwt needs oauth_private_key_file")
            return {"client_id": self.client_id, "client_assertion": self._assertion(),
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, None
        if self._secret is None:
            raise UpstreamAuthError(f"{method} needs oauth_client_secret_env")
        if method == "client_secret_post":
            return {"client_id": self.client_id, "client_secret": self._secret}, None
        return {}, (self.client_id, self._secret)  # client_secret_basic: the OAuth 2.1 default

    def _assertion(self) -> str:
        """An RFC 7523 client assertion: iss = sub = client id, aud = the issuer (else the token endpoint)."""
        assert self._private_key is not None and self.token_url is not None
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.issuer or self.token_url,
                  "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(16)}
        key = serialization.load_pem_private_key(self._private_key.encode(), password=None)
        alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(claims, self._private_key, algorithm=alg)

    async def _fetch(self) -> str:
        if self.token_url is None:
            raise UpstreamAuthError("no token endpoint yet: none configured and none discovered")
        url = self.token_url
        step = f"token request (client_credentials) to {url}"
        form, basic = self._client_auth()
        form["grant_type"] = "client_credentials"
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["resource"] = self.audience  # RFC 8707: a token for that upstream only
        self.fetches += 1
        started = self._clock()
        try:
            resp = await self._http.post(url, data=form, auth=basic or httpx.USE_CLIENT_DEFAULT,
                                         headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise UpstreamAuthError(f"{step}: unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise UpstreamAuthError(f"{step}: answered HTTP {resp.status_code}{_oauth_error(resp)}")
        try:
            doc = resp.json()
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in") or _DEFAULT_LIFETIME)
        except (ValueError, KeyError, TypeError):
            raise UpstreamAuthError(f"{step}: sent no usable access_token") from None
        if not isinstance(token, str) or not token:
            raise UpstreamAuthError(f"{step}: sent an empty access_token")
        if not header_safe(token):
            raise UpstreamAuthError(f"{step}: sent an access_token with CR, LF or NUL")
        margin = min(self.refresh_margin, lifetime / 2)
        self._token, self._refresh_at = token, started + lifetime - margin
        return token

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


TokenSource = ClientCredentialsTokenSource | AuthorizationCodeTokenSource | AssertionGrantTokenSource


def token_source_for(config: UpstreamConfig, grants: GrantStore | None = None, *,
                     http: httpx.AsyncClient | None = None) -> TokenSource | None:
    """The token source an upstream's ``oauth_grant`` asks for, or None when it uses none (a simple dispatch)."""
    grant = config.oauth_grant_kind
    if grant == "authorization_code":
        if grants is None:
            raise ValueError(f"upstream {config.name}: oauth_grant 'authorization_code' needs the gateway's store")
        return AuthorizationCodeTokenSource(config, grants, http=http)
    if grant == "client_credentials":
        return ClientCredentialsTokenSource.from_config(config, http=http)
    if grant in ("jwt_bearer", "token_exchange"):
        return assertion_token_source(config, http=http)
    return None


def _oauth_error(resp: httpx.Response) -> str:
    """The OAuth ``error`` code of a refusal (a short token, never the description, which may echo input)."""
    try:
        code = resp.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" ({code})" if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 64 else ""


def identity_headers(config: UpstreamConfig, principal: str | None) -> dict[str, str]:
    """The configured identity header carrying ``principal`` (empty when not configured).

    Raises :class:`UnsafeHeaderValue` when the principal id (a JWT ``sub`` can be any string)
    holds CR, LF or NUL: it would inject headers into the upstream request.
    """
    if not config.identity_header or principal is None:
        return {}
    if not header_safe(principal):
        raise UnsafeHeaderValue(
            f"the principal id contains CR, LF or NUL, so it cannot be sent in header {config.identity_header!r};"
            " the request was not sent"
        )
    return {config.identity_header.lower(): principal}


def strip_client_credentials(headers: dict[str, str], config: UpstreamConfig) -> dict[str, str]:
    """Static upstream headers minus anything that could carry a client's credentials.

    The identity header is removed from the static set so only the gateway sets it, from the
    authenticated principal, and never a value an operator or client typed.
    """
    drop = {"cookie", "proxy-authorization"}
    if config.identity_header:
        drop.add(config.identity_header.lower())
    return {k: v for k, v in headers.items() if k.lower() not in drop}
