"""The transport's own header fields are trimmed per RFC 9110 section 5.5 (a field value excludes
leading and trailing whitespace): ``MCP-Protocol-Version`` and ``Mcp-Session-Id`` with trailing
spaces or tabs name the same version and session as without (``Mcp-Method``/``Mcp-Name``:
tests/mcp/test_modern_headers.py).

Real parts: ``triplock serve`` on both HTTP servers (its own and uvicorn) in front of the demo
workspace over stdio; requests written byte for byte on a socket (HTTP client libraries trim or
refuse such values). httptools drops leading whitespace itself, so the padding that matters is
trailing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.mcp.test_modern_headers import META, MODERN, raw_post
from tests.support import PY, free_port, gateway_cmd, initialize, running, write_config


@pytest.fixture(scope="module", params=["triplock", "uvicorn"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    cfg = write_config(
        tmp_path_factory.mktemp("padded") / "triplock.toml",
        port,
        [{"name": "demo", "transport": "stdio", "command": PY,
          "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}],
        server={"runtime": request.param},
    )
    with running(gateway_cmd(cfg), f"http://127.0.0.1:{port}/readyz"):
        yield port


def session(port: int) -> str:
    with httpx.Client() as http:
        return initialize(http, f"http://127.0.0.1:{port}/mcp")


def listed(answer: dict[str, object]) -> list[str]:
    result = answer["result"]
    assert isinstance(result, dict), answer
    return sorted(t["name"] for t in result["tools"])


LIST = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}


def test_padded_session_id_and_version_name_the_session(gateway: int) -> None:
    sid = session(gateway)
    plain_status, plain = raw_post(gateway, LIST, [f"Mcp-Session-Id: {sid}", "MCP-Protocol-Version: 2025-11-25"])
    assert plain_status == 200, plain
    status, answer = raw_post(gateway, LIST, [f"Mcp-Session-Id:  {sid} \t", "MCP-Protocol-Version: 2025-11-25\t "])
    assert (status, answer["id"], listed(answer)) == (200, 3, listed(plain))


def test_a_padded_version_is_not_an_unsupported_one(gateway: int) -> None:
    sid = session(gateway)
    status, answer = raw_post(gateway, LIST, [f"Mcp-Session-Id: {sid}", "MCP-Protocol-Version: 2025-11-25   "])
    assert (status, "error" in answer) == (200, False), answer
    # A version that differs after trimming is still refused, naming what was asked (trimmed).
    status, answer = raw_post(gateway, LIST, [f"Mcp-Session-Id: {sid}", "MCP-Protocol-Version: 2025-11-2 "])
    assert (status, answer["error"]["code"], answer["error"]["data"]["requested"]) == (400, -32022, "2025-11-2")


def test_a_stateless_request_with_a_padded_version_is_served(gateway: int) -> None:
    body = {**LIST, "params": {"_meta": META}}
    status, answer = raw_post(gateway, body, [f"MCP-Protocol-Version: {MODERN} \t", "Mcp-Method: tools/list"])
    assert (status, answer["id"]) == (200, 3), answer
    assert "demo__read_inbox" in listed(answer)


def test_delete_with_a_padded_session_id_ends_the_session(gateway: int) -> None:
    sid = session(gateway)
    with socket.create_connection(("127.0.0.1", gateway), timeout=30) as sock:
        sock.sendall(
            f"DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gateway}\r\nMcp-Session-Id: {sid}  \r\n"
            "Connection: close\r\n\r\n".encode()
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 200 OK"
    status, answer = raw_post(gateway, LIST, [f"Mcp-Session-Id: {sid}", "MCP-Protocol-Version: 2025-11-25"])
    assert (status, answer["error"]["message"]) == (
        404, "Session not found: it expired or never existed; initialize again")
