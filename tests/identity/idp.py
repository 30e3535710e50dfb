"""A tiny identity provider for tests: real key pairs, a JWKS over loopback HTTP, a token endpoint.

``FakeIdp`` holds signing keys (RSA and EC, made with ``cryptography``), publishes the public
halves at ``/jwks``, serves RFC 8414 metadata, and issues client-credentials tokens whose
audience is the ``resource`` the client asked for (RFC 8707), as a real authorization server
would. ``rotate()`` swaps the published keys, to test that the gateway picks new keys up.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return jwk


def new_key(alg: str = "RS256") -> SigningKey:
    if alg.startswith("ES"):
        private: Any = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(f"k-{uuid.uuid4().hex[:8]}", alg, private)


@dataclass
class FakeIdp:
    """Issuer + JWKS + token endpoint on 127.0.0.1; start() returns self."""

    keys: list[SigningKey] = field(default_factory=lambda: [new_key("RS256"), new_key("ES256")])
    clients: dict[str, str] = field(default_factory=lambda: {"agent-ci": "s3cret"})
    client_claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    jwks_fetches: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)
    jwks_status: int = 200
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    def start(self) -> FakeIdp:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path == "/jwks":
                    idp.jwks_fetches += 1
                    self._json(idp.jwks_status, {"keys": [k.public_jwk() for k in idp.keys]})
                elif self.path == "/.well-known/oauth-authorization-server":
                    self._json(200, {
                        "issuer": idp.issuer, "token_endpoint": idp.url + "/token",
                        "authorization_endpoint": idp.url + "/authorize", "jwks_uri": idp.jwks_url,
                        "grant_types_supported": ["client_credentials"], "response_types_supported": ["code"],
                        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    })
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                if self.path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                cid, secret = form.get("client_id"), form.get("client_secret")
                basic = self.headers.get("authorization", "")
                if basic.lower().startswith("basic "):
                    cid, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
                idp.token_requests.append({**form, "client_id": cid or ""})
                if form.get("grant_type") != "client_credentials" or idp.clients.get(cid or "") != secret:
                    self._json(401, {"error": "invalid_client"})
                    return
                claims = {"sub": cid, "client_id": cid, "scope": form.get("scope", ""),
                          **idp.client_claims.get(cid or "", {})}
                token = idp.token(aud=form.get("resource", "urn:none"), **claims)
                self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 600})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Publish a brand-new key only (the old ones are retired)."""
        key = new_key(alg)
        self.keys = [key]
        return key

    def token(self, *, key: SigningKey | None = None, lifetime: float = 300.0, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        """A signed access token; claims override the defaults (iss, sub, iat, exp)."""
        key = key or self.keys[0]
        now = int(time.time())
        body: dict[str, Any] = {"iss": self.issuer, "sub": "user-1", "iat": now, "exp": now + int(lifetime)}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid, **(headers or {})})
