"""Bad input gets a clear, specific answer: never a stack trace, never a hang. One test per case."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, initialize, running, write_config

ROGUE = str(Path(__file__).resolve().parents[1] / "rogue_upstream.py")
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    rogue_port, gw_port = free_port(), free_port()
    cfg = write_config(
        tmp_path_factory.mktemp("bad") / "t.toml",
        gw_port,
        [
            {"name": "rh", "transport": "http", "url": f"http://127.0.0.1:{rogue_port}/mcp", "call_timeout": 1.0},
            {"name": "rs", "transport": "stdio", "command": PY, "args": [ROGUE], "call_timeout": 1.0},
        ],
        server={"max_body_bytes": LIMIT, "max_json_depth": 32},
    )
    with running([PY, ROGUE, "--http", str(rogue_port)], None):
        with running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"):
            yield f"http://127.0.0.1:{gw_port}/mcp"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def sid(gw: str, http: httpx.Client) -> str:
    return initialize(http, gw)


def post(
    http: httpx.Client, url: str, body: bytes | dict[str, Any] | list[Any], sid: str | None = None, **headers: str
) -> httpx.Response:
    h = {**MCP_HEADERS, **headers}
    if sid:
        h["mcp-session-id"] = sid
    if isinstance(body, bytes):
        return http.post(url, content=body, headers=h)
    return http.post(url, json=body, headers=h)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert body["jsonrpc"] == "2.0" and "error" in body, body
    return body["error"]  # type: ignore[no-any-return]


def call(http: httpx.Client, url: str, sid: str, name: str, args: Any = None) -> httpx.Response:
    params: dict[str, Any] = {"name": name}
    if args is not None:
        params["arguments"] = args
    return post(http, url, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}, sid)


def test_malformed_json(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, b'{"jsonrpc": "2.0", "id": 1, "method": ', sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32700 and r.json()["id"] is None


def test_json_that_is_not_jsonrpc(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, {"hello": "world"}, sid)
    assert r.status_code == 400 and error_of(r)["code"] == -32600


def test_wrong_jsonrpc_version(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, {"jsonrpc": "1.0", "id": 3, "method": "ping"}, sid)
    assert error_of(r)["code"] == -32600 and r.json()["id"] == 3


def test_batch_is_refused(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], sid)
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == -32600 and "batch" in err["message"].lower()


def test_unknown_method(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, {"jsonrpc": "2.0", "id": 4, "method": "tools/explode"}, sid)
    err = error_of(r)
    assert err["code"] == -32601 and "tools/explode" in err["message"]


def test_wrong_param_types(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": 42}}, sid)
    assert error_of(r)["code"] == -32602
    r = call(http, gw, sid, "rh__ok", ["not", "an", "object"])
    assert error_of(r)["code"] == -32602
    r = post(http, gw, {"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": "x"}, sid)
    assert error_of(r)["code"] == -32602


def test_body_over_limit(gw: str, http: httpx.Client, sid: str) -> None:
    big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * LIMIT + b'"}}'
    r = post(http, gw, big, sid)
    assert r.status_code == 413 and str(LIMIT) in error_of(r)["message"]


def test_nesting_deeper_than_limit(gw: str, http: httpx.Client, sid: str) -> None:
    deep = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + b"[" * 40 + b"]" * 40 + b"}}"
    r = post(http, gw, deep, sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32700 and "deeper" in error_of(r)["message"]
    # Just under the limit is fine.
    ok = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + b"[" * 20 + b"]" * 20 + b"}}"
    assert post(http, gw, ok, sid).json()["result"] == {}


def test_invalid_utf8(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, b'{"jsonrpc":"2.0","id":1,"method":"ping\xff\xfe"}', sid)
    assert r.status_code == 400
    assert error_of(r)["code"] == -32700 and "UTF-8" in error_of(r)["message"]


def test_missing_session_id(gw: str, http: httpx.Client) -> None:
    r = post(http, gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 400 and "Mcp-Session-Id" in error_of(r)["message"]


def test_unknown_session_id(gw: str, http: httpx.Client) -> None:
    r = post(http, gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "0" * 32)
    assert r.status_code == 404 and "Session not found" in error_of(r)["message"]


def test_deleted_session_is_gone(gw: str, http: httpx.Client, sid: str) -> None:
    assert http.delete(gw, headers={"mcp-session-id": sid}).status_code == 200
    r = post(http, gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, sid)
    assert r.status_code == 404


def test_unsupported_protocol_version(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(
        http, gw, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, sid, **{"mcp-protocol-version": "1999-01-01"}
    )
    assert r.status_code == 400 and "1999-01-01" in error_of(r)["message"]


def test_initialize_with_unknown_version_gets_our_latest(gw: str, http: httpx.Client) -> None:
    r = post(
        http,
        gw,
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "1999-01-01",
                "capabilities": {},
                "clientInfo": {"name": "x", "version": "1"},
            },
        },
    )
    assert r.json()["result"]["protocolVersion"] == "2025-11-25"


def test_wrong_content_type_and_accept(gw: str, http: httpx.Client, sid: str) -> None:
    r = http.post(gw, content=b"{}", headers={"content-type": "text/plain", "mcp-session-id": sid})
    assert r.status_code == 415
    r = http.post(
        gw, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"accept": "text/html", "mcp-session-id": sid}
    )
    assert r.status_code == 406


def test_foreign_origin_and_host_are_refused(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid, origin="https://evil.example")
    assert r.status_code == 403
    r = post(http, gw, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid, host="evil.example")
    assert r.status_code == 421


def test_unsupported_http_method(gw: str, http: httpx.Client) -> None:
    r = http.put(gw, content=b"")
    assert r.status_code == 405 and "POST" in r.headers["allow"]


def test_upstream_timeout_is_a_tool_error_naming_it(gw: str, http: httpx.Client, sid: str) -> None:
    r = call(http, gw, sid, "rh__hang", {})
    result = r.json()["result"]
    assert result["isError"] is True
    assert "'rh'" in result["content"][0]["text"] and "timeout" in result["content"][0]["text"]


def test_upstream_garbage_is_a_tool_error(gw: str, http: httpx.Client, sid: str) -> None:
    r = call(http, gw, sid, "rh__garbage", {})
    result = r.json()["result"]
    assert result["isError"] is True and "invalid JSON" in result["content"][0]["text"]
    r = call(http, gw, sid, "rh__wrong_id", {})
    assert r.json()["result"]["isError"] is True


def test_upstream_crash_mid_call_then_recovers(gw: str, http: httpx.Client, sid: str) -> None:
    r = call(http, gw, sid, "rs__crash", {})
    result = r.json()["result"]
    assert result["isError"] is True and "'rs'" in result["content"][0]["text"]
    # The gateway restarts the stdio upstream; poll (with a deadline) until it is callable again.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = call(http, gw, sid, "rs__ok", {}).json()
        if "result" in body and not body["result"].get("isError"):
            break
        http.get(gw.replace("/mcp", "/readyz"))
    assert body["result"]["content"][0]["text"] == "ok"


def test_notification_and_stray_response_are_accepted(gw: str, http: httpx.Client, sid: str) -> None:
    r = post(http, gw, {"jsonrpc": "2.0", "method": "notifications/whatever"}, sid)
    assert r.status_code == 202
    r = post(http, gw, {"jsonrpc": "2.0", "id": "tl-unknown", "result": {}}, sid)
    assert r.status_code == 202


def test_list_changed_refreshes_the_catalog(gw: str, http: httpx.Client, sid: str) -> None:
    def names() -> list[str]:
        r = post(http, gw, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, sid)
        return [t["name"] for t in r.json()["result"]["tools"]]

    before = [n for n in names() if n.startswith("rs__grown")]
    assert call(http, gw, sid, "rs__grow", {}).json()["result"]["content"][0]["text"] == "grew"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        grown = [n for n in names() if n.startswith("rs__grown")]
        if len(grown) > len(before):
            break
    assert len(grown) == len(before) + 1, "the upstream's list_changed did not refresh the catalog"
