"""What every grant the gateway asks for on its own shares: one cached access token, refreshed early.

:class:`CachedTokenSource` keeps the token, refreshes it before it expires (one refresh for all
concurrent callers), follows the upstream's metadata to its authorization server on a 401 (RFC
9728, RFC 8414 / OpenID discovery; see oauth_discovery.py), adopts a challenge's scope (step-up)
and authenticates the gateway at the token endpoint (client secret, RFC 7523 private key JWT, or
none for a public client). A grant supplies only how it asks for a token (:meth:`_request_token`)
and which discovered authorization servers it can use (:meth:`_authorization_server`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import TypedDict

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.upstreams.oauth_discovery import AuthorizationServer, Challenge, DiscoveryFailed
from adapters.upstreams.oauth_errors import UpstreamAuthError

CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_LIFETIME = 300.0  # when the token endpoint omits expires_in: assume short, refresh often


def oauth_error_code(resp: httpx.Response) -> str:
    """The OAuth ``error`` code of a refusal: a short token, never the description (it may echo input)."""
    try:
        code = resp.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 64 else ""


class TokenSourceOptions(TypedDict, total=False):
    """The settings every grant passes on to :class:`CachedTokenSource` unchanged (defaults there)."""

    private_key: str | None
    auth_method: str
    scope: str | None
    audience: str | None
    server_url: str | None
    upstream: str
    refresh_margin: float
    http: httpx.AsyncClient | None
    clock: Callable[[], float]


class CachedTokenSource:
    """An access token for one upstream, cached and refreshed ``refresh_margin`` seconds before expiry.

    The token endpoint is configured, or discovered from the upstream's first 401, which also gives
    the resource (RFC 8707) and, unless configured, the scope. Refresh starts ``refresh_margin``
    seconds before the token expires (or at half its lifetime for short-lived tokens), so calls
    never carry a token that expires in flight. Concurrent callers share one refresh. A refusal by
    the upstream gets one fresh token and one retry (:meth:`refused`), never a loop.
    """

    public_client = False  # True: with neither a secret nor a key, the client is named by client_id alone

    def __init__(
        self,
        *,
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        private_key: str | None = None,
        auth_method: str = "auto",
        scope: str | None = None,
        audience: str | None = None,
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
        self.auth_method = auth_method
        self.configured_scope = scope
        self.scope = scope
        self.audience = audience
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
        self.fetches = 0  # token requests that reached a token endpoint (an IdP exchange counts apart)

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
        challenge's ``scope`` adopted (step-up) unless one is configured and, for a discovered
        upstream, its metadata followed again when it points there. The caller retries once and
        reports a second refusal.
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
        if not self.ready:
            return {}
        return {"authorization": f"Bearer {await self.token()}"}

    async def aclose(self) -> None:
        """Close the HTTP client, when this source made it."""
        if self._owns_http:
            await self._http.aclose()

    async def _authorization_server(self, server_url: str, challenge: Challenge) -> AuthorizationServer:
        """The upstream's authorization server, checked that it offers this grant (subclasses)."""
        raise NotImplementedError

    async def _request_token(self, token_url: str) -> tuple[str, float]:
        """A new access token from ``token_url`` and its lifetime in seconds (subclasses)."""
        raise NotImplementedError

    async def _discover(self, challenge: Challenge) -> None:
        assert self.server_url is not None
        try:
            found = await self._authorization_server(self.server_url, challenge)
        except DiscoveryFailed as exc:
            raise UpstreamAuthError(str(exc)) from None
        self.token_url, self.issuer, self._methods = found.token_endpoint, found.issuer, found.auth_methods
        self.audience = self.audience or found.resource
        if not self.configured_scope:
            self.scope = challenge.scope or (" ".join(found.scopes_supported) or None)

    async def _fetch(self) -> str:
        if self.token_url is None:
            raise UpstreamAuthError("no token endpoint yet: none configured and none discovered")
        started = self._clock()  # the lifetime counts from the request, not the answer
        token, lifetime = await self._request_token(self.token_url)
        margin = min(self.refresh_margin, lifetime / 2)
        self._token, self._refresh_at = token, started + lifetime - margin
        return token

    def _client_auth(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The form fields and Basic credentials that authenticate the gateway at the token endpoint.

        For a public client (neither a secret nor a key, where the grant allows it): only
        ``client_id``, when there is one (a workload's JWT is its own credential, RFC 7523 section 3.1).
        """
        method = self.auth_method
        if method == "auto":
            if self._private_key:
                method = "private_key_jwt"
            elif self._secret is not None or not self.public_client:
                have = ("client_secret_basic", "client_secret_post")
                method = next((m for m in have if m in self._methods), have[0])
            else:
                method = "none"
        if self.public_client and (method == "none" or self.client_id is None):
            return ({"client_id": self.client_id} if self.client_id else {}), None
        assert self.client_id is not None  # a confidential client: its config requires oauth_client_id
        if method == "private_key_jwt":
            if not self._private_key:
                raise UpstreamAuthError("private_key_jwt needs oauth_private_key_file")
            return {"client_id": self.client_id, "client_assertion": self._client_assertion(self.client_id),
                    "client_assertion_type": CLIENT_ASSERTION}, None
        if self._secret is None:
            raise UpstreamAuthError(f"{method} needs oauth_client_secret_env")
        if method == "client_secret_post":
            return {"client_id": self.client_id, "client_secret": self._secret}, None
        return {}, (self.client_id, self._secret)  # client_secret_basic: the OAuth 2.1 default

    def _client_assertion(self, client_id: str) -> str:
        """An RFC 7523 client assertion: iss = sub = client id, aud = the issuer (else the token endpoint)."""
        assert self._private_key is not None and self.token_url is not None
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": self.issuer or self.token_url,
                  "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(16)}
        key = serialization.load_pem_private_key(self._private_key.encode(), password=None)
        alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(claims, self._private_key, algorithm=alg)
