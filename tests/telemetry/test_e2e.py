"""End to end through a real gateway process: one trace agent -> Triplock -> MCP server, /metrics, audit.

NOTE: needs the telemetry/audit wiring in gateway/app.py and ``cli_audit.register`` in
gateway/cli/main.py (see the issue-5 report); until the lead adds them these tests fail.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from load_tests.lean_upstream import make_app
from tests.support import PY, free_port, running, write_config
from tests.telemetry.receiver import OtlpReceiver

SECRET = "hunter2-e2e-secret"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
# The lean upstream's echo, classified as an email send: every call of it waits for a human.
POLICY = """version: 1
name: e2e
mode: enforce
strict: false
legs: {scope: session}
first_use: {enabled: false, scope: tool}
defaults: {read: allow, write: allow, destructive: hold, unknown: hold, store_unavailable_reads: allow}
approval_required_actions: [email_send]
default_upstream: {action_control: allow_all, new_actions_default: allow, trust_annotations: false}
upstreams:
  lean:
    action_control: allow_all
    new_actions_default: allow
    tools:
      echo: {legs: [E], effect: write, category: email_send}
rules: []
"""
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2025-11-25"}


class RecordingUpstream:
    """The lean upstream, remembering the trace context each tools/call arrived with."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.port = free_port()
        inner = make_app(2)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                return await inner(scope, receive, send)
            body = b""
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
            msg = orjson.loads(body)
            if msg.get("method") == "tools/call":
                self.seen.append({"header": dict(scope["headers"]).get(b"traceparent", b"").decode(),
                                  "meta": (msg.get("params") or {}).get("_meta") or {}})
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await inner(scope, replay, send)

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", interface="asgi3"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    up = RecordingUpstream()
    up.thread.start()
    end = time.monotonic() + 15
    while not up.server.started:
        assert time.monotonic() < end, "upstream did not start"
        time.sleep(0.01)
    yield up
    up.server.should_exit = True
    up.thread.join(timeout=10)


@pytest.fixture(scope="module")
def gateway(upstream: RecordingUpstream, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gw")
    port = free_port()
    audit_path = tmp / "audit.jsonl"
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    cfg = write_config(tmp / "gw.toml", port, [{"name": "lean", "prefix": "lean", "transport": "http",
                                                "url": f"http://127.0.0.1:{upstream.port}/mcp"}],
                       server={"log_level": "info"}, audit={"path": str(audit_path)},
                       approvals={"hold_wait": 1.0}, store={"kind": "memory"}, policy={"file": str(policy)})
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_METRIC_EXPORT_INTERVAL": "500", "TRIPLOCK_APPROVER_TOKENS": "carol=tok-carol"}
    base = f"http://127.0.0.1:{port}"
    with running([PY, "-m", "gateway.cli", "serve", "--config", str(cfg)], f"{base}/readyz", env=env) as proc:
        r = httpx.post(f"{base}/mcp", headers=HEADERS, json={"jsonrpc": "2.0", "id": 0, "method": "initialize",
                       "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                  "clientInfo": {"name": "e2e", "version": "1"}}}, timeout=30)
        sid = r.headers["mcp-session-id"]
        yield {"base": base, "sid": sid, "audit": audit_path, "proc": proc}


def _call(gw: dict[str, Any], rid: int, name: str, args: dict[str, Any], span_id: str) -> dict[str, Any]:
    headers = {**HEADERS, "mcp-session-id": gw["sid"], "traceparent": f"00-{CLIENT_TRACE}-{span_id}-01"}
    r = httpx.post(f"{gw['base']}/mcp", headers=headers, timeout=60, json={
        "jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": args}})
    return dict(r.json())


@pytest.fixture(scope="module")
def approved_call(gateway: dict[str, Any], upstream: RecordingUpstream) -> str:
    """One held call, approved by carol and repeated: what both tests below look at (traces; audit and
    metrics), made here so that each test has it whichever runs first or alone. Returns the approval id."""
    # The policy holds echo: the call waits hold_wait (1 s), then answers "pending" with the approval id.
    held = _call(gateway, 1, "lean__echo", {"q": SECRET}, "b7ad6b7169203331")
    assert "_meta" in held["result"], held
    approval_id = str(held["result"]["_meta"]["triplock/approval"]["approval_id"])
    assert upstream.seen == []
    r = httpx.post(f"{gateway['base']}/api/approvals/{approval_id}/approve", json={"reason": "fine"},
                   headers={"authorization": "Bearer tok-carol"}, timeout=10)
    assert r.status_code == 200, r.text
    done = _call(gateway, 2, "lean__echo", {"q": SECRET}, "b7ad6b7169203332")  # the same call, repeated
    assert done["result"].get("isError") is None, done
    return approval_id


def test_held_then_approved_call_is_one_trace_to_the_upstream(approved_call: str, gateway: dict[str, Any],
                                                               upstream: RecordingUpstream,
                                                               receiver: OtlpReceiver) -> None:
    approval_id = approved_call
    assert receiver.wait_for(lambda r: len(r.spans_named("tools/call lean__echo")) >= 2
                             and bool(r.spans_named("tools/call echo")), timeout=20)
    # by the client's span id each came from (other tests' calls add spans of the same name)
    servers = {s.parent_span_id: s for s in receiver.spans_named("tools/call lean__echo")}
    first, second = servers["b7ad6b7169203331"], servers["b7ad6b7169203332"]
    assert (first.attributes["triplock.outcome"], second.attributes["triplock.outcome"]) == ("pending", "executed")
    client = receiver.spans_named("tools/call echo")[0]
    assert (first.trace_id, first.parent_span_id) == (CLIENT_TRACE, "b7ad6b7169203331")
    assert (second.trace_id, second.parent_span_id) == (CLIENT_TRACE, "b7ad6b7169203332")
    assert (client.trace_id, client.parent_span_id, client.kind) == (CLIENT_TRACE, second.span_id, 3)
    for span in (first, second):
        a = span.attributes
        assert a["triplock.decision"] == "hold" and a["triplock.approval.id"] == approval_id
        assert a["triplock.rule_ids"] and a["triplock.policy.revision"] and a["triplock.legs.after"]
        assert a["gen_ai.tool.name"] == "lean__echo" and a["mcp.session.id"] == gateway["sid"]
    assert first.attributes["triplock.hold.wait_s"] >= 1.0 and first.attributes["error.type"] == "tool_error"
    # The trace id reached the upstream, in params._meta and in the HTTP header.
    seen = upstream.seen[-1]
    assert seen["meta"]["traceparent"] == f"00-{CLIENT_TRACE}-{client.span_id}-01" == seen["header"]
    for span in (first, second, client):
        assert SECRET not in repr(span.attributes), "argument values leaked into a span"


def test_metrics_endpoint_and_audit_log_verify(approved_call: str, gateway: dict[str, Any],
                                               receiver: OtlpReceiver) -> None:
    _call(gateway, 3, "lean__echo", {"q": "x"}, "b7ad6b7169203333")  # held: pending after hold_wait

    def tools_calls() -> tuple[float, dict[str, Any]]:
        text = httpx.get(f"{gateway['base']}/metrics", timeout=10).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return sum(s.value for s in families["mcp_server_operation_duration_seconds"].samples
                   if s.name.endswith("_count") and s.labels.get("mcp_method_name") == "tools/call"), families

    # A request is metered once its answer is sent, so the last one may land just after the client has it.
    deadline = time.monotonic() + 20
    while (seen := tools_calls())[0] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    count, families = seen
    assert count == 3  # the approved call's two (held, then executed) and the one above
    assert "triplock_decisions" in families and "triplock_sessions_active" in families
    assert receiver.wait_for(lambda r: bool(r.metric("mcp.server.operation.duration")), timeout=20)
    path: Path = gateway["audit"]
    assert receiver.wait_for(lambda r: path.exists() and b"connector.call.completed" in path.read_bytes(), 20)
    types = {json.loads(x)["type"] for x in path.read_text().splitlines()}
    assert {"connector.call.requested", "connector.call.completed", "triplock.approval.requested",
            "triplock.approval.granted", "triplock.approval.executed"} <= types
    assert SECRET not in path.read_text()
    done = subprocess.run([PY, "-m", "gateway.cli", "audit", "verify", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
