"""End to end: `triplock serve` with JWT + API keys, the real SDK client, roles, suspension.

Needs the wiring of gateway/app.py described in the identity report (authenticator from
settings, metadata and suspension routes, the tools/list filter, the may_call check).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp.shared.exceptions import MCPError

from gateway.cli import keys as cli_keys
from gateway.identity.api_keys import KeyStore
from tests.identity.idp import FakeIdp
from tests.redis_server import redis_server
from tests.support import REPO, free_port, gateway_cmd, running, write_config

RUN_TOOLS = {"demo__read_inbox", "demo__search_drive"}


@dataclass
class Gw:
    url: str
    base: str
    idp: FakeIdp
    keys: dict[str, str]

    def jwt(self, **claims: Any) -> str:
        return self.idp.token(aud=self.url, **claims)


def _policy_without_first_use_holds(tmp: Path) -> Path:
    """The 'open' preset minus first-use holds, so reads run at once (holds are not under test here)."""
    text = (REPO / "policy" / "presets" / "open.yaml").read_text()
    text = text.replace("first_use:\n  enabled: true", "first_use:\n  enabled: false")
    text = text.replace("  - mcp_first_invocation_of_tool\n", "")
    path = tmp / "policy.yaml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def _gateway(tmp: Path, idp: FakeIdp, keys_file: Path, store: dict[str, str]) -> Iterator[str]:
    """`triplock serve` with JWT + API keys on a free port; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = write_config(
        tmp / f"triplock-{port}.toml", port, [],
        server={"public_url": base},
        auth={"mode": "jwt", "issuer": idp.issuer, "jwks_url": idp.jwks_url, "api_keys_file": str(keys_file),
              "groups": {"eng-agents": ["agents-run"]},
              "roles": {"agents-run": {"call": ["demo:read_*", "demo:search_*"]},
                        "agents-admin": {"call": ["*"], "actions": ["suspend", "resume", "list_suspensions"]},
                        "auditor": {"actions": ["list_suspensions"]}}},
        policy={"file": str(_policy_without_first_use_holds(tmp))},
        store=store,
    )
    cfg.write_text("demo_upstream = true\n" + cfg.read_text())  # top-level keys come before [server]
    with running(gateway_cmd(cfg), base + "/readyz"):
        yield base


def _keys(path: Path) -> dict[str, str]:
    ks = KeyStore(path)
    return {"admin": ks.create("ops-admin", ("agents-admin",))[0],
            "codex": ks.create("codex-ci", ("agents-run",), agent="codex-ci")[0]}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("gw-identity")
    idp = FakeIdp().start()
    idp.client_claims["agent-ci"] = {"groups": ["agents-run"]}
    keys = _keys(tmp / "keys.json")
    try:
        with _gateway(tmp, idp, tmp / "keys.json", {"kind": "sqlite", "path": str(tmp / "state.sqlite")}) as base:
            yield Gw(base + "/mcp", base, idp, keys)
    finally:
        idp.stop()


@contextlib.asynccontextmanager
async def sdk(gw: Gw, token: str | None, mode: str = "legacy",
              seen: list[httpx2.Response] | None = None) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"} if token else None
    http = create_mcp_http_client(headers=headers)
    if seen is not None:
        async def keep(resp: httpx2.Response) -> None:
            seen.append(resp)
        http.event_hooks["response"].append(keep)
    async with http, Client(streamable_http_client(gw.url, http_client=http), mode=mode) as client:
        yield client


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_sdk_client_with_a_jwt_sees_only_its_roles_tools(gw: Gw, mode: str) -> None:
    async with sdk(gw, gw.jwt(sub="ann", groups=["eng-agents"]), mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == RUN_TOOLS
        result = await client.call_tool("demo__search_drive", {"query": "roadmap"})
        assert not result.is_error
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("demo__send_email", {"to": "x@example.com", "subject": "s", "body": "b"})


async def test_admin_sees_everything_and_auditor_nothing(gw: Gw) -> None:
    async with sdk(gw, gw.keys["admin"]) as client:
        assert {t.name for t in (await client.list_tools()).tools} > RUN_TOOLS
    async with sdk(gw, gw.jwt(sub="aud-1", groups=["auditor"])) as client:
        assert (await client.list_tools()).tools == []


async def test_sdk_client_without_a_token_gets_401_with_resource_metadata(gw: Gw) -> None:
    seen: list[httpx2.Response] = []
    with pytest.raises(Exception) as err:
        async with sdk(gw, None, seen=seen) as client:
            await client.list_tools()
    assert _leaves(err.value) and all(isinstance(e, MCPError) for e in _leaves(err.value))
    assert seen and seen[0].status_code == 401
    challenge = seen[0].headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{gw.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        doc = httpx.get(gw.base + path).json()
        assert doc["resource"] == gw.url and doc["authorization_servers"] == [gw.idp.issuer]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


@pytest.mark.parametrize("bad", ["wrong-aud", "expired", "garbage"])
async def test_bad_tokens_are_401_invalid_token_over_http(gw: Gw, bad: str) -> None:
    token = {"wrong-aud": gw.idp.token(aud="https://elsewhere.example.com/mcp"),
             "expired": gw.jwt(exp=1), "garbage": "x.y.z"}[bad]
    r = httpx.post(gw.url, headers={"authorization": f"Bearer {token}", "content-type": "application/json",
                                    "accept": "application/json, text/event-stream"}, json={})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


class _Memory:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def test_sdk_oauth_discovery_from_the_401_to_a_token_for_our_audience(gw: Gw) -> None:
    # The SDK follows resource_metadata -> authorization server -> token (resource = our URL).
    provider = ClientCredentialsOAuthProvider(gw.url, _Memory(), "agent-ci", "s3cret", issuer=gw.idp.issuer)
    http = create_mcp_http_client(auth=provider)
    async with http, Client(streamable_http_client(gw.url, http_client=http), mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == RUN_TOOLS
    assert gw.idp.token_requests[-1]["resource"] == gw.url


def _cli(gw: Gw, *argv: str, token: str) -> int:
    parser = argparse.ArgumentParser()
    cli_keys.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--url", gw.base, "--token-env", "E2E_TOKEN"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2E_TOKEN", token)
        return int(args.func(args))


async def test_suspended_agent_is_refused_at_once_and_resume_restores(gw: Gw) -> None:
    async with sdk(gw, gw.keys["codex"]) as client:
        assert not (await client.call_tool("demo__read_inbox", {})).is_error
        assert await anyio.to_thread.run_sync(
            lambda: _cli(gw, "suspend", "--agent", "codex-ci", "--reason", "e2e", token=gw.keys["codex"])) == 1
        assert await anyio.to_thread.run_sync(
            lambda: _cli(gw, "suspend", "--agent", "codex-ci", "--reason", "e2e", token=gw.keys["admin"])) == 0
        refused = await client.call_tool("demo__read_inbox", {})
        assert refused.is_error and "suspended" in str(refused.content)
        assert await anyio.to_thread.run_sync(
            lambda: _cli(gw, "resume", "--agent", "codex-ci", token=gw.keys["admin"])) == 0
        assert not (await client.call_tool("demo__read_inbox", {})).is_error


async def test_suspension_reaches_a_second_gateway_process(tmp_path: Path) -> None:
    idp = FakeIdp().start()
    keys = _keys(tmp_path / "keys.json")
    try:
        with redis_server() as url:
            store = {"kind": "redis", "redis_url": url}
            with _gateway(tmp_path, idp, tmp_path / "keys.json", store) as one, \
                    _gateway(tmp_path, idp, tmp_path / "keys.json", store) as two:
                other = Gw(two + "/mcp", two, idp, keys)
                async with sdk(other, keys["codex"]) as client:
                    assert not (await client.call_tool("demo__read_inbox", {})).is_error
                    async with httpx.AsyncClient() as http:
                        r = await http.post(one + "/api/suspensions", json={"target": "agent:codex-ci"},
                                            headers={"authorization": f"Bearer {keys['admin']}"})
                    assert r.status_code == 201, r.text
                    # The other process learns it over the store's pub/sub, not by a restart or a call
                    # of its own; the deadline only stops a hang (how fast is load_tests' business).
                    deadline = time.monotonic() + 20
                    while not (refused := await client.call_tool("demo__read_inbox", {})).is_error:
                        assert time.monotonic() < deadline, "the second process never applied the suspension"
                    assert [c.text for c in refused.content if c.type == "text"] == [
                        "Denied by policy: agent:codex-ci is suspended"]
                    # and it stays applied: no call slips through afterwards
                    assert (await client.call_tool("demo__read_inbox", {})).is_error
    finally:
        idp.stop()
