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
    """The parameters of a ``WWW-Authenticate`` challenge of the Bearer or DPoP scheme (RFC 6750, RFC 9449
    section 7.1, RFC 9728 section 5.1): both carry ``scope``, ``error`` and ``resource_metadata`` alike."""

    resource_metadata: str | None = None
    scope: str | None = None
    error: str | None = None

    @classmethod
    def parse(cls, header: str | None) -> Challenge:
        """The Bearer or DPoP challenge in ``header`` (empty when there is none)."""
        if not header or not header.lstrip().lower().startswith(("bearer", "dpop")):
            return cls()
        params = {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(header)}
        return cls(params.get("resource_metadata"), params.get("scope"), params.get("error"))


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    """What discovery found: the resource to ask a token for and the authorization server's endpoints."""

    resource: str
    issuer: str
    token_endpoint: str
    scopes_supported: tuple[str, ...] = ()  # the protected resource's (RFC 9728), for scope selection
    auth_methods: tuple[str, ...] = ("client_secret_basic",)  # RFC 8414's default when unlisted
    signing_algs: tuple[str, ...] = field(default=())
    # what an authorization code flow needs besides (RFC 8414, RFC 9207, SEP-991)
    authorization_endpoint: str | None = None
    registration_endpoint: str | None = None
    grant_types: tuple[str, ...] = ()
    code_challenge_methods: tuple[str, ...] = ()
    as_scopes_supported: tuple[str, ...] = ()
    iss_parameter_supported: bool = False
    client_id_metadata_documents: bool = False
    legacy: bool = False  # found by the 2025-03-26 fallbacks (no protected resource metadata)
    dpop_algs: tuple[str, ...] = ()  # dpop_signing_alg_values_supported (RFC 9449 section 5.1)


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
        return json_object(resp)
    except ValueError as exc:
        raise DiscoveryFailed(f"{step}: {url} {exc}") from None


def json_object(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object ``resp`` holds; else a ValueError whose text says what it held ("did not answer JSON")."""
    try:
        doc = resp.json()
    except ValueError:
        raise ValueError("did not answer JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("did not answer a JSON object")
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
    """Follow the upstream's metadata to an authorization server that offers ``client_credentials``."""
    found = await discover_server(http, server_url, challenge)
    if found.grant_types and "client_credentials" not in found.grant_types:
        raise DiscoveryFailed(
            f"authorization server metadata (RFC 8414 / OpenID discovery): {found.issuer} does not offer the"
            f" client_credentials grant (only {', '.join(found.grant_types)}): set oauth_grant ="
            " 'authorization_code' on this upstream and connect it once with `triplock upstreams authorize NAME`"
        )
    return found


async def discover_server(http: httpx.AsyncClient, server_url: str, challenge: Challenge) -> AuthorizationServer:
    """Follow the upstream's metadata to its authorization server (any grant).

    Refuses metadata for another resource (a token for it would be sent to this upstream) and
    authorization server metadata whose ``issuer`` is not, character for character, the issuer it
    was fetched for (RFC 8414 section 3.3). An upstream with no protected resource metadata gets
    the 2025-03-26 fallbacks: authorization server metadata at its root, else /authorize, /token
    and /register there.
    """
    step = "protected resource metadata (RFC 9728)"
    urls = [challenge.resource_metadata] if challenge.resource_metadata else protected_resource_urls(server_url)
    prm_url, prm = "", None
    for url in urls:
        prm = await _get_json(http, url, step)
        if prm is not None:
            prm_url = url
            break
    if prm is None:
        if challenge.resource_metadata:
            raise DiscoveryFailed(f"{step}: {challenge.resource_metadata} was not found")
        return await _legacy(http, server_url)
    resource = prm.get("resource")
    if not isinstance(resource, str) or not _same_resource(resource, server_url):
        raise DiscoveryFailed(f"{step}: {prm_url} names resource {resource!r}, not this upstream ({server_url})")
    servers = _strings(prm.get("authorization_servers"))
    if not servers:
        raise DiscoveryFailed(f"{step}: {prm_url} names no authorization_servers")
    issuer = servers[0]
    step = "authorization server metadata (RFC 8414 / OpenID discovery)"
    as_url, meta = await _first(http, authorization_server_urls(issuer), step)
    if meta.get("issuer") != issuer:
        raise DiscoveryFailed(f"{step}: {as_url} names issuer {meta.get('issuer')!r}, not {issuer!r}"
                              " (RFC 8414 section 3.3: they must be identical)")
    return _server(resource, issuer, meta, as_url, _strings(prm.get("scopes_supported")))


def _endpoint(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _server(resource: str, issuer: str, meta: dict[str, Any], where: str, prm_scopes: tuple[str, ...],
            legacy: bool = False) -> AuthorizationServer:
    token_endpoint = _endpoint(meta, "token_endpoint")
    if token_endpoint is None:
        raise DiscoveryFailed(f"authorization server metadata (RFC 8414 / OpenID discovery): {where} names no"
                              " token_endpoint")
    return AuthorizationServer(
        resource=resource,
        issuer=issuer,
        token_endpoint=token_endpoint,
        scopes_supported=prm_scopes,
        auth_methods=_strings(meta.get("token_endpoint_auth_methods_supported")) or ("client_secret_basic",),
        signing_algs=_strings(meta.get("token_endpoint_auth_signing_alg_values_supported")),
        dpop_algs=_strings(meta.get("dpop_signing_alg_values_supported")),
        authorization_endpoint=_endpoint(meta, "authorization_endpoint"),
        registration_endpoint=_endpoint(meta, "registration_endpoint"),
        grant_types=_strings(meta.get("grant_types_supported")),
        code_challenge_methods=_strings(meta.get("code_challenge_methods_supported")),
        as_scopes_supported=_strings(meta.get("scopes_supported")),
        iss_parameter_supported=meta.get("authorization_response_iss_parameter_supported") is True,
        client_id_metadata_documents=meta.get("client_id_metadata_document_supported") is True,
        legacy=legacy,
    )


async def _legacy(http: httpx.AsyncClient, server_url: str) -> AuthorizationServer:
    """The 2025-03-26 fallbacks: the MCP server's origin is the authorization server; its metadata at the
    root, else the default endpoints there. The resource is the upstream's own URL."""
    parts = urlsplit(server_url)
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    step = "authorization server metadata at the server's root (2025-03-26 fallback)"
    url = f"{base}/.well-known/oauth-authorization-server"
    meta = await _get_json(http, url, step)
    if meta is None:
        meta = {"issuer": base, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
                "registration_endpoint": f"{base}/register", "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"]}
        url = f"{base} (default endpoints)"
    elif not _same_origin(str(meta.get("issuer", "")), base):
        # No issuer was known before this document (it was found by the server's origin, not built from an
        # issuer), so RFC 8414's exact match cannot apply; an issuer on another origin would be a mix-up.
        raise DiscoveryFailed(f"{step}: {url} names issuer {meta.get('issuer')!r}, not one at {base!r}")
    return _server(server_url, str(meta["issuer"]), meta, url, (), legacy=True)


def _same_origin(url: str, base: str) -> bool:
    """True when ``url`` is on the origin ``base`` (scheme, host and port; any path)."""
    parts = urlsplit(url)
    return bool(parts.scheme and parts.netloc) and urlunsplit((parts.scheme, parts.netloc, "", "", "")) == base
