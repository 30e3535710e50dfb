"""Who Triplock is at an upstream's authorization server, for the authorization code grant.

In the order MCP prefers: a client the operator registered beforehand (``oauth_client_id``, with
``oauth_client_secret_env`` or none for a public client); a client ID metadata document (SEP-991)
when the authorization server supports them and a document URL is configured or served; else
dynamic client registration (RFC 7591). A registration belongs to the issuer it was made at and is
never used at another one (an authorization server migration registers again).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from adapters.upstreams.oauth_discovery import AuthorizationServer
from gateway.config import UpstreamConfig
from gateway.ports.grants import SignInError

_SECRET_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """The client id (and secret) Triplock uses at one issuer, and how it authenticates at its token endpoint."""

    issuer: str
    client_id: str
    client_secret: str | None
    auth_method: str  # client_secret_basic | client_secret_post | none
    kind: str  # pre-registered | client-id-metadata-document | dynamic

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ClientRegistration | None:
        """The registration a grant record kept, or None when it holds none usable."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["issuer"]), str(data["client_id"]), data.get("client_secret"),
                       str(data["auth_method"]), str(data["kind"]))
        except KeyError:
            return None

    def token_auth(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The form fields and Basic credentials that authenticate Triplock at the token endpoint."""
        if self.auth_method == "client_secret_basic" and self.client_secret:
            return {}, (self.client_id, self.client_secret)
        if self.auth_method == "client_secret_post" and self.client_secret:
            return {"client_id": self.client_id, "client_secret": self.client_secret}, None
        return {"client_id": self.client_id}, None


def _choose_method(supported: tuple[str, ...], have_secret: bool, configured: str) -> str:
    if configured in (*_SECRET_METHODS, "none"):
        return configured
    if have_secret:
        return next((m for m in _SECRET_METHODS if m in supported), "client_secret_basic")
    return "none"


async def register_client(http: httpx.AsyncClient, config: UpstreamConfig, server: AuthorizationServer,
                          redirect_uri: str, metadata_url: str | None,
                          kept: ClientRegistration | None) -> ClientRegistration:
    """The client to use at ``server``: pre-registered, a metadata document, the one kept for this issuer,
    or a new dynamic registration. Raises SignInError naming the fix when none is possible."""
    if config.oauth_client_id:
        secret = None
        if config.oauth_client_secret_env:
            secret = os.environ.get(config.oauth_client_secret_env)
            if not secret:
                raise SignInError(f"env var {config.oauth_client_secret_env} (upstream {config.name}) is empty or"
                                  " unset")
        method = _choose_method(server.auth_methods, secret is not None, config.oauth_token_auth_method)
        return ClientRegistration(server.issuer, config.oauth_client_id, secret, method, "pre-registered")
    if server.client_id_metadata_documents and metadata_url:
        return ClientRegistration(server.issuer, metadata_url, None, "none", "client-id-metadata-document")
    if kept is not None and kept.issuer == server.issuer and kept.kind == "dynamic":
        return kept  # registered at this very issuer before: reuse, never across issuers
    if not server.registration_endpoint:
        raise SignInError(
            f"the authorization server {server.issuer} offers no dynamic client registration and no client ID"
            f" metadata document could be used: register a client there for redirect URI {redirect_uri} and set"
            f" oauth_client_id (and oauth_client_secret_env) on upstream {config.name}")
    return await _register(http, config, server, redirect_uri)


async def _register(http: httpx.AsyncClient, config: UpstreamConfig, server: AuthorizationServer,
                    redirect_uri: str) -> ClientRegistration:
    """RFC 7591 dynamic client registration, asking for the method the server supports best."""
    assert server.registration_endpoint is not None
    want = next((m for m in (*_SECRET_METHODS, "none") if m in server.auth_methods), "client_secret_basic")
    body = {"client_name": f"Triplock gateway (upstream {config.name})", "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": want, "application_type": "web"}
    step = f"dynamic client registration (RFC 7591) at {server.registration_endpoint}"
    try:
        resp = await http.post(server.registration_endpoint, json=body, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise SignInError(f"{step}: unreachable ({type(exc).__name__})") from None
    if resp.status_code not in (200, 201):
        raise SignInError(f"{step}: answered HTTP {resp.status_code}")
    try:
        doc = resp.json()
        client_id = doc["client_id"]
    except (ValueError, KeyError, TypeError):
        raise SignInError(f"{step}: answered no client_id") from None
    if not isinstance(client_id, str) or not client_id:
        raise SignInError(f"{step}: answered an empty client_id")
    secret = doc.get("client_secret") if isinstance(doc.get("client_secret"), str) else None
    method = doc.get("token_endpoint_auth_method")
    if method not in (*_SECRET_METHODS, "none"):
        method = want if secret or want == "none" else "none"
    return ClientRegistration(server.issuer, client_id, secret, str(method), "dynamic")
