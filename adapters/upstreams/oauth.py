"""Credentials toward upstreams: OAuth client credentials with refresh, and the identity header.

Each upstream authenticates the *gateway*, with the gateway's own credentials; the token an
agent presented to Triplock is never forwarded (it was issued for Triplock's audience and
forwarding it would make every upstream a place to replay it). For upstreams that do their own
per-user checks, the calling principal's id can be passed in a configured header instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Self, Unpack

import httpx

from adapters.upstreams.oauth_assertion_grants import AssertionGrantTokenSource, assertion_token_source
from adapters.upstreams.oauth_authorization_code import AuthorizationCodeTokenSource
from adapters.upstreams.oauth_discovery import AuthorizationServer, Challenge, discover
from adapters.upstreams.oauth_errors import NeedsSignIn, UpstreamAuthError
from adapters.upstreams.oauth_token_cache import (
    DEFAULT_LIFETIME,
    CachedTokenSource,
    TokenSourceOptions,
    oauth_error_code,
)
from gateway.config import UpstreamConfig
from gateway.ports.grants import GrantStore

__all__ = ["AuthorizationCodeTokenSource", "ClientCredentialsTokenSource", "NeedsSignIn", "TokenSource",
           "UnsafeHeaderValue", "UpstreamAuthError", "header_safe", "identity_headers", "strip_client_credentials",
           "token_source_for"]

class UnsafeHeaderValue(ValueError):
    """A value bound for an upstream request header holds CR, LF or NUL: it is never sent."""


def header_safe(value: str) -> bool:
    """False when ``value`` could break out of its header line (CR or LF) or truncate it (NUL)."""
    return "\n" not in value and "\r" not in value and "\x00" not in value


class ClientCredentialsTokenSource(CachedTokenSource):
    """An access token from an OAuth 2.1 ``client_credentials`` grant, refreshed before expiry.

    The caching, discovery from the upstream's first 401, scope step-up and client authentication
    (client_secret_basic / client_secret_post, or an RFC 7523 private key JWT) are
    :class:`CachedTokenSource`'s; this class asks for the token.
    """

    client_id: str

    def __init__(self, token_url: str | None, client_id: str, client_secret: str | None = None,
                 **options: Unpack[TokenSourceOptions]) -> None:
        super().__init__(token_url=token_url, client_id=client_id, client_secret=client_secret, **options)

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

    async def _authorization_server(self, server_url: str, challenge: Challenge) -> AuthorizationServer:
        return await discover(self._http, server_url, challenge)

    async def _request_token(self, token_url: str) -> tuple[str, float]:
        step = f"token request (client_credentials) to {token_url}"
        form, basic = self._client_auth()
        form["grant_type"] = "client_credentials"
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["resource"] = self.audience  # RFC 8707: a token for that upstream only
        self.fetches += 1
        try:
            resp = await self._http.post(token_url, data=form, auth=basic or httpx.USE_CLIENT_DEFAULT,
                                         headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise UpstreamAuthError(f"{step}: unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            code = oauth_error_code(resp)
            raise UpstreamAuthError(f"{step}: answered HTTP {resp.status_code}" + (f" ({code})" if code else ""))
        try:
            doc = resp.json()
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in") or DEFAULT_LIFETIME)
        except (ValueError, KeyError, TypeError):
            raise UpstreamAuthError(f"{step}: sent no usable access_token") from None
        if not isinstance(token, str) or not token:
            raise UpstreamAuthError(f"{step}: sent an empty access_token")
        if not header_safe(token):
            raise UpstreamAuthError(f"{step}: sent an access_token with CR, LF or NUL")
        return token, lifetime


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
