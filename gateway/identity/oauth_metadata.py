"""OAuth 2.0 Protected Resource Metadata (RFC 9728): how a client finds out who issues our tokens.

An MCP client that gets a 401 reads ``resource_metadata`` from ``WWW-Authenticate`` (or tries
the well-known URLs itself), learns the authorization server and the resource identifier, and
asks that server for a token whose audience is this gateway (RFC 8707).

Served at ``/.well-known/oauth-protected-resource`` and at the path-suffixed form
``/.well-known/oauth-protected-resource/mcp`` that RFC 9728 section 3.1 derives from the
resource URL; both return the same document.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import Settings

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_url(resource: str) -> str:
    """The path-suffixed metadata URL for ``resource`` (RFC 9728 section 3.1)."""
    parts = urlsplit(resource)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{path}"


def metadata_document(settings: Settings) -> dict[str, Any]:
    """The metadata JSON for this gateway."""
    auth = settings.auth
    doc: dict[str, Any] = {
        "resource": settings.canonical_resource,
        "bearer_methods_supported": ["header"],
        "resource_name": "Triplock MCP gateway",
    }
    if auth.mode == "jwt" and auth.issuer:
        doc["authorization_servers"] = [auth.issuer]
    scopes = auth.scopes_supported or auth.required_scopes
    if scopes:
        doc["scopes_supported"] = list(scopes)
    return doc


def routes(settings: Settings) -> list[Route]:
    """Starlette routes serving the metadata at the root and the path-suffixed well-known URLs."""
    body = metadata_document(settings)

    async def protected_resource(request: Request) -> Response:
        # Public, static, and read by browser-based clients too: cacheable and CORS-open.
        return JSONResponse(
            body, headers={"cache-control": "public, max-age=300", "access-control-allow-origin": "*"}
        )

    paths = {WELL_KNOWN, WELL_KNOWN + settings.server.path.rstrip("/")}
    # Behind a proxy the public path may differ from the bind path: answer there too.
    paths.add(WELL_KNOWN + urlsplit(settings.canonical_resource).path.rstrip("/"))
    return [Route(p, protected_resource, methods=["GET"]) for p in sorted(paths)]
