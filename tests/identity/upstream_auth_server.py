"""A small authorization server and the MCP server it protects, on one loopback port, for sign-in tests.

Test scaffolding, not a mock of Triplock: a real official-SDK MCP server (tool ``note``) behind a
bearer check that answers 401 with an RFC 9728 challenge, its protected resource metadata, RFC 8414
metadata (PKCE S256, RFC 9207 ``iss``, ``offline_access``), dynamic client registration (RFC 7591,
``client_secret_basic``), ``/authorize`` that sends the browser straight back with code, state and
iss (no login page: the admin is whoever holds the link), and ``/token`` that checks the PKCE
verifier, the redirect URI and the client's secret, and rotates refresh tokens. Every request to
``/authorize``, ``/token`` and ``/register`` is kept, and every token the MCP server accepted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support import REPO, create_api_key, free_port, gateway_cmd, wait_until_ready, write_config

SCOPE = "notes.read"


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 section 4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class AuthServer:
    """Its behaviour is set by the fields; what it saw is kept in the lists."""

    expires_in: int = 3600
    refuse_refresh: bool = False
    meta_overrides: dict[str, Any] = field(default_factory=dict)  # merged into the RFC 8414 metadata
    prm_servers: list[str] | None = None  # the PRM's authorization_servers (default: this issuer)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # access tokens, in order
    refresh_tokens: list[str] = field(default_factory=list)  # refresh tokens, in order (the last one is live)
    seen: list[str] = field(default_factory=list)  # bearer tokens the MCP server accepted
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    access: dict[str, float] = field(default_factory=dict)  # token -> expiry
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.resource = self.url + "/mcp"
        self.challenge = (f'Bearer resource_metadata="{self.url}/.well-known/oauth-protected-resource/mcp",'
                          f' scope="{SCOPE}"')

    # ---- the authorization server -------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {"issuer": self.url, "authorization_endpoint": self.url + "/authorize",
                "token_endpoint": self.url + "/token", "registration_endpoint": self.url + "/register",
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"], "scopes_supported": [SCOPE, "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "authorization_response_iss_parameter_supported": True, **self.meta_overrides}

    async def _prm(self, request: Request) -> Response:
        return JSONResponse({"resource": self.resource, "authorization_servers": self.prm_servers or [self.url],
                             "scopes_supported": [SCOPE]})

    async def _as_meta(self, request: Request) -> Response:
        return JSONResponse(self.metadata())

    async def _register(self, request: Request) -> Response:
        body = await request.json()
        self.registrations.append(body)
        client_id, secret = f"client-{next(self._ids)}", secrets.token_urlsafe(16)
        self.clients[client_id] = {"secret": secret, "redirect_uris": body["redirect_uris"]}
        return JSONResponse({"client_id": client_id, "client_secret": secret, "redirect_uris": body["redirect_uris"],
                             "token_endpoint_auth_method": "client_secret_basic"}, status_code=201)

    async def _authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        client = self.clients.get(q.get("client_id", ""))
        if client is None or q.get("redirect_uri") not in client["redirect_uris"]:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {k: q.get(k, "") for k in ("client_id", "redirect_uri", "code_challenge", "scope")}
        back = urlencode({"code": code, "state": q["state"], "iss": self.url})
        return RedirectResponse(f"{q['redirect_uri']}?{back}", status_code=302)

    def _issue(self, scope: str) -> JSONResponse:
        access, refresh = f"at-{secrets.token_urlsafe(12)}", f"rt-{secrets.token_urlsafe(12)}"
        self.access[access] = time.time() + self.expires_in
        self.issued.append(access)
        self.refresh_tokens.append(refresh)
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in,
                             "refresh_token": refresh, "scope": scope}, headers={"cache-control": "no-store"})

    async def _token(self, request: Request) -> Response:
        form = dict(await request.form())
        basic = request.headers.get("authorization", "")
        user = base64.b64decode(basic[6:]).decode().split(":", 1) if basic.startswith("Basic ") else None
        self.token_requests.append({"form": form, "basic": user})
        client = self.clients.get(user[0]) if user else None
        if client is None or user is None or client["secret"] != user[1]:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            if (code is None or code["client_id"] != user[0] or code["redirect_uri"] != form.get("redirect_uri")
                    or s256(form.get("code_verifier", "")) != code["code_challenge"]):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return self._issue(code["scope"])
        if form.get("grant_type") == "refresh_token":
            live = self.refresh_tokens[-1:] if self.refresh_tokens else []
            if self.refuse_refresh or form.get("refresh_token") not in live:  # rotation: only the newest works
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return self._issue(SCOPE)
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    # ---- the protected MCP server ---------------------------------------------------------------------------
    def _valid(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        value = dict(headers).get(b"authorization", b"").decode()
        token = value[7:] if value.startswith("Bearer ") else ""
        return token if self.access.get(token, 0) > time.time() else None

    def app(self) -> Any:
        server = MCPServer("notes", version="1.0.0", log_level="WARNING")

        @server.tool(description="Keep a note.")
        def note(text: str) -> str:
            return f"noted {text}"

        mcp_app = server.streamable_http_app(stateless_http=True, json_response=True)
        oauth = Starlette(routes=[
            Route("/.well-known/oauth-protected-resource/mcp", self._prm),
            Route("/.well-known/oauth-authorization-server", self._as_meta),
            Route("/register", self._register, methods=["POST"]),
            Route("/authorize", self._authorize),
            Route("/token", self._token, methods=["POST"])])

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await mcp_app(scope, receive, send)
            elif scope["path"].startswith("/mcp"):
                token = self._valid(scope["headers"])
                if token is None:
                    await JSONResponse({"error": "invalid_token"}, status_code=401,
                                       headers={"www-authenticate": self.challenge})(scope, receive, send)
                    return
                self.seen.append(token)
                await mcp_app(scope, receive, send)
            else:
                await oauth(scope, receive, send)

        return asgi

    def __enter__(self) -> AuthServer:
        self._loop = asyncio.new_event_loop()
        self._server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning", lifespan="on",
                                                     access_log=False))
        self._thread = threading.Thread(target=self._serve, name="upstream-auth-server", daemon=True)
        self._thread.start()  # the socket listens already: clients queue until startup is done
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._server.serve(sockets=[self.sock]))

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._loop.close()
        self.sock.close()


@dataclass
class SignInGateway:
    """A real ``triplock serve`` (API keys, SQLite store) in front of ``auth``'s MCP server as upstream ``notes``;
    its output goes to a file (read back to check that no token was logged)."""

    auth: AuthServer
    tmp: Path
    admin: str = ""
    agent: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        keys = self.tmp / "keys.json"
        self.admin = create_api_key(keys, "ops-admin", "agents-admin")
        self.agent = create_api_key(keys, "agent-1", "agents-run")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.audit = self.tmp / "audit.jsonl"
        self.log = self.tmp / "gateway.log"
        self.db = self.tmp / "state.sqlite"
        self.config = write_config(
            self.tmp / "triplock.toml", port,
            [{"name": "notes", "transport": "http", "url": self.auth.resource, "oauth_grant": "authorization_code"}],
            auth={"mode": "api_key", "api_keys_file": str(keys)}, store={"kind": "sqlite", "path": str(self.db)})

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(gateway_cmd(self.config), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_until_ready(self.base + "/healthz", self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def authorize(self, token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token or self.admin}"}
        return httpx.post(f"{self.base}/api/upstreams/notes/authorize", json={}, headers=headers, timeout=20)

    def sign_in(self) -> httpx.Response:
        """An admin's whole sign-in: the URL from the API, then the browser's redirects to the callback page."""
        resp = self.authorize()
        assert resp.status_code == 200, resp.text
        return httpx.get(resp.json()["authorization_url"], follow_redirects=True, timeout=20)

    def status(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.base}/api/upstreams/status", headers={"authorization": f"Bearer {self.admin}"})
        assert resp.status_code == 200, resp.text
        return dict(resp.json()["upstreams"][0])

    def audit_events(self, event_type: str) -> list[dict[str, Any]]:
        lines = self.audit.read_text().splitlines() if self.audit.exists() else []
        return [r for r in map(json.loads, lines) if r["type"] == event_type]


@contextlib.contextmanager
def running_signin_gateway(tmp: Path) -> Iterator[SignInGateway]:
    """An authorization server with its MCP server, and a gateway in front, until the block ends."""
    with AuthServer() as auth:
        gateway = SignInGateway(auth, tmp)
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()
