"""Values Triplock puts in upstream request headers never carry CR, LF or NUL.

Configured headers are refused at start (a config error naming the key), a bearer token from
the environment when the connector is built, an OAuth token when it is fetched. The per-request
principal is covered end to end in tests/mcp/test_upstream_limits.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapters.upstreams.oauth import ClientCredentialsTokenSource, UpstreamAuthError, identity_headers
from adapters.upstreams.streamable_http import HttpUpstream
from gateway.config import UpstreamConfig
from tests.support import PY, REPO


def _check(tmp_path: Path, upstream: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[upstreams]]\nname = "crm"\ntransport = "http"\nurl = "http://127.0.0.1:9/mcp"\n' + upstream)
    return subprocess.run([PY, "-m", "gateway.cli", "config", "check", str(cfg)], cwd=REPO, capture_output=True,
                          text=True)


@pytest.mark.parametrize(("line", "error"), [
    ('headers = { "x-tenant" = "acme\\r\\nx-admin: 1" }', "upstreams.0.headers: value of header 'x-tenant' contains"
                                                          " CR, LF or NUL"),
    ('headers = { "x-tenant" = "acme\\u0000" }', "upstreams.0.headers: value of header 'x-tenant' contains CR, LF"
                                                 " or NUL"),
    ('headers = { "x tenant" = "acme" }', "upstreams.0.headers: header name 'x tenant' is not an HTTP token"),
    ('identity_header = "x-user\\r\\nx-admin"', "upstreams.0.identity_header: 'x-user\\r\\nx-admin' is not an"
                                                " HTTP header name (a token)"),
])
def test_config_check_names_the_key_of_an_unsafe_header(tmp_path: Path, line: str, error: str) -> None:
    done = _check(tmp_path, line + "\n")
    assert done.returncode == 2
    assert error in done.stderr.splitlines()


def test_config_check_accepts_ordinary_headers(tmp_path: Path) -> None:
    done = _check(tmp_path, 'headers = { "x-tenant" = "acme corp; region=eu" }\nidentity_header = "X-User"\n')
    assert done.returncode == 0, done.stderr


def test_bearer_token_with_a_line_break_stops_the_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "secret\r\nx-admin: 1")
    config = UpstreamConfig(name="crm", transport="http", url="http://127.0.0.1:9/mcp", bearer_token_env="CRM_TOKEN")
    with pytest.raises(ValueError) as err:
        HttpUpstream(config)
    assert str(err.value) == "upstream crm: the bearer token in CRM_TOKEN contains CR, LF or NUL"


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    """A real token endpoint on loopback that issues an access token with a line break in it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"access_token": "tok\r\nx-admin: 1", "token_type": "Bearer", "expires_in": 60}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


async def test_oauth_token_with_a_line_break_is_refused(token_endpoint: str) -> None:
    source = ClientCredentialsTokenSource(token_endpoint, "agent", "s3cret")
    with pytest.raises(UpstreamAuthError) as err:
        await source.token()
    assert str(err.value) == (
        f"token request (client_credentials) to {token_endpoint}: sent an access_token with CR, LF or NUL")
    await source.aclose()


def test_identity_header_refuses_a_principal_with_cr_lf_or_nul() -> None:
    config = UpstreamConfig(name="crm", transport="http", url="http://127.0.0.1:9/mcp", identity_header="X-User")
    assert identity_headers(config, "alice@example.com") == {"x-user": "alice@example.com"}
    for bad in ("a\rb", "a\nb", "a\x00b"):
        with pytest.raises(ValueError) as err:
            identity_headers(config, bad)
        assert str(err.value) == ("the principal id contains CR, LF or NUL, so it cannot be sent in header 'X-User';"
                                  " the request was not sent")
