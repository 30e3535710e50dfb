"""Resumable SSE responses toward handshake-era clients (2025-11-25, SEP-1699), on the wire.

A real ``triplock serve`` fronts the demo workspace (its ``slow_report`` tool reports progress
step by step). A raw HTTP client reads a call's SSE response up to its first progress event,
drops the connection, and reconnects with ``GET`` and ``Last-Event-ID``: it gets every event
after that one and the call's answer, whether they were sent before it came back (replayed from
the stream's buffer) or after (followed live).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import MCP_HEADERS, PY, free_port, gateway_cmd, initialize, running, write_config

VERSION = "2025-11-25"
STEPS = 6
EVENT_ID = re.compile(r"^[0-9a-f]{16}_\d+$")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cfg = write_config(
        tmp_path_factory.mktemp("resumable") / "triplock.toml",
        port,
        [{"name": "demo", "transport": "stdio", "command": PY,
          "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}],
    )
    with running(gateway_cmd(cfg), f"http://127.0.0.1:{port}/readyz"):
        yield f"http://127.0.0.1:{port}/mcp"


def events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """SSE events as dicts of their fields (``data`` decoded when present), comments skipped."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    if event:
        yield event


def call_report(rid: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": "demo__slow_report", "arguments": {"steps": STEPS}, "_meta": {"progressToken": rid}}}


def test_a_dropped_stream_resumes_from_last_event_id(gateway: str) -> None:
    with httpx.Client(timeout=30) as http:
        sid = initialize(http, gateway, VERSION)
        headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": VERSION}
        with http.stream("POST", gateway, headers=headers, json=call_report(5)) as r:
            assert r.headers["content-type"] == "text/event-stream"
            stream = events(r.iter_lines())
            priming = next(stream)
            first = next(stream)
        # The priming event: an id to resume from, when to reconnect, and no data.
        assert priming == {"id": priming["id"], "retry": "1000", "data": ""}
        assert EVENT_ID.match(priming["id"])
        assert json.loads(first["data"])["params"]["progress"] == 1
        assert first["id"] == priming["id"].replace("_0", "_1")
        # The connection is gone; the client comes back for the rest.
        resumed = http.get(gateway, headers={**headers, "accept": "text/event-stream", "last-event-id": first["id"]})
    assert resumed.status_code == 200
    rest = list(events(iter(resumed.text.splitlines())))
    messages = [json.loads(e["data"]) for e in rest]
    assert [m["params"]["progress"] for m in messages[:-1]] == list(range(2, STEPS + 1))
    assert messages[-1]["id"] == 5
    assert messages[-1]["result"]["content"] == [{"type": "text", "text": f"report ready after {STEPS} steps"}]
    stream_key = first["id"].rpartition("_")[0]
    assert [e["id"] for e in rest] == [f"{stream_key}_{n}" for n in range(2, STEPS + 2)]


def test_an_unknown_or_foreign_last_event_id_is_404(gateway: str) -> None:
    with httpx.Client(timeout=30) as http:
        sid = initialize(http, gateway, VERSION)
        headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": VERSION}
        with http.stream("POST", gateway, headers=headers, json=call_report(1)) as r:
            stream = events(r.iter_lines())
            stream_id = next(stream)["id"]
            assert json.loads(list(stream)[-1]["data"])["id"] == 1  # read to the answer
        other = initialize(http, gateway, VERSION)  # another session may not resume this one's stream
        get = {**MCP_HEADERS, "accept": "text/event-stream", "mcp-protocol-version": VERSION}
        foreign = http.get(gateway, headers={**get, "mcp-session-id": other, "last-event-id": stream_id})
        unknown = http.get(gateway, headers={**get, "mcp-session-id": sid, "last-event-id": "0123456789abcdef_3"})
    assert (foreign.status_code, foreign.json()["error"]["message"]) == (
        404, "Unknown Last-Event-ID: no such stream in this session")
    assert unknown.status_code == 404


def test_a_json_reply_has_no_event_log(gateway: str) -> None:
    """A reply that never turns to SSE stays plain JSON: resumability costs a JSON reply nothing."""
    with httpx.Client(timeout=30) as http:
        sid = initialize(http, gateway, VERSION)
        headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": VERSION}
        r = http.post(gateway, headers=headers, json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"})
    assert r.headers["content-type"] == "application/json"
    assert r.json()["id"] == 9
