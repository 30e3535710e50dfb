"""Host, Origin and cross-site writes: the pure policy, then every route of a real `triplock serve`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.config import ServerConfig
from gateway.identity.origin import BAD_HOST, BAD_ORIGIN, CROSS_SITE, NOT_JSON, OriginPolicy
from tests.support import free_port, gateway_cmd, running, write_config


def policy(**server: object) -> OriginPolicy:
    return OriginPolicy.from_config(ServerConfig(port=8080, **server))  # type: ignore[arg-type]


def test_loopback_hosts_and_origins() -> None:
    p = policy()
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST:8080", "127.0.0.1"):
        assert p.check({"host": host}) is None, host
    for host in ("evil.example", "evil.example:8080", "127.0.0.1:9999", "", "127.0.0.1.evil.example:8080"):
        assert p.check({"host": host}) is BAD_HOST, host
    ok = {"host": "127.0.0.1:8080"}
    for origin in ("http://127.0.0.1:8080", "http://localhost:8080", "https://[::1]:8080"):
        assert p.check({**ok, "origin": origin}) is None, origin
    # Another port on the same machine is another origin (a local dev server, a page in a file:// tab).
    for origin in ("http://127.0.0.1:9999", "http://127.0.0.1", "null", "http://evil.example", "127.0.0.1:8080",
                   "file://", "ftp://127.0.0.1:8080"):
        assert p.check({**ok, "origin": origin}) is BAD_ORIGIN, origin


def test_public_url_allowed_hosts_and_origins() -> None:
    p = OriginPolicy.from_config(
        ServerConfig(host="0.0.0.0", port=8080, public_url="https://gw.example.com/mcp",
                     allowed_hosts=("internal:8080",), allowed_origins=("https://admin.example.com",)),
        urls=("https://approvals.example.com/console",))
    for host in ("gw.example.com", "approvals.example.com", "internal:8080", "0.0.0.0:8080"):
        assert p.check({"host": host}) is None, host
    assert p.check({"host": "localhost:8080"}) is BAD_HOST  # not a loopback bind: loopback names are not ours
    for origin in ("https://gw.example.com", "https://approvals.example.com", "https://admin.example.com"):
        assert p.check({"host": "gw.example.com", "origin": origin}) is None, origin
    assert p.check({"host": "internal:8080", "origin": "http://internal:8080"}) is None  # same origin
    assert p.check({"host": "gw.example.com", "origin": "https://evil.example"}) is BAD_ORIGIN
    wildcard = OriginPolicy.from_config(ServerConfig(host="0.0.0.0", allowed_hosts=("*",)))
    assert wildcard.check({"host": "anything:1"}) is None


def test_cross_site_writes() -> None:
    p = policy()
    ok = {"host": "127.0.0.1:8080"}
    json_ct = {"content-type": "application/json; charset=utf-8"}
    for method in ("POST", "PUT", "PATCH"):
        for ctype in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data", ""):
            assert p.check_write(method, "/api/suspensions", {**ok, "content-type": ctype}) is NOT_JSON
        assert p.check_write(method, "/api/suspensions", {**ok, **json_ct}) is None
    assert p.check_write("DELETE", "/api/suspensions/agent:x", ok) is None  # no body; a page needs a preflight
    assert p.check_write("GET", "/api/suspensions", ok) is None
    # Console forms are urlencoded and carry the console's own CSRF token.
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert p.check_write("POST", "/console/login", {**ok, **form}) is None
    assert p.check_write("POST", "/consoleX", {**ok, **form}) is NOT_JSON
    assert p.check_write("POST", "/console/login", {**ok, **form, "origin": "http://127.0.0.1:9999"}) is BAD_ORIGIN
    assert p.check_write("POST", "/console/login", {**ok, **form, "sec-fetch-site": "cross-site"}) is CROSS_SITE
    assert p.check_write("POST", "/api/x", {**ok, **json_ct, "sec-fetch-site": "same-site"}) is CROSS_SITE
    assert p.check_write("POST", "/api/x", {**ok, **json_ct, "sec-fetch-site": "same-origin"}) is None


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`triplock serve` in local development mode (auth.mode none), no upstream."""
    tmp = tmp_path_factory.mktemp("origin")
    port = free_port()
    cfg = write_config(tmp / "triplock.toml", port, [])
    base = f"http://127.0.0.1:{port}"
    with running(gateway_cmd(cfg), base + "/healthz"):
        yield base


ROUTES = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/console"),
          ("GET", "/console/static/console.js"), ("POST", "/console/login"), ("GET", "/api/approvals"),
          ("POST", "/api/approvals/X/approve"), ("GET", "/api/suspensions"), ("POST", "/api/suspensions"),
          ("DELETE", "/api/suspensions/agent:x"), ("GET", "/.well-known/oauth-protected-resource"),
          ("GET", "/api/pins"), ("POST", "/mcp"), ("GET", "/mcp"), ("GET", "/no-such-route")]


def test_dns_rebinding_host_is_refused_on_every_route(local_gateway: str) -> None:
    port = local_gateway.rsplit(":", 1)[1]
    with httpx.Client(base_url=local_gateway, timeout=10) as http:
        for method, path in ROUTES:
            for host in (f"rebind.example:{port}", "rebind.example"):
                r = http.request(method, path, headers={"host": host, "content-type": "application/json"},
                                 content=b'{"target": "agent:victim"}' if method == "POST" else None)
                assert r.status_code == 421, (method, path, host, r.status_code)
        # The same requests under the gateway's own name are served (whatever their own answer is).
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/suspensions").json() == {"suspensions": []}


def test_no_cors_text_plain_post_suspends_nothing(local_gateway: str) -> None:
    """What a page on another port can send without a preflight: refused before the handler."""
    port = local_gateway.rsplit(":", 1)[1]
    body = b'{"target": "agent:victim", "reason": "csrf"}'
    simple = {"content-type": "text/plain;charset=UTF-8", "sec-fetch-site": "same-site", "sec-fetch-mode": "no-cors"}
    with httpx.Client(base_url=local_gateway, timeout=10) as http:
        r = http.post("/api/suspensions", content=body, headers={**simple, "origin": "http://127.0.0.1:1"})
        assert (r.status_code, r.json()["error"]) == (403, "forbidden_origin")
        # Even from the gateway's own origin (or with no Origin at all), a simple content type is refused.
        for origin in (f"http://127.0.0.1:{port}", None):
            headers = {**simple, "sec-fetch-site": "same-origin", **({"origin": origin} if origin else {})}
            r = http.post("/api/suspensions", content=body, headers=headers)
            assert (r.status_code, r.json()["error"]) == (415, "unsupported_media_type")
        r = http.post("/api/suspensions", content=body,
                      headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        assert http.get("/api/suspensions").json() == {"suspensions": []}
        # The route itself works for a real client (JSON): the refusals above are the guard's.
        r = http.post("/api/suspensions", json={"target": "agent:ci-test", "reason": "control"})
        assert r.status_code == 201, r.text
        assert http.get("/api/suspensions").json() == {"suspensions": ["agent:ci-test"]}
        assert http.delete("/api/suspensions/agent:ci-test").status_code == 200


def test_mcp_endpoint_uses_the_same_policy(local_gateway: str) -> None:
    port = local_gateway.rsplit(":", 1)[1]
    with httpx.Client(base_url=local_gateway, timeout=10) as http:
        r = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                      headers={"origin": "http://127.0.0.1:1", "accept": "application/json, text/event-stream"})
        assert r.status_code == 403 and r.json()["error"]["message"] == "Forbidden: Origin not allowed"
        r = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                      headers={"host": f"evil.example:{port}", "accept": "application/json, text/event-stream"})
        assert r.status_code == 421 and r.json()["error"]["message"] == "Invalid Host header"
