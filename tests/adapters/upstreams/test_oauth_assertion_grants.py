"""Grants that need no person: a workload's JWT (RFC 7523) and an enterprise IdP's ID-JAG (SEP-990).

A small authorization server and IdP run on loopback (real HTTP, real signatures): the token
sources discover the server from the upstream's 401 as in production, and every form parameter
they send is checked exactly. The same flows through a running Triplock, against the conformance
suite's own servers, are in tests/conformance/test_client_conformance.py.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.upstreams.oauth import UpstreamAuthError, token_source_for
from adapters.upstreams.oauth_assertion_grants import (
    ID_JAG,
    ID_TOKEN,
    JWT_BEARER,
    TOKEN_EXCHANGE,
    AssertionGrantTokenSource,
    JwtBearerTokenSource,
    TokenExchangeTokenSource,
    assertion_token_source,
)
from gateway.config import UpstreamConfig

WORKLOAD_ISSUER = "https://workload-issuer.test"
IDP_CLIENT, IDP_SECRET = "gateway-at-idp", "idp-s3cret-value"
AS_CLIENT, AS_SECRET = "gateway-at-as", "as-s3cret-value"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Request:
    path: str
    form: dict[str, str]
    basic: tuple[str, str] | None


@dataclass
class AuthServers:
    """The upstream's protected resource metadata and authorization server, and an enterprise IdP, on one port."""

    workload_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    idp_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    jag_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    requests: list[Request] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    auth_methods: tuple[str, ...] = ("none",)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def resource(self) -> str:
        return self.url + "/mcp"

    @property
    def challenge(self) -> str:
        return f'Bearer resource_metadata="{self.url}/.well-known/oauth-protected-resource/mcp"'

    def workload_jwt(self, *, aud: str | None = None, lifetime: int = 600, sub: str = "system:sa:triplock") -> str:
        now = int(time.time())
        claims = {"iss": WORKLOAD_ISSUER, "sub": sub, "aud": aud or self.url, "iat": now, "exp": now + lifetime,
                  "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.workload_key, algorithm="ES256")

    def id_token(self, *, aud: str = IDP_CLIENT, lifetime: int = 3600) -> str:
        now = int(time.time())
        claims = {"iss": self.url + "/idp", "sub": "svc-triplock", "aud": aud, "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, self.idp_key, algorithm="ES256")

    def start(self) -> AuthServers:
        servers = self

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
                if self.path == "/.well-known/oauth-protected-resource/mcp":
                    self._json(200, {"resource": servers.resource, "authorization_servers": [servers.url]})
                elif self.path == "/.well-known/oauth-authorization-server":
                    self._json(200, {"issuer": servers.url, "token_endpoint": servers.url + "/token",
                                     "grant_types_supported": [JWT_BEARER],
                                     "token_endpoint_auth_methods_supported": list(servers.auth_methods)})
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                header = self.headers.get("authorization", "")
                basic = None
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    basic = (user, password)
                servers.requests.append(Request(self.path, form, basic))
                status, answer = servers.idp_token(form, basic) if self.path == "/idp/token" else \
                    servers.as_token(form, basic)
                self._json(status, answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def as_token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        """The upstream's authorization server: the jwt-bearer grant only, refusing as RFC 6749 section 5.2 says."""
        if form.get("grant_type") != JWT_BEARER:
            return 400, {"error": "unsupported_grant_type"}
        scopes = form.get("scope", "").split()
        if "forbidden" in scopes:
            return 400, {"error": "invalid_scope", "error_description": f"no {form['scope']} for you"}
        if "not-this-client" in scopes:
            return 400, {"error": "unauthorized_client"}
        assertion = form.get("assertion", "")
        try:
            if jwt.get_unverified_header(assertion).get("typ") == "oauth-id-jag+jwt":
                if basic != (AS_CLIENT, AS_SECRET):
                    return 401, {"error": "invalid_client"}
                claims = jwt.decode(assertion, self.jag_key.public_key(), algorithms=["ES256"], audience=self.url)
                if claims["client_id"] != basic[0] or claims["resource"] != self.resource:
                    return 400, {"error": "invalid_grant"}
            else:
                jwt.decode(assertion, self.workload_key.public_key(), algorithms=["ES256"], audience=self.url)
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": f"bad assertion {assertion}: {exc}"}
        token = f"at-{uuid.uuid4().hex}"
        self.issued.append(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 600}

    def idp_token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        """The enterprise IdP: RFC 8693 exchange of an ID token for an ID-JAG (SEP-990 section 4)."""
        if basic != (IDP_CLIENT, IDP_SECRET):
            return 401, {"error": "invalid_client"}
        try:
            claims = jwt.decode(form.get("subject_token", ""), self.idp_key.public_key(), algorithms=["ES256"],
                                audience=basic[0])
        except jwt.PyJWTError:
            return 400, {"error": "invalid_grant", "error_description": "Audience validation failed"}
        now = int(time.time())
        jag = jwt.encode({"iss": self.url + "/idp", "sub": claims["sub"], "aud": form["audience"],
                          "resource": form["resource"], "client_id": AS_CLIENT, "jti": uuid.uuid4().hex,
                          "iat": now, "exp": now + 300}, self.jag_key, algorithm="ES256",
                         headers={"typ": "oauth-id-jag+jwt"})
        self.issued.append(jag)
        return 200, {"access_token": jag, "issued_token_type": ID_JAG, "token_type": "N_A", "expires_in": 300}


@pytest.fixture
def servers() -> Iterator[AuthServers]:
    running = AuthServers().start()
    yield running
    running.stop()


def jwt_bearer_config(servers: AuthServers, assertion_file: Path, **extra: Any) -> UpstreamConfig:
    return UpstreamConfig(name="crm", transport="http", url=servers.resource, oauth_grant="jwt_bearer",
                          oauth_assertion_file=assertion_file, oauth_client_id="triplock-workload", **extra)


def token_exchange_config(servers: AuthServers, id_token_file: Path) -> UpstreamConfig:
    return UpstreamConfig(name="crm", transport="http", url=servers.resource, oauth_grant="token_exchange",
                          oauth_client_id=AS_CLIENT, oauth_client_secret_env="CRM_AS_SECRET",
                          oauth_id_token_file=id_token_file, oauth_idp_token_url=servers.url + "/idp/token",
                          oauth_idp_client_id=IDP_CLIENT, oauth_idp_client_secret_env="CRM_IDP_SECRET")


async def discovered(source: AssertionGrantTokenSource | None, servers: AuthServers) -> AssertionGrantTokenSource:
    """The source after the upstream's first 401, as HttpUpstream hands it over."""
    assert source is not None and not source.ready
    assert await source.headers() == {}
    assert await source.refused(401, servers.challenge) is True
    assert source.ready and source.token_url == servers.url + "/token"
    return source


async def test_jwt_bearer_sends_the_workload_token_as_the_assertion(servers: AuthServers, tmp_path: Path) -> None:
    workload = servers.workload_jwt()
    (tmp_path / "token").write_text(workload + "\n")
    source = await discovered(assertion_token_source(jwt_bearer_config(servers, tmp_path / "token")), servers)
    assert await source.headers() == {"authorization": f"Bearer {servers.issued[0]}"}
    assert servers.requests == [Request("/token", {"grant_type": JWT_BEARER, "assertion": workload,
                                                   "client_id": "triplock-workload", "resource": servers.resource},
                                        None)]
    await source.aclose()


async def test_a_rotated_token_file_is_read_for_the_next_token(servers: AuthServers, tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "token"
    first, second = servers.workload_jwt(), servers.workload_jwt()
    path.write_text(first)
    source = await discovered(assertion_token_source(jwt_bearer_config(servers, path), clock=clock), servers)
    token = await source.token()
    path.write_text(second)  # the kubelet rotates the projected token
    assert await source.token() == token, "a live access token is kept"
    clock.now += 600 - 59  # expires_in=600; refreshed 60 s before
    assert await source.token() == servers.issued[1]
    assert [r.form["assertion"] for r in servers.requests] == [first, second]
    await source.aclose()


@pytest.mark.parametrize(("scope", "workload", "code"), [
    (None, "expired", "invalid_grant"),
    (None, "wrong_audience", "invalid_grant"),
    ("forbidden", "valid", "invalid_scope"),
    ("not-this-client", "valid", "unauthorized_client"),
])
async def test_a_refusal_is_reported_once_and_never_retried(servers: AuthServers, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture, scope: str | None,
                                                            workload: str, code: str) -> None:
    caplog.set_level(logging.DEBUG)
    assertion = {"expired": servers.workload_jwt(lifetime=-60), "valid": servers.workload_jwt(),
                 "wrong_audience": servers.workload_jwt(aud="https://wrong.example")}[workload]
    path = tmp_path / "token"
    path.write_text(assertion)
    config = jwt_bearer_config(servers, path, oauth_scope=scope)
    source = await discovered(assertion_token_source(config), servers)
    url = servers.url + "/token"
    with pytest.raises(UpstreamAuthError) as first:
        await source.token()
    assert str(first.value) == f"token request (jwt_bearer) to {url}: refused with HTTP 400 ({code})"
    with pytest.raises(UpstreamAuthError) as again:
        await source.headers()
    assert str(again.value) == f"{first.value}; not sent again until {path} holds a new token"
    assert [(r.path, r.form["grant_type"]) for r in servers.requests] == [("/token", JWT_BEARER)], "no retry"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("triplock")] == [
        f"upstream crm: {first.value}"]
    assert assertion not in caplog.text
    await source.aclose()


async def test_a_new_token_in_the_file_is_tried_after_a_refusal(servers: AuthServers, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(servers.workload_jwt(lifetime=-60))
    source = await discovered(assertion_token_source(jwt_bearer_config(servers, path)), servers)
    with pytest.raises(UpstreamAuthError):
        await source.token()
    path.write_text(servers.workload_jwt())
    assert await source.token() == servers.issued[0]
    assert len(servers.requests) == 2
    await source.aclose()


async def test_an_unreadable_token_file_is_named_and_nothing_is_sent(servers: AuthServers, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  \n")
    source = await discovered(assertion_token_source(jwt_bearer_config(servers, path)), servers)
    with pytest.raises(UpstreamAuthError) as empty:
        await source.token()
    assert str(empty.value) == f"the assertion file {path} is empty"
    path.unlink()
    with pytest.raises(UpstreamAuthError) as missing:
        await source.token()
    assert str(missing.value) == f"cannot read the assertion file {path} (FileNotFoundError)"
    assert servers.requests == []
    await source.aclose()


async def test_token_exchange_at_the_idp_then_jwt_bearer_at_the_upstream(
        servers: AuthServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CRM_AS_SECRET", AS_SECRET)
    monkeypatch.setenv("CRM_IDP_SECRET", IDP_SECRET)
    servers.auth_methods = ("client_secret_post", "client_secret_basic")
    id_token = servers.id_token()
    (tmp_path / "id_token").write_text(id_token)
    source = assertion_token_source(token_exchange_config(servers, tmp_path / "id_token"))
    assert isinstance(source, TokenExchangeTokenSource)
    await discovered(source, servers)
    headers = await source.headers()
    jag, access = servers.issued
    assert headers == {"authorization": f"Bearer {access}"}
    assert servers.requests == [
        Request("/idp/token", {"grant_type": TOKEN_EXCHANGE, "requested_token_type": ID_JAG, "audience": servers.url,
                               "resource": servers.resource, "subject_token": id_token,
                               "subject_token_type": ID_TOKEN}, (IDP_CLIENT, IDP_SECRET)),
        # client_secret_basic: OAuth 2.1's default, preferred where the server lists it
        Request("/token", {"grant_type": JWT_BEARER, "assertion": jag, "resource": servers.resource},
                (AS_CLIENT, AS_SECRET)),
    ]
    for secret in (id_token, jag, access, AS_SECRET, IDP_SECRET):
        assert secret not in caplog.text
    await source.aclose()


async def test_an_idp_refusal_is_final_for_that_id_token(servers: AuthServers, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_AS_SECRET", AS_SECRET)
    monkeypatch.setenv("CRM_IDP_SECRET", IDP_SECRET)
    servers.auth_methods = ("client_secret_basic",)
    path = tmp_path / "id_token"
    path.write_text(servers.id_token(aud="someone-else"))
    source = await discovered(assertion_token_source(token_exchange_config(servers, path)), servers)
    for _ in range(2):
        with pytest.raises(UpstreamAuthError) as err:
            await source.token()
    assert str(err.value) == (f"token exchange at the IdP to {servers.url}/idp/token: refused with HTTP 400"
                              f" (invalid_grant); not sent again until {path} holds a new token")
    assert [r.path for r in servers.requests] == ["/idp/token"]
    path.write_text(servers.id_token())  # the platform renewed the gateway's ID token
    await source.token()
    assert [(r.path, r.basic) for r in servers.requests] == [
        ("/idp/token", (IDP_CLIENT, IDP_SECRET)), ("/idp/token", (IDP_CLIENT, IDP_SECRET)),
        ("/token", (AS_CLIENT, AS_SECRET))]
    await source.aclose()


@pytest.mark.parametrize(("keys", "error"), [
    ({"oauth_grant": "jwt_bearer"}, "oauth_grant 'jwt_bearer' needs 'oauth_assertion_file'"),
    ({"oauth_assertion_file": "t"}, "'oauth_assertion_file' is for oauth_grant = 'jwt_bearer' only"),
    ({"oauth_grant": "jwt_bearer", "oauth_assertion_file": "t", "oauth_id_token_file": "i"},
     "'oauth_id_token_file' is for oauth_grant = 'token_exchange' only"),
    ({"oauth_grant": "jwt_bearer", "oauth_assertion_file": "t", "oauth_client_secret_env": "S"},
     "'oauth_client_secret_env' / 'oauth_private_key_file' authenticate a client: set 'oauth_client_id' too"),
    ({"oauth_grant": "token_exchange", "oauth_client_id": "c", "oauth_client_secret_env": "S",
      "oauth_idp_token_url": "https://idp/token", "oauth_idp_client_id": "i"},
     "oauth_grant 'token_exchange' needs 'oauth_id_token_file'"),
    ({"oauth_grant": "token_exchange", "oauth_client_id": "c", "oauth_id_token_file": "i",
      "oauth_idp_token_url": "https://idp/token", "oauth_idp_client_id": "i"},
     "oauth_grant 'token_exchange' needs 'oauth_client_secret_env' or 'oauth_private_key_file'"),
    ({"oauth_grant": "token_exchange", "oauth_client_id": "c", "oauth_client_secret_env": "S",
      "oauth_id_token_file": "i", "oauth_idp_token_url": "idp/token", "oauth_idp_client_id": "i"},
     "'oauth_idp_token_url' must be an http:// or https:// URL"),
    ({"oauth_grant": "token_exchange", "oauth_client_id": "c", "oauth_client_secret_env": "S",
      "oauth_id_token_file": "i", "oauth_idp_token_url": "https://idp/token", "oauth_idp_client_id": "i",
      "oauth_token_url": "https://as/token"}, "oauth_grant 'token_exchange' discovers the upstream's authorization"),
])
def test_config_errors_name_the_key(keys: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError) as err:
        UpstreamConfig(name="crm", transport="http", url="https://crm.example/mcp", **keys)  # type: ignore[arg-type]
    assert f"Value error, {error}" in str(err.value)


def test_the_upstream_factory_picks_the_source_by_grant(servers: AuthServers, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_AS_SECRET", AS_SECRET)
    monkeypatch.setenv("CRM_IDP_SECRET", IDP_SECRET)
    assert type(token_source_for(jwt_bearer_config(servers, tmp_path / "t"))) is JwtBearerTokenSource
    assert type(token_source_for(token_exchange_config(servers, tmp_path / "i"))) is TokenExchangeTokenSource
    plain = UpstreamConfig(name="crm", transport="http", url="https://crm.example/mcp")
    assert assertion_token_source(plain) is None
    monkeypatch.delenv("CRM_IDP_SECRET")
    with pytest.raises(ValueError) as err:
        token_source_for(token_exchange_config(servers, tmp_path / "i"))
    assert str(err.value) == "env var CRM_IDP_SECRET (upstream crm) is empty or unset"
