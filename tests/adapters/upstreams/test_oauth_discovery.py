"""Upstream OAuth discovery: the challenge, the well-known URLs in MCP's order, and clear refusals.

The end-to-end cases (a real authorization server and MCP server from the conformance suite,
Triplock as the client: client_secret_basic, private_key_jwt, scopes, resource) run in
tests/conformance/test_client_conformance.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest

from adapters.upstreams.oauth_discovery import (
    Challenge,
    DiscoveryFailed,
    authorization_server_urls,
    discover,
    protected_resource_urls,
)
from adapters.upstreams.streamable_http import HttpUpstream
from gateway.config import UpstreamConfig
from gateway.ports.upstream import ClientIdentity, UpstreamError


def test_the_bearer_challenge_is_parsed() -> None:
    header = ('Bearer error="insufficient_scope", scope="files:read files:write",'
              ' resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"')
    assert Challenge.parse(header) == Challenge(
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp", "files:read files:write",
        "insufficient_scope")
    assert Challenge.parse('DPoP algs="ES256", error="insufficient_scope", scope="files:write"') == Challenge(
        None, "files:write", "insufficient_scope")
    assert Challenge.parse('Basic realm="x"') == Challenge()
    assert Challenge.parse(None) == Challenge()


def test_well_known_urls_in_the_order_mcp_specifies() -> None:
    assert protected_resource_urls("https://a.example/public/mcp") == [
        "https://a.example/.well-known/oauth-protected-resource/public/mcp",
        "https://a.example/.well-known/oauth-protected-resource"]
    assert authorization_server_urls("https://as.example/tenant1") == [
        "https://as.example/.well-known/oauth-authorization-server/tenant1",
        "https://as.example/.well-known/openid-configuration/tenant1",
        "https://as.example/tenant1/.well-known/openid-configuration"]
    assert authorization_server_urls("https://as.example") == [
        "https://as.example/.well-known/oauth-authorization-server",
        "https://as.example/.well-known/openid-configuration"]


Docs = dict[str, dict[str, object]]


@pytest.fixture
async def metadata_server() -> AsyncIterator[Callable[[Docs], Awaitable[str]]]:
    """A loopback HTTP server answering GETs from a dict of path -> JSON document (404 otherwise)."""
    servers: list[asyncio.Server] = []

    async def start(docs: Docs) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            base = f"http://127.0.0.1:{writer.get_extra_info('sockname')[1]}"
            doc = docs.get(path)
            if doc is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            else:
                body = orjson.dumps(doc).replace(b"BASE", base.encode())
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


async def test_discovery_follows_the_metadata_to_the_token_endpoint(metadata_server) -> None:  # type: ignore[no-untyped-def]
    base = await metadata_server({
        "/.well-known/oauth-protected-resource/mcp": {"resource": "BASE/mcp", "authorization_servers": ["BASE/as"],
                                                      "scopes_supported": ["a", "b"]},
        "/.well-known/openid-configuration/as": {"issuer": "BASE/as", "token_endpoint": "BASE/as/token",
                                                 "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                                                 "dpop_signing_alg_values_supported": ["ES256", "EdDSA"]},
    })
    async with httpx.AsyncClient() as http:
        found = await discover(http, f"{base}/mcp", Challenge())
    assert (found.resource, found.issuer, found.token_endpoint) == (f"{base}/mcp", f"{base}/as", f"{base}/as/token")
    assert found.scopes_supported == ("a", "b")
    assert found.auth_methods == ("private_key_jwt",)
    assert found.dpop_algs == ("ES256", "EdDSA")  # the sign-in binds its token when ES256 is among them


async def test_metadata_for_another_resource_is_refused(metadata_server) -> None:  # type: ignore[no-untyped-def]
    base = await metadata_server({"/.well-known/oauth-protected-resource/mcp": {
        "resource": "https://elsewhere.example/mcp", "authorization_servers": ["BASE/as"]}})
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryFailed) as err:
            await discover(http, f"{base}/mcp", Challenge())
    assert str(err.value) == (f"protected resource metadata (RFC 9728): {base}/.well-known/oauth-protected-resource"
                              f"/mcp names resource 'https://elsewhere.example/mcp', not this upstream ({base}/mcp)")


async def test_an_authorization_code_only_server_is_refused_saying_what_to_do(metadata_server) -> None:  # type: ignore[no-untyped-def]
    base = await metadata_server({
        "/.well-known/oauth-protected-resource": {"resource": "BASE/", "authorization_servers": ["BASE"]},
        "/.well-known/oauth-authorization-server": {"issuer": "BASE", "token_endpoint": "BASE/token",
                                                    "grant_types_supported": ["authorization_code"]},
    })
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryFailed) as err:
            await discover(http, f"{base}/mcp", Challenge())
    assert str(err.value).endswith("set oauth_grant = 'authorization_code' on this upstream and connect it once"
                                   " with `triplock upstreams authorize NAME`")


async def test_a_401_without_metadata_fails_the_session_naming_the_upstream_and_the_step(
        metadata_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    hits: list[str] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        hits.append(head.split(b" ")[0].decode())
        size = next((int(x.split(b":")[1]) for x in head.lower().split(b"\r\n") if x.startswith(b"content-length")), 0)
        await reader.readexactly(size)
        writer.write(b'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm="x"\r\ncontent-length: 0\r\n'
                     b"connection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(refuse, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/mcp"
    monkeypatch.setenv("UP_SECRET", "s3cret-value")
    upstream = HttpUpstream(UpstreamConfig(name="crm", transport="http", url=url, oauth_client_id="gw",
                                           oauth_client_secret_env="UP_SECRET"))
    with pytest.raises(UpstreamError) as err:
        await upstream.open_session(ClientIdentity(), _ignore)
    await upstream.aclose()
    srv.close()
    root = url.removesuffix("/mcp")
    assert str(err.value) == (
        "upstream 'crm' unreachable: cannot get its access token: protected resource metadata (RFC 9728):"
        f" {root}/.well-known/oauth-protected-resource/mcp answered HTTP 401")
    assert hits == ["POST", "GET"]  # one unauthenticated try, then the metadata: no retry loop


async def _ignore(_: dict[str, object]) -> None:
    return None


async def test_the_2025_03_26_fallback_takes_an_issuer_on_the_servers_origin_only(metadata_server) -> None:  # type: ignore[no-untyped-def]
    # No protected resource metadata: the server's root names the authorization server (2025-03-26).
    base = await metadata_server({"/.well-known/oauth-authorization-server": {
        "issuer": "BASE/oauth", "token_endpoint": "BASE/oauth/token", "grant_types_supported": ["client_credentials"]}})
    async with httpx.AsyncClient() as http:
        found = await discover(http, f"{base}/mcp", Challenge())
    assert (found.issuer, found.token_endpoint, found.legacy) == (f"{base}/oauth", f"{base}/oauth/token", True)

    other = await metadata_server({"/.well-known/oauth-authorization-server": {
        "issuer": "https://as.elsewhere.example", "token_endpoint": "https://as.elsewhere.example/token"}})
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryFailed) as err:
            await discover(http, f"{other}/mcp", Challenge())
    assert "names issuer 'https://as.elsewhere.example', not one at" in str(err.value)
