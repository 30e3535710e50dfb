"""Fixtures for identity tests: a live fake IdP and settings that trust it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import AuthConfig, ServerConfig, Settings
from tests.identity.idp import FakeIdp

RESOURCE = "http://127.0.0.1:18080/mcp"


@pytest.fixture
def idp() -> Iterator[FakeIdp]:
    server = FakeIdp().start()
    try:
        yield server
    finally:
        server.stop()


def jwt_settings(idp: FakeIdp, **auth: Any) -> Settings:
    """Settings for a JWT-protected gateway whose canonical URL is RESOURCE."""
    fields: dict[str, Any] = {"mode": "jwt", "issuer": idp.issuer, "jwks_url": idp.jwks_url, "resource": RESOURCE,
                              "jwks_min_refresh_seconds": 0.0, **auth}
    return Settings(server=ServerConfig(port=18080), auth=AuthConfig(**fields))
