"""Upstream tokens from grants that need no person: a workload's JWT and an enterprise IdP's ID-JAG.

* ``jwt_bearer`` (RFC 7523 section 2.1, MCP's workload identity federation, SEP-1933): the
  gateway's workload token (a Kubernetes projected service-account token, a SPIFFE JWT-SVID, a
  cloud identity token) is the ``assertion`` of a ``jwt-bearer`` grant at the upstream's
  authorization server.
* ``token_exchange`` (enterprise-managed authorization, SEP-990): the gateway's own ID token at
  the enterprise IdP is exchanged there (RFC 8693) for an ID-JAG (an identity assertion JWT
  authorization grant) naming the upstream's authorization server and resource, which is then the
  ``assertion`` of a ``jwt-bearer`` grant at that server.

Both credentials live in files the platform keeps fresh (they rotate), so the file is read again
for every token request. A refusal (``invalid_grant``, ``invalid_scope``, ``unauthorized_client``,
...) is reported with its OAuth error code and is final for that credential: the same token is not
sent again, and no other grant is tried, until the file holds a new one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

import httpx

from adapters.upstreams.oauth_discovery import AuthorizationServer, Challenge, discover_server, json_object
from adapters.upstreams.oauth_errors import TokenRequestFailed, UpstreamAuthError
from adapters.upstreams.oauth_token_cache import (
    DEFAULT_LIFETIME,
    CachedTokenSource,
    TokenSourceOptions,
    oauth_error_code,
)
from gateway.config import UpstreamConfig

log = logging.getLogger("triplock.upstream.oauth")

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"


class GrantRefused(TokenRequestFailed):
    """A token endpoint answered 4xx: final for the credential that was sent (no secret in the message)."""


def read_credential(path: Path, what: str) -> str:
    """The token in ``path`` (read now: the platform rotates it); an error naming the file, never its content."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UpstreamAuthError(f"cannot read the {what} file {path} ({type(exc).__name__})") from None
    if not value:
        raise UpstreamAuthError(f"the {what} file {path} is empty")
    return value


def _fingerprint(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class AssertionGrantOptions(TokenSourceOptions, total=False):
    """An assertion grant's settings: the client is optional (a workload's JWT is its own credential)."""

    token_url: str | None
    client_id: str | None
    client_secret: str | None


class AssertionGrantTokenSource(CachedTokenSource):
    """What both grants share: a credential file read for every request, final refusals, the jwt-bearer step.

    The caching, discovery from the upstream's first 401, scope step-up and client authentication
    (a public client too) are :class:`CachedTokenSource`'s. Subclasses say which file holds their
    credential and how it becomes an access token (:meth:`_exchange`).
    """

    grant = "jwt_bearer"
    credential_what = "assertion"
    public_client = True

    def __init__(self, credential_file: Path, **options: Unpack[AssertionGrantOptions]) -> None:
        super().__init__(**options)
        self.credential_file = credential_file
        self._refusal: tuple[str, str, str | None] | None = None  # (fingerprint of the refused credential, why, code)

    async def _authorization_server(self, server_url: str, challenge: Challenge) -> AuthorizationServer:
        found = await discover_server(self._http, server_url, challenge)
        if found.grant_types and JWT_BEARER not in found.grant_types:
            raise UpstreamAuthError(f"authorization server {found.issuer} does not offer the jwt-bearer grant (RFC"
                                    f" 7523; only {', '.join(found.grant_types)}): oauth_grant '{self.grant}' cannot"
                                    " get a token there")
        return found

    async def _request_token(self, token_url: str) -> tuple[str, float]:
        credential = read_credential(self.credential_file, self.credential_what)
        fingerprint = _fingerprint(credential)
        if self._refusal is not None and self._refusal[0] == fingerprint:
            raise GrantRefused(f"{self._refusal[1]}; not sent again until {self.credential_file} holds a new token",
                               self._refusal[2])
        try:
            doc = await self._exchange(credential)
        except GrantRefused as exc:
            self._refusal = (fingerprint, str(exc), exc.error)
            log.warning("upstream %s: %s", self.upstream, exc)
            raise
        return _access_token(doc, f"token request ({self.grant}) to {token_url}")

    async def _exchange(self, credential: str) -> dict[str, Any]:
        """The token endpoint's answer for ``credential`` (subclasses)."""
        return await self._jwt_bearer(credential)

    async def _jwt_bearer(self, assertion: str) -> dict[str, Any]:
        """RFC 7523 section 2.1 at the upstream's authorization server, the client authenticated as it supports."""
        assert self.token_url is not None
        form, basic = self._client_auth()
        form |= {"grant_type": JWT_BEARER, "assertion": assertion}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["resource"] = self.audience  # RFC 8707: a token for that upstream only
        self.fetches += 1
        return await post_token(self._http, self.token_url, form, basic, f"token request ({self.grant})")


class JwtBearerTokenSource(AssertionGrantTokenSource):
    """``jwt_bearer``: the workload's JWT, read from its file for every token request, is the assertion."""


class TokenExchangeTokenSource(AssertionGrantTokenSource):
    """``token_exchange``: the gateway's ID token becomes an ID-JAG at the IdP, then an access token.

    The ID-JAG's audience is the upstream authorization server's issuer, so that server is always
    discovered (RFC 9728, RFC 8414) from the upstream's first 401; its resource is the upstream's.
    """

    grant = "token_exchange"
    credential_what = "ID token"

    def __init__(self, credential_file: Path, *, idp_token_url: str, idp_client_id: str,
                 idp_client_secret: str | None = None, **options: Unpack[AssertionGrantOptions]) -> None:
        super().__init__(credential_file, **options)
        self.idp_token_url = idp_token_url
        self.idp_client_id = idp_client_id
        self._idp_secret = idp_client_secret
        self.exchanges = 0

    @property
    def ready(self) -> bool:
        return self.token_url is not None and self.issuer is not None

    async def _exchange(self, credential: str) -> dict[str, Any]:
        if self.issuer is None or self.audience is None:
            raise UpstreamAuthError("the upstream's authorization server is not discovered yet (it names the"
                                    " ID-JAG's audience)")
        # SEP-990 section 4: RFC 8693 at the IdP; client_secret_basic when the IdP client has a secret.
        form = {"grant_type": TOKEN_EXCHANGE, "requested_token_type": ID_JAG, "audience": self.issuer,
                "resource": self.audience, "subject_token": credential, "subject_token_type": ID_TOKEN}
        if self.scope:
            form["scope"] = self.scope
        basic = (self.idp_client_id, self._idp_secret) if self._idp_secret is not None else None
        if basic is None:
            form["client_id"] = self.idp_client_id
        self.exchanges += 1
        step = "token exchange at the IdP"
        doc = await post_token(self._http, self.idp_token_url, form, basic, step)
        if doc.get("issued_token_type") != ID_JAG:
            raise UpstreamAuthError(f"{step} {self.idp_token_url}: issued_token_type is not {ID_JAG}")
        jag = doc.get("access_token")
        if not isinstance(jag, str) or not jag:
            raise UpstreamAuthError(f"{step} {self.idp_token_url}: sent no ID-JAG (access_token)")
        return await self._jwt_bearer(jag)  # SEP-990 section 5


async def post_token(http: httpx.AsyncClient, url: str, form: dict[str, str], basic: tuple[str, str] | None,
                     step: str) -> dict[str, Any]:
    """POST ``form`` to a token endpoint; its JSON answer, or an error naming the step, URL and OAuth error code."""
    try:
        resp = await http.post(url, data=form, auth=basic or httpx.USE_CLIENT_DEFAULT,
                               headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise UpstreamAuthError(f"{step} to {url}: unreachable ({type(exc).__name__})") from None
    if resp.status_code != 200:
        code = oauth_error_code(resp)
        why = f"{step} to {url}: refused with HTTP {resp.status_code}" + (f" ({code})" if code else "")
        if 400 <= resp.status_code < 500:
            raise GrantRefused(why, code or None)
        raise TokenRequestFailed(why, code or None)
    try:
        return json_object(resp)
    except ValueError as exc:
        raise UpstreamAuthError(f"{step} to {url}: {exc}") from None


def _access_token(doc: dict[str, Any], step: str) -> tuple[str, float]:
    token = doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise UpstreamAuthError(f"{step}: sent no usable access_token")
    if "\r" in token or "\n" in token or "\x00" in token:  # it goes into a header line
        raise UpstreamAuthError(f"{step}: sent an access_token with CR, LF or NUL")
    try:
        lifetime = float(doc.get("expires_in") or DEFAULT_LIFETIME)
    except (TypeError, ValueError):
        raise UpstreamAuthError(f"{step}: sent an expires_in that is not a number") from None
    return token, lifetime if lifetime > 0 else DEFAULT_LIFETIME


def assertion_token_source(config: UpstreamConfig, *, http: httpx.AsyncClient | None = None,
                           clock: Callable[[], float] = time.monotonic) -> AssertionGrantTokenSource | None:
    """The token source for an upstream whose ``oauth_grant`` is ``jwt_bearer`` or ``token_exchange``, else None."""
    grant = config.oauth_grant
    if grant not in ("jwt_bearer", "token_exchange"):
        return None
    secret = _env(config.oauth_client_secret_env, config.name)
    key = config.oauth_private_key_file.read_text(encoding="utf-8") if config.oauth_private_key_file else None
    common: AssertionGrantOptions = {
        "token_url": config.oauth_token_url, "client_id": config.oauth_client_id, "client_secret": secret,
        "private_key": key, "auth_method": config.oauth_token_auth_method, "scope": config.oauth_scope,
        "audience": config.oauth_audience, "server_url": config.url, "upstream": config.name, "http": http,
        "clock": clock,
    }
    if grant == "jwt_bearer":
        assert config.oauth_assertion_file is not None  # the config's validation says so
        return JwtBearerTokenSource(config.oauth_assertion_file, **common)
    assert config.oauth_id_token_file is not None and config.oauth_idp_token_url and config.oauth_idp_client_id
    return TokenExchangeTokenSource(
        config.oauth_id_token_file, idp_token_url=config.oauth_idp_token_url,
        idp_client_id=config.oauth_idp_client_id,
        idp_client_secret=_env(config.oauth_idp_client_secret_env, config.name), **common)


def _env(name: str | None, upstream: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"env var {name} (upstream {upstream}) is empty or unset")
    return value
