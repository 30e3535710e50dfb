"""Which browser requests the gateway serves at all: Host, Origin and cross-site writes, in one place.

A web page the operator visits can send requests to the gateway on a loopback port (a no-cors
``fetch``, a form post) and, with DNS rebinding, can even read the answers under its own name.
So every route, in every ``auth.mode``, checks three things before anything else runs:

* **Host**: one of the names this gateway answers to (DNS-rebinding protection; 421 otherwise).
* **Origin**: when a browser sends one, it must be the gateway's own origin (the ``Host`` it
  addressed, a loopback name on the gateway's port, ``public_url``, the console URL) or listed in
  ``server.allowed_origins`` (403 otherwise). ``Origin: null`` never matches.
* **Cross-site writes** (POST, PUT, PATCH, DELETE outside the console): the body must be declared
  ``application/json``. A cross-site form or a no-cors ``fetch`` can only send the three "simple"
  content types without a CORS preflight, which the gateway never grants, so such a request is
  refused (415) before it reaches a handler. The console's forms carry their own synchronizer
  CSRF tokens (:mod:`gateway.approvals.console_session`) and are exempt from this one rule only.

:class:`OriginPolicy` is the pure decision (used by the raw-ASGI MCP endpoint on its hot path: one
dict lookup and one set lookup per request); :class:`OriginGuard` is the ASGI middleware that
applies it to the Starlette routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.config import ServerConfig

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Methods a cross-site page can send without a preflight; only POST of them changes state here.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CONSOLE_PREFIX = "/console"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: the HTTP status, a short code and a message for the caller."""

    status: int
    code: str
    message: str


BAD_HOST = Refusal(421, "invalid_host", "Invalid Host header")
BAD_ORIGIN = Refusal(403, "forbidden_origin", "Forbidden: Origin not allowed")
CROSS_SITE = Refusal(403, "cross_site", "Forbidden: cross-site request")
NOT_JSON = Refusal(415, "unsupported_media_type",
                   "Unsupported Media Type: a state-changing request must send Content-Type: application/json")


def _origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL (as a browser's Origin header spells it), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _netloc_of(url: str) -> str | None:
    parts = urlsplit(url)
    return parts.netloc.lower() or None


class OriginPolicy:
    """The names and origins this gateway answers to, and the checks every request passes."""

    def __init__(self, hosts: Iterable[str], origins: Iterable[str], any_host: bool = False) -> None:
        self.hosts = frozenset(h.lower() for h in hosts)
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self.any_host = any_host

    @classmethod
    def from_config(cls, server: ServerConfig, urls: Iterable[str | None] = ()) -> OriginPolicy:
        """The policy for a server config; ``urls`` are more URLs that name this gateway (the console's).

        Hosts: the bind address (plus the loopback names on a loopback bind), each with and without
        the port, ``server.allowed_hosts``, and the host of ``public_url`` and of ``urls``.
        Origins: ``server.allowed_origins``, the loopback names on the gateway's port (a page served
        by the gateway under ``localhost`` calling ``127.0.0.1``), and the origins of the URLs.
        """
        names = {server.host, *LOOPBACK_NAMES} if server.is_loopback else {server.host}
        hosts = {*names, *(f"{h}:{server.port}" for h in names)}
        origins = set(server.allowed_origins)
        if server.is_loopback:
            origins |= {f"{scheme}://{h}:{server.port}" for h in names for scheme in ("http", "https")}
        for url in (server.public_url, *urls):
            if not url:
                continue
            netloc, origin = _netloc_of(url), _origin_of(url)
            if netloc:
                hosts.add(netloc)
            if origin:
                origins.add(origin)
        explicit = set(server.allowed_hosts)
        return cls(hosts | (explicit - {"*"}), origins, any_host="*" in explicit)

    def host_ok(self, host: str) -> bool:
        """Whether a ``Host`` header names this gateway."""
        return self.any_host or host.lower() in self.hosts

    def origin_ok(self, origin: str, host: str) -> bool:
        """Whether a browser ``Origin`` may drive the gateway addressed as ``host`` (already checked)."""
        origin = origin.lower()
        if origin in self.origins:
            return True
        # Same origin: the page was served under the very name the request addresses, which the
        # Host check has accepted. ('null' and anything without a scheme never match.)
        scheme, sep, netloc = origin.partition("://")
        return bool(sep) and scheme in ("http", "https") and netloc == host.lower()

    def check(self, headers: dict[str, str]) -> Refusal | None:
        """Host and Origin checks for any request (lower-cased header names); None when it may pass."""
        host = headers.get("host", "")
        # Inlined host_ok (this runs on every MCP request): the exact name first, lower-cased only if needed.
        if not (host in self.hosts or self.any_host or host.lower() in self.hosts):
            return BAD_HOST
        origin = headers.get("origin")
        if origin is not None and not self.origin_ok(origin, host):
            return BAD_ORIGIN
        return None

    def check_write(self, method: str, path: str, headers: dict[str, str]) -> Refusal | None:
        """The Host and Origin checks, then the cross-site write rules for state-changing methods."""
        refusal = self.check(headers)
        if refusal is not None or method not in STATE_CHANGING:
            return refusal
        if headers.get("origin") is None and headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return CROSS_SITE  # a browser that sent no Origin still says where the request came from
        if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
            return None  # console forms: synchronizer CSRF tokens, checked by the console itself
        if method in _BODY_METHODS and not _is_json(headers.get("content-type", "")):
            return NOT_JSON
        return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"


class OriginGuard:
    """ASGI middleware: :meth:`OriginPolicy.check_write` before every HTTP request reaches the app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.policy.check_write(scope["method"], scope["path"], headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"error": refusal.code, "message": refusal.message})
        await send({"type": "http.response.start", "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["BAD_HOST", "BAD_ORIGIN", "CROSS_SITE", "NOT_JSON", "OriginGuard", "OriginPolicy", "Refusal"]
