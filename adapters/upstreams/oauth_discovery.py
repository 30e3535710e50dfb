"""Where an upstream's tokens come from: RFC 9728 and RFC 8414 / OpenID discovery, as MCP specifies it.

From the upstream's 401 (its ``WWW-Authenticate: Bearer resource_metadata=...``) or the
well-known URLs, the protected resource metadata names the resource and its authorization
server; that server's metadata names the token endpoint and what it supports. Each step that
fails raises :class:`DiscoveryFailed` naming the step and the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class DiscoveryFailed(Exception):
    """A discovery step failed; the message names the step and the URL (never a secret)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """The parameters of a ``WWW-Authenticate: Bearer`` challenge (RFC 6750, RFC 9728 section 5.1)."""

    resource_metadata: str | None = None
    scope: str | None = None
    error: str | None = None

    @classmethod
    def parse(cls, header: str | None) -> Challenge:
        """The Bearer challenge in ``header`` (empty when there is none)."""
        if not header or not header.lstrip().lower().startswith("bearer"):
            return cls()
        params = {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(header)}
        return cls(params.get("resource_metadata"), params.get("scope"), params.get("error"))


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    """What discovery found: the resource to ask a token for and the authorization server's endpoints."""

    resource: str
    issuer: str
    token_endpoint: str
    scopes_supported: tuple[str, ...] = ()
    auth_methods: tuple[str, ...] = ("client_secret_basic",)  # RFC 8414's default when unlisted
    signing_algs: tuple[str, ...] = field(default=())


def protected_resource_urls(server_url: str) -> list[str]:
    """RFC 9728 well-known URLs for ``server_url``, path-specific first, as MCP orders them."""
    parts = urlsplit(server_url)
    path = parts.path.rstrip("/")
    root = urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-protected-resource", "", ""))
    return [root + path, root] if path else [root]


def authorization_server_urls(issuer: str) -> list[str]:
    """RFC 8414 and OpenID Connect discovery URLs for ``issuer``, in the order MCP specifies."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if not path:
        return [f"{base}/.well-known/oauth-authorization-server", f"{base}/.well-known/openid-configuration"]
    return [
        f"{base}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/openid-configuration{path}",
        f"{base}{path}/.well-known/openid-configuration",
    ]


def _same_resource(named: str, server_url: str) -> bool:
    """True when the metadata's ``resource`` covers the upstream URL (same origin, a path prefix of it)."""
    a, b = urlsplit(named), urlsplit(server_url)
    if (a.scheme.lower(), a.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()):
        return False
    prefix = a.path.rstrip("/")
    return b.path.rstrip("/") == prefix or b.path.startswith(prefix + "/")


async def _get_json(http: httpx.AsyncClient, url: str, step: str) -> dict[str, Any] | None:
    """The JSON object at ``url``; None on 404 (try the next URL); an error naming ``step`` otherwise."""
    try:
        resp = await http.get(url, headers={"accept": "application/json", "mcp-protocol-version": "2025-11-25"})
    except httpx.HTTPError as exc:
        raise DiscoveryFailed(f"{step}: {url} unreachable ({type(exc).__name__})") from None
    if resp.status_code in (404, 405):
        return None
    if resp.status_code != 200:
        raise DiscoveryFailed(f"{step}: {url} answered HTTP {resp.status_code}")
    try:
        doc = resp.json()
    except ValueError:
        raise DiscoveryFailed(f"{step}: {url} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise DiscoveryFailed(f"{step}: {url} did not answer a JSON object")
    return doc


async def _first(http: httpx.AsyncClient, urls: list[str], step: str) -> tuple[str, dict[str, Any]]:
    for url in urls:
        doc = await _get_json(http, url, step)
        if doc is not None:
            return url, doc
    raise DiscoveryFailed(f"{step}: none of {', '.join(urls)} was found")


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


async def discover(http: httpx.AsyncClient, server_url: str, challenge: Challenge) -> AuthorizationServer:
    """Follow the upstream's metadata to its authorization server's token endpoint.

    Refuses metadata for another resource (a token for it would be sent to this upstream) and
    authorization server metadata whose ``issuer`` is not the server it was fetched for (RFC 8414
    section 3.3).
    """
    step = "protected resource metadata (RFC 9728)"
    urls = [challenge.resource_metadata] if challenge.resource_metadata else protected_resource_urls(server_url)
    prm_url, prm = await _first(http, urls, step)
    resource = prm.get("resource")
    if not isinstance(resource, str) or not _same_resource(resource, server_url):
        raise DiscoveryFailed(f"{step}: {prm_url} names resource {resource!r}, not this upstream ({server_url})")
    servers = _strings(prm.get("authorization_servers"))
    if not servers:
        raise DiscoveryFailed(f"{step}: {prm_url} names no authorization_servers")
    issuer = servers[0]
    step = "authorization server metadata (RFC 8414 / OpenID discovery)"
    as_url, meta = await _first(http, authorization_server_urls(issuer), step)
    if str(meta.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise DiscoveryFailed(f"{step}: {as_url} names issuer {meta.get('issuer')!r}, not {issuer!r}")
    token_endpoint = meta.get("token_endpoint")
    if not isinstance(token_endpoint, str) or not token_endpoint.startswith(("https://", "http://")):
        raise DiscoveryFailed(f"{step}: {as_url} names no token_endpoint")
    grants = _strings(meta.get("grant_types_supported"))
    if grants and "client_credentials" not in grants:
        raise DiscoveryFailed(
            f"{step}: {issuer} does not offer the client_credentials grant (only {', '.join(grants)}): its flows"
            " need a person at a browser; give the upstream a token with bearer_token_env or bearer_token_file"
        )
    return AuthorizationServer(
        resource=resource,
        issuer=str(meta["issuer"]),
        token_endpoint=token_endpoint,
        scopes_supported=_strings(prm.get("scopes_supported")),
        auth_methods=_strings(meta.get("token_endpoint_auth_methods_supported")) or ("client_secret_basic",),
        signing_algs=_strings(meta.get("token_endpoint_auth_signing_alg_values_supported")),
    )
