"""The client's credentials never reach an upstream; the upstream's own credentials do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from tests.support import MCP_HEADERS, PY, REPO, free_port, gateway_cmd, running, write_config

ROGUE = str(Path(__file__).with_name("rogue_upstream.py"))


def test_client_token_is_not_forwarded(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    keys = tmp_path / "keys.json"
    created = subprocess.run(
        [
            PY,
            "-m",
            "gateway.cli",
            "keys",
            "create",
            "--file",
            str(keys),
            "--principal",
            "ci",
            "--groups",
            "agents-run",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    client_token = json.loads(created.stdout)["key"]
    cfg = write_config(
        tmp_path / "t.toml",
        gw_port,
        [
            {
                "name": "rh",
                "transport": "http",
                "url": f"http://127.0.0.1:{up_port}/mcp",
                "bearer_token_env": "RH_UPSTREAM_TOKEN",
            }
        ],
        auth={"mode": "api_key", "api_keys_file": str(keys)},
    )
    env = {"RH_UPSTREAM_TOKEN": "upstream-own-secret"}
    url = f"http://127.0.0.1:{gw_port}/mcp"
    with (
        running([PY, ROGUE, "--http", str(up_port)], None),
        running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz", env=env),
        httpx.Client() as http,
    ):
        h = {**MCP_HEADERS, "authorization": f"Bearer {client_token}"}
        init = http.post(
            url,
            headers=h,
            json={
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "c", "version": "1"},
                },
            },
        )
        assert init.status_code == 200, init.text
        h["mcp-session-id"] = init.headers["mcp-session-id"]
        r = http.post(
            url,
            headers=h,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "rh__headers", "arguments": {}},
            },
        )
        seen = r.json()["result"]["structuredContent"]["seen"]
    assert seen, "the upstream saw no requests"
    assert all(client_token not in json.dumps(req) for req in seen)
    assert all(req.get("authorization") == "Bearer upstream-own-secret" for req in seen)


def test_upstream_gets_its_oauth_token_and_the_principal_header(tmp_path: Path) -> None:
    """Client-credentials token from the IdP for the upstream; the caller named in identity_header."""
    from tests.identity.idp import FakeIdp

    idp = FakeIdp().start()
    try:
        idp.clients["triplock-gw"] = "gw-secret"
        up_port, gw_port = free_port(), free_port()
        keys = tmp_path / "keys.json"
        created = subprocess.run(
            [
                PY,
                "-m",
                "gateway.cli",
                "keys",
                "create",
                "--file",
                str(keys),
                "--principal",
                "alice-agent",
                "--groups",
                "agents-run",
                "--json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        client_token = json.loads(created.stdout)["key"]
        cfg = write_config(
            tmp_path / "t.toml",
            gw_port,
            [
                {
                    "name": "rh",
                    "transport": "http",
                    "url": f"http://127.0.0.1:{up_port}/mcp",
                    "oauth_token_url": idp.url + "/token",
                    "oauth_client_id": "triplock-gw",
                    "oauth_client_secret_env": "RH_CLIENT_SECRET",
                    "oauth_audience": f"http://127.0.0.1:{up_port}/mcp",
                    "identity_header": "X-Triplock-Principal",
                }
            ],
            auth={"mode": "api_key", "api_keys_file": str(keys)},
        )
        url = f"http://127.0.0.1:{gw_port}/mcp"
        with (
            running([PY, ROGUE, "--http", str(up_port)], None),
            running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz", env={"RH_CLIENT_SECRET": "gw-secret"}),
            httpx.Client() as http,
        ):
            h = {**MCP_HEADERS, "authorization": f"Bearer {client_token}"}
            init = http.post(
                url,
                headers=h,
                json={
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "c", "version": "1"},
                    },
                },
            )
            h["mcp-session-id"] = init.headers["mcp-session-id"]
            r = http.post(
                url,
                headers=h,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "rh__headers", "arguments": {}},
                },
            )
            seen = r.json()["result"]["structuredContent"]["seen"]
    finally:
        idp.stop()
    assert idp.token_requests and idp.token_requests[0]["grant_type"] == "client_credentials"
    assert all(req["authorization"].startswith("Bearer ey") for req in seen)  # the IdP's JWT, not the client's key
    assert all(client_token not in json.dumps(req) for req in seen)
    # The session opened for alice-agent carries her identity; the gateway's own catalog session does not.
    assert any(req.get("x-triplock-principal") == "alice-agent" for req in seen)
