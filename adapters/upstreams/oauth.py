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
import time
from collections.abc import Callable
from typing import Self

import httpx

from gateway.config import UpstreamConfig

log = logging.getLogger("triplock.upstream.oauth")

_DEFAULT_LIFETIME = 300.0  # when the token endpoint omits expires_in: assume short, refresh often


class UpstreamAuthError(Exception):
    """The upstream's token endpoint refused or could not be reached (no secret in the message)."""


class UnsafeHeaderValue(ValueError):
    """A value bound for an upstream request header holds CR, LF or NUL: it is never sent."""


def header_safe(value: str) -> bool:
    """False when ``value`` could break out of its header line (CR or LF) or truncate it (NUL)."""
    return "\n" not in value and "\r" not in value and "\x00" not in value


class ClientCredentialsTokenSource:
    """An access token from an OAuth 2.1 ``client_credentials`` grant, refreshed before expiry.

    Refresh starts ``refresh_margin`` seconds before the token expires (or at half its lifetime
    for short-lived tokens), so calls never carry a token that expires in flight. Concurrent
    callers share one refresh.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        audience: str | None = None,
        refresh_margin: float = 60.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.audience = audience
        self.refresh_margin = refresh_margin
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        self._owns_http = http is None
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    @classmethod
    def from_config(cls, config: UpstreamConfig, *, http: httpx.AsyncClient | None = None,
                    clock: Callable[[], float] = time.monotonic) -> Self | None:
        """The token source an upstream's config asks for, or None when it uses none."""
        if not (config.oauth_token_url and config.oauth_client_id and config.oauth_client_secret_env):
            return None
        secret = os.environ.get(config.oauth_client_secret_env)
        if not secret:
            raise ValueError(f"env var {config.oauth_client_secret_env} (upstream {config.name}) is empty or unset")
        return cls(config.oauth_token_url, config.oauth_client_id, secret, scope=config.oauth_scope,
                   audience=config.oauth_audience, http=http, clock=clock)

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

    async def headers(self) -> dict[str, str]:
        """The Authorization header for the next upstream request."""
        return {"authorization": f"Bearer {await self.token()}"}

    async def _fetch(self) -> str:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["resource"] = self.audience  # RFC 8707: a token for that upstream only
        self.fetches += 1
        started = self._clock()
        try:
            # client_secret_basic: the OAuth 2.1 default client authentication.
            resp = await self._http.post(self.token_url, data=form, auth=(self.client_id, self._secret),
                                         headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise UpstreamAuthError(f"token endpoint {self.token_url} unreachable: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise UpstreamAuthError(f"token endpoint {self.token_url} answered HTTP {resp.status_code}")
        try:
            doc = resp.json()
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in") or _DEFAULT_LIFETIME)
        except (ValueError, KeyError, TypeError):
            raise UpstreamAuthError(f"token endpoint {self.token_url} sent no usable access_token") from None
        if not isinstance(token, str) or not token:
            raise UpstreamAuthError(f"token endpoint {self.token_url} sent an empty access_token")
        if not header_safe(token):
            raise UpstreamAuthError(f"token endpoint {self.token_url} sent an access_token with CR, LF or NUL")
        margin = min(self.refresh_margin, lifetime / 2)
        self._token, self._refresh_at = token, started + lifetime - margin
        return token

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


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
