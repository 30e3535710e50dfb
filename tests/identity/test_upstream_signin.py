"""An admin signs in once for an upstream that needs the authorization code grant, end to end.

A real ``triplock serve`` (API keys, SQLite store) fronts a real SDK MCP server protected by a small
loopback authorization server (tests/identity/upstream_auth_server.py); the admin's browser is
httpx following the redirects. Covered: who may start a sign-in, what the authorization URL
carries (PKCE S256, RFC 8707 resource, scope), the callback's refusals (state, replay, RFC 9207
iss, access_denied, escaping), the upstream connected without a restart, refresh with rotation,
a refused refresh, the grant surviving a restart, endpoints that are not https, and no token in
the audit log or the gateway's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.grants import StoredGrant
from tests.identity.upstream_auth_server import SCOPE, SignInGateway, running_signin_gateway, s256

HINT = "an admin runs `triplock upstreams authorize notes` (or POST /api/upstreams/notes/authorize) and signs in"
CSP = "default-src 'none'; style-src 'unsafe-inline'"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInGateway]:
    with running_signin_gateway(tmp_path_factory.mktemp("signin")) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def as_normal(gw: SignInGateway) -> Iterator[None]:
    """Each test starts and ends with the authorization server behaving normally."""
    yield
    gw.auth.expires_in, gw.auth.refuse_refresh, gw.auth.prm_servers = 3600, False, None
    gw.auth.meta_overrides.clear()


@contextlib.asynccontextmanager
async def agent(gw: SignInGateway) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"authorization": f"Bearer {gw.agent}"})
    async with http, Client(streamable_http_client(gw.base + "/mcp", http_client=http), mode="legacy") as client:
        yield client


async def call_note(gw: SignInGateway, text: str) -> tuple[bool, str]:
    async with agent(gw) as client:
        result = await client.call_tool("notes__note", {"text": text})
        return bool(result.is_error), result.content[0].text


async def wait_for_tool(gw: SignInGateway, seconds: float = 20.0) -> list[str]:
    """Poll tools/list through Triplock until the upstream's tool is there (it connects after the sign-in)."""
    end = time.monotonic() + seconds
    names: list[str] = []
    while time.monotonic() < end:
        async with agent(gw) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
        if "notes__note" in names:
            return names
        await asyncio.sleep(0.1)  # polling interval: the list is re-read each round
    raise AssertionError(f"notes__note never listed (last: {names})")


async def stored_grant(gw: SignInGateway) -> StoredGrant | None:
    """The grant as the gateway's own SQLite store holds it (read with the real adapter)."""
    store = SqliteStore(gw.db)
    await store.start()
    try:
        return await store.load_grant("notes")
    finally:
        await store.aclose()


def callback_url(gw: SignInGateway, **params: str) -> str:
    return f"{gw.base}/oauth/upstreams/callback?" + str(httpx.QueryParams(params))


def started_state(gw: SignInGateway) -> str:
    resp = gw.authorize()
    assert resp.status_code == 200, resp.text
    return parse_qs(urlsplit(resp.json()["authorization_url"]).query)["state"][0]


def test_starting_a_sign_in_needs_the_connect_upstream_action(gw: SignInGateway) -> None:
    anonymous = httpx.post(f"{gw.base}/api/upstreams/notes/authorize", json={})
    assert anonymous.status_code == 401
    forbidden = gw.authorize(gw.agent)
    assert (forbidden.status_code, forbidden.json()) == (403, {
        "error": "forbidden", "error_description": "principal 'agent-1' may not connect upstream"})
    unknown = httpx.post(f"{gw.base}/api/upstreams/nope/authorize", json={},
                         headers={"authorization": f"Bearer {gw.admin}"})
    assert (unknown.status_code, unknown.json()) == (404, {
        "error": "not_found", "error_description": "no upstream 'nope' with oauth_grant = 'authorization_code'"})
    ok = gw.authorize()
    assert ok.status_code == 200
    assert (ok.json()["upstream"], ok.json()["redirect_uri"]) == ("notes", gw.base + "/oauth/upstreams/callback")
    assert httpx.get(f"{gw.base}/api/upstreams/status").status_code == 401
    assert httpx.get(f"{gw.base}/api/upstreams/status",
                     headers={"authorization": f"Bearer {gw.agent}"}).status_code == 403


def test_the_authorization_url_carries_pkce_resource_and_scope(gw: SignInGateway) -> None:
    resp = gw.authorize()
    url = urlsplit(resp.json()["authorization_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == gw.auth.url + "/authorize"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    client_id = gw.auth.registrations and list(gw.auth.clients)[-1]
    assert set(q) == {"response_type", "client_id", "redirect_uri", "state", "code_challenge",
                      "code_challenge_method", "resource", "scope"}
    assert (q["response_type"], q["client_id"], q["redirect_uri"], q["code_challenge_method"], q["resource"],
            q["scope"]) == ("code", client_id, gw.base + "/oauth/upstreams/callback", "S256", gw.auth.resource,
                            f"{SCOPE} offline_access")
    assert len(q["state"]) >= 40
    page = httpx.get(resp.json()["authorization_url"], follow_redirects=True)
    assert (page.status_code, page.headers["content-security-policy"]) == (200, CSP)
    exchange = gw.auth.token_requests[-1]
    form = exchange["form"]
    assert (form["grant_type"], form["redirect_uri"], form["resource"], exchange["basic"][0]) == (
        "authorization_code", gw.base + "/oauth/upstreams/callback", gw.auth.resource, client_id)
    assert s256(form["code_verifier"]) == q["code_challenge"]


def test_a_signed_in_upstream_is_connected_without_restart_and_no_token_is_logged(gw: SignInGateway) -> None:
    page = gw.sign_in()
    assert page.status_code == 200
    assert "Upstream notes is connected (signed in for ops-admin; scopes notes.read offline_access)" in page.text
    assert "notes__note" in asyncio.run(wait_for_tool(gw))
    assert asyncio.run(call_note(gw, "hello")) == (False, "noted hello")
    assert gw.auth.seen[-1] == gw.auth.issued[-1]
    assert gw.agent not in gw.auth.seen and gw.admin not in gw.auth.seen
    status = gw.status()
    assert {k: status[k] for k in ("upstream", "connected", "detail", "scopes", "refreshable", "issuer", "by")} == {
        "upstream": "notes", "connected": True, "detail": "connected", "scopes": ["notes.read", "offline_access"],
        "refreshable": True, "issuer": gw.auth.url, "by": "ops-admin"}
    assert abs(status["expires_at"] - (time.time() + 3600)) < 120
    done = gw.audit_events("triplock.upstream.authorized")[-1]
    assert (done["upstream"], done["by"], done["scopes"]) == ("notes", "ops-admin", ["notes.read", "offline_access"])
    texts = {"audit log": gw.audit.read_text(), "gateway output": gw.log.read_text(), "status": str(status)}
    for secret in (*gw.auth.issued, *gw.auth.refresh_tokens):
        for where, text in texts.items():
            assert secret not in text, f"a token is in the {where}"


def test_the_callback_refuses_bad_unknown_and_replayed_states(gw: SignInGateway) -> None:
    bad = httpx.get(callback_url(gw, state="short", code="x"))
    assert (bad.status_code, bad.headers["content-security-policy"]) == (400, CSP)
    assert "The link has no valid state: start the sign-in again." in bad.text
    unknown = httpx.get(callback_url(gw, state="A" * 43, code="x"))
    assert unknown.status_code == 400
    assert "This sign-in is unknown, expired or already used" in unknown.text

    to_callback = httpx.get(gw.authorize().json()["authorization_url"])  # the AS's redirect, not followed yet
    assert to_callback.status_code == 302
    first = httpx.get(to_callback.headers["location"])
    assert first.status_code == 200
    before = asyncio.run(stored_grant(gw))
    exchanges = len(gw.auth.token_requests)
    replay = httpx.get(to_callback.headers["location"])
    assert replay.status_code == 400 and "already used" in replay.text
    assert len(gw.auth.token_requests) == exchanges
    assert asyncio.run(stored_grant(gw)) == before


def test_the_callback_refuses_another_issuer_and_a_denial_and_escapes_what_it_shows(gw: SignInGateway) -> None:
    state = started_state(gw)
    evil = "<script>alert(1)</script>"
    mixed = httpx.get(callback_url(gw, state=state, code="x", iss=evil))
    assert mixed.status_code == 400
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mixed.text and evil not in mixed.text
    assert mixed.headers["content-security-policy"] == CSP
    refused = gw.audit_events("triplock.upstream.authorization_refused")[-1]
    assert (refused["upstream"], refused["by"], refused["reason"]) == (
        "notes", "ops-admin", f"the authorization response names issuer {evil!r}, not {gw.auth.url!r} (RFC 9207):"
        " refused, it may come from another authorization server")

    denied = httpx.get(callback_url(gw, state=started_state(gw), error="access_denied"))
    assert denied.status_code == 400
    assert "Upstream notes: the authorization server refused the sign-in (access_denied)" in denied.text
    odd = httpx.get(callback_url(gw, state=started_state(gw), error=evil))
    assert "refused the sign-in (error)" in odd.text and evil not in odd.text


def test_the_token_endpoint_comes_from_the_pending_sign_in_never_the_query(gw: SignInGateway) -> None:
    to_callback = httpx.get(gw.authorize().json()["authorization_url"])
    spoofed = to_callback.headers["location"] + "&token_endpoint=http%3A%2F%2F127.0.0.1%3A9%2Ftoken"
    exchanges = len(gw.auth.token_requests)
    page = httpx.get(spoofed)
    assert page.status_code == 200 and "is connected" in page.text
    assert len(gw.auth.token_requests) == exchanges + 1  # the code went to the discovered token endpoint


@pytest.mark.parametrize(("key", "url", "origin"), [
    ("token_endpoint", "http://auth.example.test/token", "http://auth.example.test"),
    ("authorization_endpoint", "http://10.1.2.3:8443/authorize", "http://10.1.2.3:8443"),
    ("registration_endpoint", "http://auth.example.test/register", "http://auth.example.test"),
])
def test_endpoints_that_are_not_https_are_refused(gw: SignInGateway, key: str, url: str, origin: str) -> None:
    gw.auth.meta_overrides[key] = url
    resp = gw.authorize()
    assert (resp.status_code, resp.json()["error_description"]) == (502, (
        f"upstream 'notes': the authorization server {gw.auth.url} names {key} {origin}, which is not https://"
        " (http:// is allowed only on a loopback host: 127.0.0.1, ::1, localhost): refusing to sign in over it"))


def test_begin_fetches_nothing_but_http_and_https(gw: SignInGateway) -> None:
    gw.auth.prm_servers = ["file:///etc/passwd"]
    resp = gw.authorize()
    assert resp.status_code == 502
    assert resp.json()["error_description"].startswith(
        "upstream 'notes': authorization server metadata (RFC 8414 / OpenID discovery): file:")
    assert "unreachable (UnsupportedProtocol)" in resp.json()["error_description"]


def test_an_https_endpoint_elsewhere_is_accepted(gw: SignInGateway) -> None:
    gw.auth.meta_overrides["authorization_endpoint"] = "https://login.example.test/authorize"
    resp = gw.authorize()
    assert resp.status_code == 200
    assert resp.json()["authorization_url"].startswith("https://login.example.test/authorize?response_type=code&")


def test_an_expired_token_is_refreshed_and_the_rotated_refresh_token_stored(gw: SignInGateway) -> None:
    gw.auth.expires_in = 2  # good for 1 s here (half its lifetime), then refreshed
    assert gw.sign_in().status_code == 200
    signed_in = gw.auth.issued[-1]
    first_refresh = gw.auth.refresh_tokens[-1]
    exchanges = len(gw.auth.token_requests)

    def refreshed() -> list[str]:
        return gw.auth.issued[gw.auth.issued.index(signed_in) + 1:]

    end = time.monotonic() + 20
    while not (gw.auth.seen and gw.auth.seen[-1] in refreshed()):
        assert time.monotonic() < end, "no call went out with a refreshed token"
        assert asyncio.run(call_note(gw, "again")) == (False, "noted again")
    refresh = gw.auth.token_requests[exchanges]
    assert (refresh["form"]["grant_type"], refresh["form"]["refresh_token"], refresh["form"]["resource"]) == (
        "refresh_token", first_refresh, gw.auth.resource)
    grant = asyncio.run(stored_grant(gw))
    assert grant is not None and grant.record["refresh_token"] == gw.auth.refresh_tokens[-1] != first_refresh


def test_a_refused_refresh_drops_the_grant_and_names_the_fix(gw: SignInGateway) -> None:
    gw.auth.expires_in = 2
    assert gw.sign_in().status_code == 200
    gw.auth.refuse_refresh = True
    end = time.monotonic() + 20
    answer: tuple[bool, str] = (False, "")
    while not answer[0]:
        assert time.monotonic() < end, "the call never failed"
        answer = asyncio.run(call_note(gw, "late"))
    assert HINT in answer[1], answer[1]
    assert asyncio.run(stored_grant(gw)) is None
    status = gw.status()
    assert (status["connected"], status["detail"]) == (False, f"needs sign-in: {HINT}")


def test_the_grant_survives_a_restart(gw: SignInGateway) -> None:
    assert gw.sign_in().status_code == 200
    token = gw.auth.issued[-1]
    exchanges = len(gw.auth.token_requests)
    gw.stop()
    gw.start()
    asyncio.run(wait_for_tool(gw))
    assert asyncio.run(call_note(gw, "after restart")) == (False, "noted after restart")
    assert gw.auth.seen[-1] == token
    assert len(gw.auth.token_requests) == exchanges  # no new sign-in, no new token
    assert gw.status()["connected"] is True
