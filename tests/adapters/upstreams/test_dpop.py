"""DPoP (RFC 9449) for authorization code upstreams: proofs, nonces, the key kept with the grant.

Proofs are checked with PyJWT and the proof's own public JWK, the way the conformance suite's
`auth/dpop` servers check them (typ, alg, no private JWK member, jti, htm, htu, iat, ath, nonce).
A small authorization server and MCP endpoint run on loopback (real HTTP): they demand a nonce
(a 400 at the token endpoint, a 401 at the resource) and bind each token to the proof key's
thumbprint. The whole flow through a running Triplock, signed in with a browser, is
tests/conformance/test_client_conformance.py (auth/dpop, auth/dpop-nonce).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from adapters.stores.memory_store import MemoryStore
from adapters.upstreams.dpop import DPoPKey, NonceMemory, asks_for_nonce, b64url, jwk_thumbprint, target_uri
from adapters.upstreams.oauth_authorization_code import DPOP_KEY, AuthorizationCodeTokenSource, token_request
from adapters.upstreams.oauth_errors import TokenRequestFailed
from adapters.upstreams.oauth_registration import ClientRegistration
from adapters.upstreams.streamable_http import HttpUpstream
from gateway.config import UpstreamConfig

AS_NONCE, RS_NONCE = "as-nonce-1", "rs-nonce-1"
ALGS = ["ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA"]  # asymmetric only, as the suite accepts


def verify_proof(proof: str, method: str, url: str, access_token: str | None = None) -> dict[str, Any]:
    """The proof's claims after the checks RFC 9449 section 4.3 (and the conformance suite) make; AssertionError
    naming the first that fails."""
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert set(header["jwk"]) == {"kty", "crv", "x", "y"}  # public members only: no "d"
    claims = jwt.decode(proof, jwt.PyJWK(header["jwk"]).key, algorithms=ALGS)
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["htm"] == method
    assert "?" not in claims["htu"] and "#" not in claims["htu"]
    assert claims["htu"] == url.split("?")[0].split("#")[0].rstrip("/")
    assert abs(time.time() - claims["iat"]) <= 300
    if access_token is not None:
        assert claims["ath"] == b64url(hashlib.sha256(access_token.encode("ascii")).digest())
    else:
        assert "ath" not in claims
    claims["jkt"] = jwk_thumbprint(header["jwk"])
    return claims


@dataclass
class Servers:
    """A token endpoint and an MCP endpoint that both demand a DPoP nonce, on one loopback port."""

    token_type: str = "DPoP"
    advertise_dpop: bool = True
    seen: list[tuple[str, str, dict[str, str], dict[str, str]]] = field(default_factory=list)  # path, verdict, ...
    bound: dict[str, str] = field(default_factory=dict)  # access token -> thumbprint it is bound to
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def token(self, headers: dict[str, str], form: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
        proof = headers.get("dpop")
        if proof is None:
            return 200, {}, {"access_token": f"bearer-{len(self.seen)}", "token_type": "Bearer", "expires_in": 3600}
        claims = verify_proof(proof, "POST", self.url + "/token")
        if claims.get("nonce") != AS_NONCE:
            return 400, {"DPoP-Nonce": AS_NONCE}, {"error": "use_dpop_nonce"}
        token = f"at-{len(self.seen)}"
        self.bound[token] = claims["jkt"]
        return 200, {}, {"access_token": token, "token_type": self.token_type, "expires_in": 3600,
                         "refresh_token": f"rt-{len(self.seen)}"}

    def mcp(self, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme == "Bearer":
            return 200, {}, {"jsonrpc": "2.0", "id": body["id"], "result": {"scheme": "Bearer"}}
        claims = verify_proof(headers["dpop"], "POST", self.url + "/mcp", token)
        assert scheme == "DPoP" and claims["jkt"] == self.bound[token]
        if claims.get("nonce") != RS_NONCE:
            return 401, {"DPoP-Nonce": RS_NONCE, "WWW-Authenticate": 'DPoP error="use_dpop_nonce", algs="ES256"'}, {}
        return 200, {}, {"jsonrpc": "2.0", "id": body["id"], "result": {"scheme": "DPoP"}}

    def metadata(self) -> dict[str, Any]:
        doc = {"issuer": self.url, "token_endpoint": self.url + "/token"}
        return {**doc, "dpop_signing_alg_values_supported": ["ES256"]} if self.advertise_dpop else doc

    def start(self) -> None:
        servers = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, headers: dict[str, str], doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                for name, value in {"content-type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/oauth-authorization-server":
                    self._answer(200, {}, servers.metadata())
                else:
                    self._answer(404, {}, {})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    if self.path == "/token":
                        form = {k: v[0] for k, v in parse_qs(raw).items()}
                        status, extra, doc = servers.token(headers, form)
                    else:
                        form = {}
                        status, extra, doc = servers.mcp(headers, json.loads(raw))
                    verdict = str(status)
                except (AssertionError, KeyError, jwt.PyJWTError) as exc:  # a bad proof: refused, and recorded
                    status, extra, doc, verdict = 400, {}, {"error": "invalid_dpop_proof"}, f"bad proof: {exc!r}"
                servers.seen.append((self.path, verdict, headers, form))
                self._answer(status, extra, doc)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    yield s
    await s.aclose()


def client() -> ClientRegistration:
    return ClientRegistration(issuer="", client_id="triplock", client_secret=None, auth_method="none",
                              kind="pre-registered")


def upstream(url: str, dpop: str = "auto") -> UpstreamConfig:
    return UpstreamConfig.model_validate({"name": "crm", "transport": "http", "url": url + "/mcp",
                                          "oauth_grant": "authorization_code", "oauth_dpop": dpop})


async def save_grant(store: MemoryStore, servers: Servers, doc: dict[str, Any], expires_in: float = 3600) -> None:
    await store.save_grant("crm", {"access_token": doc["access_token"], "refresh_token": doc.get("refresh_token"),
                                   "expires_at": time.time() + expires_in, "lifetime": 3600.0, "scopes": [],
                                   DPOP_KEY: doc.get(DPOP_KEY), "token_endpoint": servers.url + "/token",
                                   "client": client().to_dict()})


# --- proofs -------------------------------------------------------------------------------------------------


def test_a_proof_carries_exactly_what_rfc_9449_asks_and_verifies_with_its_public_jwk() -> None:
    key = DPoPKey.generate()
    before = int(time.time())
    proof = key.proof("post", "https://user:pw@AS.example:8443/oauth/token?x=1#frag", access_token="tok-1",
                      nonce="n-1")
    header = jwt.get_unverified_header(proof)
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk}
    claims = jwt.decode(proof, jwt.PyJWK(header["jwk"]).key, algorithms=["ES256"])
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce"}
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://as.example:8443/oauth/token"  # no userinfo, query or fragment
    assert before <= claims["iat"] <= int(time.time())
    assert claims["ath"] == b64url(hashlib.sha256(b"tok-1").digest())
    assert claims["nonce"] == "n-1"
    bare = jwt.decode(key.proof("GET", "http://127.0.0.1:9/mcp"), jwt.PyJWK(key.public_jwk).key, algorithms=["ES256"])
    assert set(bare) == {"jti", "htm", "htu", "iat"}  # no ath without a token, no nonce before a server sent one


def test_every_proof_has_a_fresh_jti() -> None:
    key = DPoPKey.generate()
    jtis = {jwt.decode(key.proof("POST", "http://127.0.0.1:9/mcp"), options={"verify_signature": False})["jti"]
            for _ in range(200)}
    assert len(jtis) == 200


def test_the_thumbprint_is_rfc_7638s_and_the_key_survives_the_grant_record() -> None:
    # RFC 9449 section 6.1's example key and the jkt it names
    example = {"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
               "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"}
    assert jwk_thumbprint(example) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    key = DPoPKey.generate()
    again = DPoPKey.from_jwk(json.loads(json.dumps(key.private_jwk())))  # as a store keeps it
    assert again.thumbprint == key.thumbprint == jwk_thumbprint(key.public_jwk)
    assert set(key.private_jwk()) == {"kty", "crv", "x", "y", "d"}
    with pytest.raises(ValueError, match="the grant's DPoP key is damaged"):
        DPoPKey.from_jwk({**key.private_jwk(), "d": "not base64 at all!"})
    with pytest.raises(ValueError, match="is not a P-256 JWK"):
        DPoPKey.from_jwk({"kty": "RSA"})


def test_htu_drops_userinfo_query_and_fragment() -> None:
    assert target_uri("HTTPS://a:b@Example.com/mcp?x#y") == "https://example.com/mcp"
    assert target_uri("http://[::1]:8080/mcp") == "http://[::1]:8080/mcp"
    assert target_uri("http://127.0.0.1:9") == "http://127.0.0.1:9/"


def test_only_a_dpop_challenges_use_dpop_nonce_asks_for_the_nonce() -> None:
    assert asks_for_nonce('DPoP error="use_dpop_nonce", error_description="Resource server requires nonce"')
    assert asks_for_nonce('Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce"')
    assert not asks_for_nonce('Bearer error="use_dpop_nonce", DPoP algs="ES256"')  # another scheme's error
    assert not asks_for_nonce('DPoP error="invalid_token", error_description="use_dpop_nonce later"')
    assert not asks_for_nonce(None)


def test_nonces_are_kept_per_origin_and_a_malformed_one_is_not() -> None:
    nonces = NonceMemory()
    assert nonces.learn("http://127.0.0.1:1/token", "abc") is True
    assert nonces.learn("http://127.0.0.1:1/other", "abc") is False  # the same nonce, nothing new
    assert nonces.get("http://127.0.0.1:1/mcp?x") == "abc"
    assert nonces.get("http://127.0.0.1:2/mcp") is None
    assert nonces.learn("http://127.0.0.1:2/mcp", 'has "quotes"') is False
    assert nonces.learn("http://127.0.0.1:2/mcp", "x" * 2000) is False
    assert nonces.get("http://127.0.0.1:2/mcp") is None


# --- token requests -------------------------------------------------------------------------------------------


async def test_a_token_request_learns_the_nonce_from_a_400_and_retries_once(servers: Servers) -> None:
    key, nonces = DPoPKey.generate(), NonceMemory()
    async with httpx.AsyncClient() as http:
        doc = await token_request(http, servers.url + "/token", {"grant_type": "authorization_code", "code": "c"},
                                  client(), "token request", key, nonces)
    assert [(path, verdict) for path, verdict, _, _ in servers.seen] == [("/token", "400"), ("/token", "200")]
    first, second = (jwt.decode(h["dpop"], options={"verify_signature": False}) for _, _, h, _ in servers.seen)
    assert "nonce" not in first and second["nonce"] == AS_NONCE and first["jti"] != second["jti"]
    assert doc[DPOP_KEY] == key.private_jwk()  # what the grant record keeps
    assert servers.bound[doc["access_token"]] == key.thumbprint
    assert nonces.get(servers.url + "/token") == AS_NONCE


async def test_a_bearer_answer_keeps_no_key_and_a_server_cannot_name_one(servers: Servers) -> None:
    servers.token_type = "Bearer"
    async with httpx.AsyncClient() as http:
        doc = await token_request(http, servers.url + "/token", {"grant_type": "authorization_code"}, client(),
                                  "token request", DPoPKey.generate(), NonceMemory())
    assert DPOP_KEY not in doc and doc["token_type"] == "Bearer"


async def test_the_sign_in_binds_its_token_when_the_server_offers_dpop(servers: Servers, store: MemoryStore) -> None:
    source = AuthorizationCodeTokenSource(upstream(servers.url), store)
    async with httpx.AsyncClient() as http:
        doc = await source.exchange_code(http, servers.url + "/token", {"grant_type": "authorization_code"},
                                         client(), offers_dpop=True)
        plain = await source.exchange_code(http, servers.url + "/token", {"grant_type": "authorization_code"},
                                           client(), offers_dpop=False)
    await source.aclose()
    assert doc["token_type"] == "DPoP" and set(doc[DPOP_KEY]) == {"kty", "crv", "x", "y", "d"}
    assert plain["token_type"] == "Bearer" and DPOP_KEY not in plain
    assert [(path, "dpop" in h) for path, _, h, _ in servers.seen] == [("/token", True), ("/token", True),
                                                                      ("/token", False)]


async def test_always_refuses_a_token_the_server_did_not_bind(servers: Servers, store: MemoryStore) -> None:
    servers.advertise_dpop, servers.token_type = False, "Bearer"
    source = AuthorizationCodeTokenSource(upstream(servers.url, "always"), store)
    async with httpx.AsyncClient() as http:
        with pytest.raises(TokenRequestFailed) as err:
            await source.exchange_code(http, servers.url + "/token", {"grant_type": "authorization_code"},
                                       client(), offers_dpop=False)
    assert str(err.value) == (f"token request (authorization_code) to {servers.url}/token: answered a Bearer token,"
                              " not a DPoP-bound one, and oauth_dpop is 'always'")
    await save_grant(store, servers, {"access_token": "old", "refresh_token": "rt", DPOP_KEY: DPoPKey.generate()
                                      .private_jwk()}, expires_in=-1)
    with pytest.raises(TokenRequestFailed) as err:  # a refresh answered unbound is refused the same way
        await source.request_headers("POST")
    await source.aclose()
    assert str(err.value) == (f"token refresh (refresh_token) to {servers.url}/token: answered a Bearer token,"
                              " not a DPoP-bound one, and oauth_dpop is 'always'")


# --- resource requests ----------------------------------------------------------------------------------------


async def test_an_upstream_request_learns_the_nonce_from_a_401_and_retries_once(servers: Servers,
                                                                                store: MemoryStore) -> None:
    key = DPoPKey.generate()
    async with httpx.AsyncClient() as http:
        doc = await token_request(http, servers.url + "/token", {"grant_type": "authorization_code"}, client(),
                                  "token request", key, NonceMemory())
    await save_grant(store, servers, doc)
    connector = HttpUpstream(upstream(servers.url), grants=store)
    try:
        wire = connector.wire({})
        first, _ = await wire.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, None, 10.0)
        second, _ = await wire.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, None, 10.0)
    finally:
        await connector.aclose()
    assert first["result"] == second["result"] == {"scheme": "DPoP"}
    mcp = [(verdict, h) for path, verdict, h, _ in servers.seen if path == "/mcp"]
    assert [verdict for verdict, _ in mcp] == ["401", "200", "200"]  # the nonce is remembered after the first
    proofs = [jwt.decode(h["dpop"], options={"verify_signature": False}) for _, h in mcp]
    assert [p.get("nonce") for p in proofs] == [None, RS_NONCE, RS_NONCE]
    assert len({p["jti"] for p in proofs}) == 3
    assert {h["authorization"] for _, h in mcp} == {f"DPoP {doc['access_token']}"}


async def test_another_replica_refreshes_and_proves_with_the_key_kept_in_the_store(servers: Servers,
                                                                                 store: MemoryStore) -> None:
    key = DPoPKey.generate()
    async with httpx.AsyncClient() as http:
        doc = await token_request(http, servers.url + "/token", {"grant_type": "authorization_code"}, client(),
                                  "token request", key, NonceMemory())
    await save_grant(store, servers, doc, expires_in=-1)  # expired: the next request refreshes it
    replica = AuthorizationCodeTokenSource(upstream(servers.url), store)  # a process that never saw the key
    headers = await replica.request_headers("POST")
    await replica.aclose()
    refresh = [h for path, verdict, h, form in servers.seen if form.get("grant_type") == "refresh_token"]
    assert [jwt.decode(h["dpop"], options={"verify_signature": False}).get("nonce") for h in refresh] == [
        None, AS_NONCE]
    token = headers["authorization"].removeprefix("DPoP ")
    assert servers.bound[token] == key.thumbprint  # the refreshed token is bound to the same key
    claims = verify_proof(headers["dpop"], "POST", servers.url + "/mcp", token)
    assert claims["jkt"] == key.thumbprint
    stored = await store.load_grant("crm")
    assert stored is not None and stored.record[DPOP_KEY] == key.private_jwk()


async def test_a_bearer_grant_sends_bearer_and_no_proof(servers: Servers, store: MemoryStore) -> None:
    await save_grant(store, servers, {"access_token": "plain-token"})
    source = AuthorizationCodeTokenSource(upstream(servers.url), store)
    assert await source.request_headers("POST") == {"authorization": "Bearer plain-token"}
    assert source.nonce_refused(401, {"dpop-nonce": "n", "www-authenticate": 'DPoP error="use_dpop_nonce"'}) is False
    await source.aclose()


def test_oauth_dpop_is_for_authorization_code_upstreams_only() -> None:
    assert upstream("http://127.0.0.1:9").oauth_dpop == "auto"
    with pytest.raises(ValueError, match="'oauth_dpop' is for oauth_grant = 'authorization_code' only"):
        UpstreamConfig.model_validate({"name": "crm", "transport": "http", "url": "http://127.0.0.1:9/mcp",
                                       "oauth_client_id": "c", "oauth_client_secret_env": "S", "oauth_dpop": "always"})
    with pytest.raises(ValueError, match="oauth_dpop"):
        UpstreamConfig.model_validate({"name": "crm", "transport": "http", "url": "http://127.0.0.1:9/mcp",
                                       "oauth_grant": "authorization_code", "oauth_dpop": "sometimes"})
