"""The 2026-07-28 routing headers (``Mcp-Method``, ``Mcp-Name``) are compared with the body
without the optional whitespace around their values (RFC 9110 section 5.5; SEP-2243: servers
MUST accept ``Mcp-Name:   tool  ``), while a real mismatch stays -32020.

Real parts: a real ``triplock serve`` in front of the demo workspace over stdio, and requests
written byte for byte on a socket (HTTP client libraries trim or refuse such values, so the
whitespace would never reach the gateway through them).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.mcp.modern import routing_headers
from tests.support import PY, free_port, gateway_cmd, running, write_config

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    cfg = write_config(
        tmp_path_factory.mktemp("headers") / "triplock.toml",
        port,
        [{"name": "demo", "transport": "stdio", "command": PY,
          "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}],
    )
    with running(gateway_cmd(cfg), f"http://127.0.0.1:{port}/readyz"):
        yield port


def raw_post(port: int, body: dict[str, Any], header_lines: list[str]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to /mcp with ``header_lines`` exactly as given; the status and the JSON-RPC answer."""
    data = json.dumps(body).encode()
    head = [
        "POST /mcp HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *header_lines,
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    if b"text/event-stream" in headers.lower():
        datas = [line[5:].strip() for line in payload.splitlines() if line.startswith(b"data:")]
        payload = [d for d in datas if d][-1]
    elif b"transfer-encoding: chunked" in headers.lower():
        payload = b"".join(payload.split(b"\r\n")[1::2])
    return int(status_line.split()[1]), json.loads(payload)


def call(tool: str, rid: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": tool, "arguments": {}, "_meta": META}}


@pytest.fixture(scope="module")
def read_inbox(gateway: int) -> str:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
    status, answer = raw_post(gateway, body, [f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: tools/list"])
    assert status == 200, answer
    (name,) = [t["name"] for t in answer["result"]["tools"] if t["name"].endswith("read_inbox")]
    return name


def test_routing_headers_are_trimmed_of_spaces_and_tabs_only() -> None:
    given = {"mcp-name": " \t read_inbox\t ", "mcp-method": "tools/call ", "mcp-protocol-version": "\t2026-07-28",
             "accept": "  kept as is  "}
    assert routing_headers(given) == {
        "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "read_inbox"
    }
    assert routing_headers({"mcp-name": "read inbox "}) == {"mcp-name": "read inbox"}  # inner space is the value's


def test_a_name_padded_with_whitespace_is_accepted(gateway: int, read_inbox: str) -> None:
    exact = raw_post(gateway, call(read_inbox, 2),
                     [f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: tools/call", f"Mcp-Name: {read_inbox}"])
    padded = raw_post(gateway, call(read_inbox, 2),
                      [f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: \ttools/call  ", f"Mcp-Name:   {read_inbox}  "])
    assert exact[0] == 200 and "result" in exact[1], exact
    assert padded == exact


def test_a_name_that_differs_is_still_a_header_mismatch(gateway: int, read_inbox: str) -> None:
    headers = [f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: tools/call", f"Mcp-Name:  x{read_inbox} "]
    status, answer = raw_post(gateway, call(read_inbox, 3), headers)
    assert status == 400
    assert answer == {"jsonrpc": "2.0", "id": 3, "error": {
        "code": -32020, "message": "mcp-name header does not match the request body's 'name' parameter"}}
