"""What one upstream can make the gateway hold, and what a principal id can make it send.

A real gateway (JWT auth, the test IdP) in front of the rogue upstream over HTTP and stdio, each
with ``max_response_bytes = 64 KiB``: oversized answers (JSON, an SSE line that never ends, an
SSE event of many lines, a stdio line) fail the call naming the limit, the gateway stops
reading, and ``triplock_limit_exceeded_total`` counts them. A principal id with CR/LF (a JWT
``sub`` can be any string) is never put in the identity header: the call is refused unsent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.identity.idp import FakeIdp
from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, initialize, running, write_config

ROGUE = str(Path(__file__).resolve().parents[1] / "rogue_upstream.py")
LIMIT = 64 * 1024


@dataclass
class Gw:
    url: str
    base: str
    idp: FakeIdp

    def auth(self, sub: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.idp.token(aud=self.url, sub=sub, groups=['agents-run'])}"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("upstream-limits")
    rogue_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    idp = FakeIdp().start()
    cfg = write_config(
        tmp / "t.toml", port,
        [{"name": "rh", "transport": "http", "url": f"http://127.0.0.1:{rogue_port}/mcp", "max_response_bytes": LIMIT,
          "identity_header": "X-Triplock-Principal"},
         {"name": "rs", "transport": "stdio", "command": PY, "args": [ROGUE], "max_response_bytes": LIMIT}],
        server={"public_url": base},
        auth={"mode": "jwt", "issuer": idp.issuer, "jwks_url": idp.jwks_url, "api_keys": False},
    )
    try:
        with running([PY, ROGUE, "--http", str(rogue_port)], None), running(gateway_cmd(cfg), base + "/readyz"):
            yield Gw(base + "/mcp", base, idp)
    finally:
        idp.stop()


def limit_count(gw: Gw, limit: str, upstream: str) -> float:
    """``triplock_limit_exceeded_total`` for one label set, from the gateway's /metrics."""
    labels = {"limit": limit, "triplock_upstream": upstream}
    for family in text_string_to_metric_families(httpx.get(gw.base + "/metrics").text):
        for s in family.samples:
            if s.name == "triplock_limit_exceeded_total" and s.labels == labels:
                return s.value
    return 0.0


def rpc(http: httpx.Client, gw: Gw, sid: str, method: str, params: dict[str, Any], sub: str = "alice") -> Any:
    r = http.post(gw.url, headers={**MCP_HEADERS, **gw.auth(sub), "mcp-session-id": sid},
                  json={"jsonrpc": "2.0", "id": 5, "method": method, "params": params})
    assert r.status_code == 200, r.text
    return r.json()


def call(http: httpx.Client, gw: Gw, sid: str, tool: str, sub: str = "alice", **args: Any) -> dict[str, Any]:
    result: dict[str, Any] = rpc(http, gw, sid, "tools/call", {"name": tool, "arguments": args}, sub)["result"]
    return result


def text_of(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


@pytest.fixture
def session(gw: Gw) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(timeout=30) as http:
        yield http, initialize(http, gw.url, headers=gw.auth("alice"))


def _refusal(upstream: str, what: str, limit: str, verb: str = "stopped reading") -> str:
    return (f"Upstream {upstream!r} failed (protocol): {what} (limit {limit}, set by upstreams[].max_response_bytes);"
            f" the gateway {verb} it")


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_http_answer_over_the_limit_is_a_tool_error_and_not_read(
    gw: Gw, session: tuple[httpx.Client, str], declared: bool
) -> None:
    http, sid = session
    before = limit_count(gw, "upstream_response_bytes", "rh")
    result = call(http, gw, sid, "rh__huge", bytes=16 * LIMIT, declared=declared)  # 1 MiB: declared, refused early
    assert result["isError"] is True
    assert text_of(result) == _refusal("rh", f"its answer is over {LIMIT} bytes", "upstream_response_bytes")
    assert limit_count(gw, "upstream_response_bytes", "rh") == before + 1
    assert text_of(call(http, gw, sid, "rh__ok")) == "ok"  # the pool recovered: next call on a fresh connection
    assert text_of(call(http, gw, sid, "rh__huge", bytes=LIMIT // 2)) == "x" * (LIMIT // 2)  # under it: whole


def test_endless_sse_line_fails_the_call_and_the_gateway_hangs_up(gw: Gw, session: tuple[httpx.Client, str]) -> None:
    http, sid = session
    before = limit_count(gw, "sse_line_bytes", "rh")
    result = call(http, gw, sid, "rh__sse_long_line")
    assert text_of(result) == _refusal("rh", f"it sent an SSE line over {LIMIT} bytes", "sse_line_bytes")
    assert limit_count(gw, "sse_line_bytes", "rh") == before + 1
    stats = call(http, gw, sid, "rh__stats")["structuredContent"]
    assert stats["sse_client_gone"] is True  # the gateway closed the stream; the upstream did not stop by itself
    assert stats["sse_sent"] < 64 * 1024 * 1024


def test_sse_event_of_many_lines_over_the_limit_fails_the_call(gw: Gw, session: tuple[httpx.Client, str]) -> None:
    http, sid = session
    before = limit_count(gw, "sse_event_bytes", "rh")
    result = call(http, gw, sid, "rh__sse_big_event")
    assert text_of(result) == _refusal("rh", f"it sent an SSE event over {LIMIT} bytes", "sse_event_bytes")
    assert limit_count(gw, "sse_event_bytes", "rh") == before + 1
    assert call(http, gw, sid, "rh__stats")["structuredContent"]["sse_client_gone"] is True


def test_resource_read_over_the_limit_is_a_jsonrpc_error(gw: Gw, session: tuple[httpx.Client, str]) -> None:
    http, sid = session
    before = limit_count(gw, "upstream_response_bytes", "rh")
    reply = rpc(http, gw, sid, "resources/read", {"uri": "rogue-http://huge"})
    assert reply["error"] == {
        "code": -32603,
        "message": "Upstream 'rh' failed: protocol: its answer is over 65536 bytes (limit upstream_response_bytes,"
                   " set by upstreams[].max_response_bytes); the gateway stopped reading it",
    }
    assert limit_count(gw, "upstream_response_bytes", "rh") == before + 1


@pytest.mark.parametrize("tool", ["rs__huge", "rs__huge_id_last"])
def test_stdio_line_over_the_limit_fails_its_call_and_the_stream_resynchronises(
    gw: Gw, session: tuple[httpx.Client, str], tool: str
) -> None:
    """The id opens the line (rs__huge) or ends it (rs__huge_id_last: every waiting call fails); either way the
    same process answers the next call."""
    http, sid = session
    pid = call(http, gw, sid, "rs__stats")["structuredContent"]["pid"]
    before = limit_count(gw, "stdio_line_bytes", "rs")
    result = call(http, gw, sid, tool, bytes=3 * LIMIT)
    assert result["isError"] is True
    assert text_of(result) == _refusal("rs", f"it sent a message over {LIMIT} bytes", "stdio_line_bytes", "dropped")
    assert limit_count(gw, "stdio_line_bytes", "rs") == before + 1
    assert text_of(call(http, gw, sid, "rs__ok")) == "ok"
    assert call(http, gw, sid, "rs__stats")["structuredContent"]["pid"] == pid  # not restarted


CRLF_SUB = "mallory\r\nX-Injected: 1"


def test_principal_with_crlf_is_never_sent_in_the_identity_header(gw: Gw) -> None:
    refusal = ("Upstream 'rh' failed (protocol): the principal id contains CR, LF or NUL, so it cannot be sent in"
               " header 'X-Triplock-Principal'; the request was not sent")
    before = limit_count(gw, "header_value", "rh")
    with httpx.Client(timeout=30) as http:
        sid = initialize(http, gw.url, headers=gw.auth(CRLF_SUB))  # our own server: fine, the token carries it
        result = call(http, gw, sid, "rh__headers", sub=CRLF_SUB)
        assert result == {"content": [{"type": "text", "text": refusal}], "isError": True}
        # Stateless era: the principal rides on each request to the gateway's shared upstream session.
        version = "2026-07-28"
        meta = {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}
        r = http.post(gw.url, headers={**MCP_HEADERS, **gw.auth(CRLF_SUB), "mcp-protocol-version": version,
                                       "mcp-method": "tools/call", "mcp-name": "rh__headers"},
                      json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                            "params": {"name": "rh__headers", "arguments": {}, "_meta": meta}})
        assert r.json()["result"] == {"content": [{"type": "text", "text": refusal}], "isError": True,
                                      "resultType": "complete"}
        assert limit_count(gw, "header_value", "rh") == before + 2
        sid = initialize(http, gw.url, headers=gw.auth("alice"))
        seen = call(http, gw, sid, "rh__headers")["structuredContent"]["seen"]
    assert {h.get("x-triplock-principal") for h in seen} <= {"alice", None}
    assert not [h for h in seen if "x-injected" in h or "mallory" in str(h)]
