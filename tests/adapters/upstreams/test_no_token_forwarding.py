"""The client's credentials never reach an upstream; the upstream's own credentials do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.identity.idp import FakeIdp
from tests.support import MCP_HEADERS, PY, create_api_key, free_port, gateway_cmd, initialize, running, write_config

ROGUE = str(Path(__file__).resolve().parents[2] / "rogue_upstream.py")


def _stateless_call(http: httpx.Client, url: str, auth: dict[str, str]) -> httpx.Response:
    """A 2026-07-28 tools/call: no session, the envelope in params._meta, routing headers."""
    version = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
    return http.post(
        url,
        headers={**MCP_HEADERS, **auth, "mcp-protocol-version": version, "mcp-method": "tools/call",
                 "mcp-name": "rh__headers"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "rh__headers", "arguments": {}, "_meta": meta}},
    )


def headers_seen_upstream(
    tmp_path: Path, upstream: dict[str, Any], env: dict[str, str], stateless: bool = False
) -> tuple[str, list[Any]]:
    """Call the rogue upstream's `headers` tool through an API-key gateway; (client key, upstream's log)."""
    up_port, gw_port = free_port(), free_port()
    keys = tmp_path / "keys.json"
    client_token = create_api_key(keys, "alice-agent")
    cfg = write_config(
        tmp_path / "t.toml",
        gw_port,
        [{"name": "rh", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp", **upstream}],
        auth={"mode": "api_key", "api_keys_file": str(keys)},
    )
    url = f"http://127.0.0.1:{gw_port}/mcp"
    auth = {"authorization": f"Bearer {client_token}"}
    with (
        running([PY, ROGUE, "--http", str(up_port)], None),
        running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz", env=env),
        httpx.Client() as http,
    ):
        if stateless:
            r = _stateless_call(http, url, auth)
        else:
            sid = initialize(http, url, headers=auth)
            r = http.post(
                url,
                headers={**MCP_HEADERS, **auth, "mcp-session-id": sid},
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "rh__headers", "arguments": {}},
                },
            )
    seen = r.json()["result"]["structuredContent"]["seen"]
    assert seen, "the upstream saw no requests"
    assert all(client_token not in json.dumps(req) for req in seen), "the client's key reached the upstream"
    return client_token, seen


def test_client_token_is_not_forwarded(tmp_path: Path) -> None:
    _, seen = headers_seen_upstream(
        tmp_path, {"bearer_token_env": "RH_UPSTREAM_TOKEN"}, {"RH_UPSTREAM_TOKEN": "upstream-own-secret"}
    )
    assert all(req.get("authorization") == "Bearer upstream-own-secret" for req in seen)


def test_upstream_gets_its_oauth_token_and_the_principal_header(tmp_path: Path) -> None:
    """Client-credentials token from the IdP for the upstream; the caller named in identity_header."""
    idp = FakeIdp().start()
    try:
        idp.clients["triplock-gw"] = "gw-secret"
        _, seen = headers_seen_upstream(
            tmp_path,
            {
                "oauth_token_url": idp.url + "/token",
                "oauth_client_id": "triplock-gw",
                "oauth_client_secret_env": "RH_CLIENT_SECRET",
                "oauth_audience": "http://127.0.0.1/rh",
                "identity_header": "X-Triplock-Principal",
            },
            {"RH_CLIENT_SECRET": "gw-secret"},
        )
    finally:
        idp.stop()
    assert idp.token_requests and idp.token_requests[0]["grant_type"] == "client_credentials"
    assert all(req["authorization"].startswith("Bearer ey") for req in seen)  # the IdP's JWT, not the client's key
    # The session opened for alice-agent carries her identity; the gateway's own catalog session does not.
    assert any(req.get("x-triplock-principal") == "alice-agent" for req in seen)


def test_stateless_requests_name_the_caller_per_request(tmp_path: Path) -> None:
    """2026-07-28 calls ride the gateway's shared upstream session, so the identity header goes per request."""
    _, seen = headers_seen_upstream(
        tmp_path,
        {"bearer_token_env": "RH_UPSTREAM_TOKEN", "identity_header": "X-Triplock-Principal"},
        {"RH_UPSTREAM_TOKEN": "upstream-own-secret"},
        stateless=True,
    )
    # The last request the upstream saw is this call; the shared session's own requests name no one.
    assert seen[-1].get("x-triplock-principal") == "alice-agent"
    assert all("x-triplock-principal" not in req for req in seen[:-1])
    assert all(req.get("authorization") == "Bearer upstream-own-secret" for req in seen)
