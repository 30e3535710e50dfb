"""Credentials toward upstreams: client-credentials tokens with refresh, and the identity header."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from adapters.upstreams.oauth import (
    ClientCredentialsTokenSource,
    UpstreamAuthError,
    identity_headers,
    strip_client_credentials,
)
from gateway.config import UpstreamConfig
from tests.identity.idp import FakeIdp


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def upstream(idp: FakeIdp, **extra: object) -> UpstreamConfig:
    return UpstreamConfig(name="crm", transport="http", url="http://127.0.0.1:1/mcp",
                          oauth_token_url=idp.url + "/token", oauth_client_id="agent-ci",
                          oauth_client_secret_env="CRM_SECRET", oauth_scope="crm.read",
                          oauth_audience="https://crm.example.com/mcp", **extra)  # type: ignore[arg-type]


async def test_token_is_fetched_cached_and_refreshed_before_expiry(idp: FakeIdp,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SECRET", "s3cret")
    clock = FakeClock()
    source = ClientCredentialsTokenSource.from_config(upstream(idp), clock=clock)
    assert source is not None
    first = await source.token()
    claims = jwt.decode(first, options={"verify_signature": False})
    assert claims["aud"] == "https://crm.example.com/mcp" and claims["scope"] == "crm.read"
    assert idp.token_requests[0]["grant_type"] == "client_credentials"
    await asyncio.gather(*(source.token() for _ in range(10)))
    assert source.fetches == 1, "concurrent callers share one token"
    clock.now += 600 - 61  # the IdP says expires_in=600; refresh starts 60 s before
    assert await source.token() == first
    clock.now += 2
    assert await source.headers() == {"authorization": f"Bearer {await source.token()}"}
    assert source.fetches == 2
    source.invalidate()
    await source.token()
    assert source.fetches == 3
    await source.aclose()


async def test_refused_credentials_raise_without_leaking_the_secret(idp: FakeIdp,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SECRET", "wrong-secret-value")
    source = ClientCredentialsTokenSource.from_config(upstream(idp))
    assert source is not None
    with pytest.raises(UpstreamAuthError) as err:
        await source.token()
    assert "401" in str(err.value) and "wrong-secret-value" not in str(err.value)
    await source.aclose()


def test_config_rules(idp: FakeIdp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_SECRET", raising=False)
    with pytest.raises(ValueError, match="CRM_SECRET"):
        ClientCredentialsTokenSource.from_config(upstream(idp))
    with pytest.raises(ValueError, match="not both"):
        upstream(idp, bearer_token_env="X")
    with pytest.raises(ValueError, match="need"):
        UpstreamConfig(name="a", transport="http", url="http://x/mcp", oauth_client_id="only-this")
    plain = UpstreamConfig(name="a", transport="http", url="http://x/mcp")
    assert ClientCredentialsTokenSource.from_config(plain) is None


def test_identity_header_is_set_only_by_the_gateway() -> None:
    cfg = UpstreamConfig(name="a", transport="http", url="http://x/mcp", identity_header="X-Triplock-Principal",
                         headers={"X-Triplock-Principal": "spoofed", "X-Tenant": "t1", "Cookie": "c"})
    assert strip_client_credentials(cfg.headers, cfg) == {"X-Tenant": "t1"}
    assert identity_headers(cfg, "alice") == {"x-triplock-principal": "alice"}
    assert identity_headers(UpstreamConfig(name="b", transport="http", url="http://x/mcp"), "alice") == {}
