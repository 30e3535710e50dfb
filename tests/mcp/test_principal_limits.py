"""What one principal can make the gateway hold: sessions (a cap) and requests (a token bucket).

A real gateway with API-key auth and ``[limits]`` set low (3 sessions, a burst of 20 requests
refilled at one per 100 s); each test uses its own principal, so buckets do not mix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from gateway.identity.api_keys import KeyStore
from tests.support import MCP_HEADERS, free_port, gateway_cmd, initialize, running, write_config

BURST = 20
PRINCIPALS = ("sessions-tester", "rate-tester", "bystander")


@dataclass
class Gw:
    url: str
    base: str
    keys: dict[str, str]

    def auth(self, principal: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[principal]}"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("principal-limits")
    store = KeyStore(tmp / "keys.json")
    keys = {p: store.create(p, ("agents-run",))[0] for p in PRINCIPALS}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = write_config(
        tmp / "t.toml", port, [],
        auth={"mode": "api_key", "api_keys_file": str(tmp / "keys.json")},
        limits={"sessions_per_principal": 3, "requests_per_second": 0.01, "request_burst": BURST},
    )
    with running(gateway_cmd(cfg), base + "/healthz"):  # no upstream: alive, though never ready
        yield Gw(base + "/mcp", base, keys)


def limit_count(gw: Gw, limit: str) -> float:
    for family in text_string_to_metric_families(httpx.get(gw.base + "/metrics").text):
        for s in family.samples:
            if s.name == "triplock_limit_exceeded_total" and s.labels == {"limit": limit, "triplock_upstream": ""}:
                return s.value
    return 0.0


def _initialize(http: httpx.Client, gw: Gw, principal: str) -> httpx.Response:
    return http.post(gw.url, headers={**MCP_HEADERS, **gw.auth(principal)}, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    })


SESSIONS_REFUSAL = (
    "Too many sessions: this principal already holds 3 live sessions (limit sessions_per_principal,"
    " limits.sessions_per_principal); end one with DELETE or let one idle out, then initialize again"
)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


async def test_sessions_over_the_cap_get_429_until_one_ends(gw: Gw) -> None:
    before = limit_count(gw, "sessions_per_principal")
    with httpx.Client(timeout=10) as http:
        sids = [initialize(http, gw.url, headers=gw.auth("sessions-tester")) for _ in range(3)]
        r = _initialize(http, gw, "sessions-tester")
        assert r.status_code == 429 and "mcp-session-id" not in r.headers
        assert r.json() == {"jsonrpc": "2.0", "id": 0, "error": {"code": -32012, "message": SESSIONS_REFUSAL}}
        assert limit_count(gw, "sessions_per_principal") == before + 1
        assert _initialize(http, gw, "bystander").status_code == 200  # per principal

        # The official SDK client surfaces the refusal's message.
        client_http = create_mcp_http_client(headers=gw.auth("sessions-tester"))
        with pytest.raises(BaseException) as caught:
            async with client_http, Client(streamable_http_client(gw.url, http_client=client_http), mode="legacy"):
                pass
        assert SESSIONS_REFUSAL in [str(leaf) for leaf in _leaves(caught.value)]
        assert limit_count(gw, "sessions_per_principal") == before + 2

        closed = http.delete(gw.url, headers={**MCP_HEADERS, **gw.auth("sessions-tester"), "mcp-session-id": sids[0]})
        assert closed.status_code == 200
        assert _initialize(http, gw, "sessions-tester").status_code == 200  # the ended session no longer counts


def test_requests_over_the_burst_get_429_with_retry_after(gw: Gw) -> None:
    before = limit_count(gw, "requests_per_principal")
    listing = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    with httpx.Client(timeout=10) as http:
        # Without a session each request is answered 400 (no Mcp-Session-Id) once past the limiter.
        statuses = [http.post(gw.url, headers={**MCP_HEADERS, **gw.auth("rate-tester")}, json=listing).status_code
                    for _ in range(BURST)]
        assert statuses == [400] * BURST
        r = http.post(gw.url, headers={**MCP_HEADERS, **gw.auth("rate-tester")}, json=listing)
        assert r.status_code == 429
        wait = r.headers["retry-after"]
        assert 95 <= int(wait) <= 100  # one token per 100 s, the bucket empty a moment ago
        assert r.json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32012, "message": (
            "Too many requests: over the per-principal rate limit requests_per_principal (limits.requests_per_second"
            f" = 0.01, limits.request_burst = {BURST}); retry after {wait}s")}}
        assert limit_count(gw, "requests_per_principal") == before + 1
        other = http.post(gw.url, headers={**MCP_HEADERS, **gw.auth("bystander")}, json=listing)
        assert other.status_code == 400  # another principal's bucket is its own


def test_limits_config_defaults_and_validation(tmp_path: Path) -> None:
    from gateway.config import ConfigError, LimitsConfig, load_settings

    assert LimitsConfig() == LimitsConfig(sessions_per_principal=100, requests_per_second=100.0, request_burst=200)
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[limits]\nsessions_per_principal = -1\nrequest_burst = 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "limits.sessions_per_principal: Input should be greater than or equal to 0" in str(err.value)
    assert "limits.request_burst: Input should be greater than or equal to 1" in str(err.value)
