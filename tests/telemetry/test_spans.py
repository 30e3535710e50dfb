"""Spans and metrics through the real OTLP/HTTP exporters to a real receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import TelemetryConfig, UpstreamConfig
from gateway.guard.record import CallRecord
from gateway.mcp.context import RequestContext
from gateway.mcp.sessions import DownstreamSession
from gateway.ports.upstream import UpstreamError
from gateway.telemetry.metrics import MCP_DURATION_BUCKETS
from gateway.telemetry.observers import TelemetryObserver
from gateway.telemetry.otel_env import span_exporter_from_env
from gateway.telemetry.tracing import NOOP, Telemetry, setup_telemetry
from policy import Decision, Leg, ToolCall
from tests.telemetry.receiver import OtlpReceiver

CLIENT_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HTTP_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
SECRET = "hunter2-do-not-log"
UPSTREAM = UpstreamConfig(name="mail", transport="http", url="http://mail.internal:8443/mcp")


@pytest.fixture
def tel(otel_env: OtlpReceiver) -> Iterator[Telemetry]:
    t = setup_telemetry(TelemetryConfig())
    assert t.tracing and t.pusher is not None
    yield t
    t.shutdown()


def _ctx() -> RequestContext:
    session = DownstreamSession(id="5e55101d", protocol_version="2025-11-25", client_info={}, capabilities={},
                                principal="alice")
    return RequestContext("alice", "2025-11-25", session, None, {}, "codex", frozenset())


def _scope() -> dict[str, Any]:
    return {"type": "http", "http_version": "1.1", "client": ("127.0.0.1", 50123), "server": ("127.0.0.1", 8080),
            "headers": [(b"traceparent", HTTP_TP.encode()), (b"tracestate", b"vendor=1")]}


def _decision(effect: str = "hold") -> Decision:
    return Decision(effect, frozenset({Leg.P, Leg.U}), frozenset({Leg.P, Leg.U, Leg.E}), "email_send",  # type: ignore[arg-type]
                    ("trifecta.hold",), ("completes the trifecta",), "rev-7", "enforce", True, False, False)


def _call(tel: Telemetry, reply_result: dict[str, Any], *, fail: UpstreamError | None = None) -> dict[str, Any]:
    """One tools/call as transport + dispatch + pipeline drive the hooks; returns what went upstream."""
    raw: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": "mail__send_email", "arguments": {"body": SECRET}, "_meta": {"traceparent": CLIENT_TP}}}
    ctx = _ctx()
    obs = TelemetryObserver(tel)
    record = CallRecord(ctx, "mail__send_email", ToolCall("alice", "codex", frozenset(), "5e55101d", "mail",
                                                          "send_email", {"body": SECRET}))
    sent: dict[str, Any] = {}
    with tel.server_span(ctx, raw, _scope()) as server:
        record.decision = _decision()
        obs.decided(record)
        forwarded = {**raw, "params": {**raw["params"], "name": "send_email"}}
        try:
            with tel.client_span("mail", forwarded, UPSTREAM) as client:
                sent = client.inject(forwarded)
                if fail is not None:
                    raise fail
                client.reply({"jsonrpc": "2.0", "id": 7, "result": reply_result})
        except UpstreamError:
            reply_result = {"content": [], "isError": True}
        record.outcome, record.hold_waited, record.args_hash = "executed", 1.25, "ab" * 32
        obs.finished(record)
        server.reply({"jsonrpc": "2.0", "id": 7, "result": reply_result})
    return sent


def test_one_trace_client_to_gateway_to_upstream_with_decision_and_no_arguments(
    tel: Telemetry, otel_env: OtlpReceiver
) -> None:
    receiver = otel_env
    sent = _call(tel, {"content": [{"type": "text", "text": "sent " + SECRET}]})
    assert tel.force_flush()
    assert receiver.wait_for(lambda r: len(r.spans) >= 2)
    server = receiver.spans_named("tools/call mail__send_email")[0]
    client = receiver.spans_named("tools/call send_email")[0]
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    # params._meta wins over the HTTP header; the HTTP context is kept as a link.
    assert (server.trace_id, server.parent_span_id, server.kind) == (trace, "00f067aa0ba902b7", 2)
    assert server.links == [(trace, "1111111111111111")]
    assert (client.trace_id, client.parent_span_id, client.kind) == (trace, server.span_id, 3)
    assert sent["params"]["_meta"]["traceparent"] == f"00-{trace}-{client.span_id}-01"
    a = server.attributes
    assert a["mcp.method.name"] == "tools/call" and a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "mail__send_email" and a["jsonrpc.request.id"] == "7"
    assert a["mcp.session.id"] == "5e55101d" and a["mcp.protocol.version"] == "2025-11-25"
    assert (a["client.address"], a["client.port"], a["network.transport"]) == ("127.0.0.1", 50123, "tcp")
    assert a["triplock.decision"] == "hold" and a["triplock.category"] == "email_send"
    assert (a["triplock.legs.before"], a["triplock.legs.after"]) == ("P+U", "P+U+E")
    assert a["triplock.rule_ids"] == ["trifecta.hold"] and a["triplock.policy.revision"] == "rev-7"
    assert a["triplock.hold.wait_s"] == 1.25 and a["triplock.upstream"] == "mail"
    assert "error.type" not in a and server.status_code == 0
    c = client.attributes
    assert (c["server.address"], c["server.port"], c["gen_ai.tool.name"]) == ("mail.internal", 8443, "send_email")
    assert server.resource["service.name"] == "triplock-test"
    for span in (server, client):
        assert SECRET not in repr(span.attributes), "tool arguments or results leaked into a span"


def test_tool_error_and_upstream_timeout_set_error_type(tel: Telemetry, otel_env: OtlpReceiver) -> None:
    receiver = otel_env
    _call(tel, {"content": [{"type": "text", "text": "nope"}], "isError": True})
    _call(tel, {}, fail=UpstreamError("mail", "timeout", "no answer within 60s"))
    assert tel.force_flush()
    assert receiver.wait_for(lambda r: len(r.spans) >= 4)
    servers = receiver.spans_named("tools/call mail__send_email")
    clients = receiver.spans_named("tools/call send_email")
    assert {s.attributes["error.type"] for s in servers} == {"tool_error"}
    assert {c.attributes["error.type"] for c in clients} == {"tool_error", "timeout"}
    assert all(s.status_code == 2 for s in servers + clients)  # STATUS_CODE_ERROR
    text = tel.metrics.exposition().decode()
    errors = {s.labels["error_type"]: s.value for f in text_string_to_metric_families(text)
              for s in f.samples if s.name == "triplock_upstream_errors_total"}
    assert errors == {"timeout": 1.0}


def test_capture_content_puts_arguments_and_results_on_spans(otel_env: OtlpReceiver) -> None:
    tel = setup_telemetry(TelemetryConfig(capture_content=True))
    try:
        _call(tel, {"content": [{"type": "text", "text": "result-text"}]})
        assert tel.force_flush()
        assert otel_env.wait_for(lambda r: len(r.spans) >= 2)
        server = otel_env.spans_named("tools/call mail__send_email")[0]
        client = otel_env.spans_named("tools/call send_email")[0]
        assert SECRET in server.attributes["gen_ai.tool.call.arguments"]
        assert "result-text" in client.attributes["gen_ai.tool.call.result"]
    finally:
        tel.shutdown()


def test_metrics_reach_otlp_and_prometheus_with_the_conventions_buckets(
    tel: Telemetry, otel_env: OtlpReceiver
) -> None:
    receiver = otel_env
    _call(tel, {"content": []})
    assert tel.force_flush()
    assert receiver.wait_for(lambda r: bool(r.metric("mcp.server.operation.duration"))
                             and bool(r.metric("triplock.decisions")))
    server = receiver.metric("mcp.server.operation.duration")[0]
    assert (server.kind, server.unit, server.count) == ("histogram", "s", 1)
    assert server.bounds == list(MCP_DURATION_BUCKETS) and sum(server.bucket_counts) == 1
    assert server.attributes == {"mcp.method.name": "tools/call", "gen_ai.tool.name": "mail__send_email",
                                 "mcp.protocol.version": "2025-11-25"}
    client = receiver.metric("mcp.client.operation.duration")[0]
    assert client.attributes["triplock.upstream"] == "mail" and client.count == 1
    decisions = receiver.metric("triplock.decisions")[0]
    assert decisions.value == 1 and decisions.attributes["triplock.decision"] == "hold"
    assert receiver.metric("triplock.sessions.trifecta")[0].value == 1
    families = {f.name: f for f in text_string_to_metric_families(tel.metrics.exposition().decode())}
    hist = families["mcp_server_operation_duration_seconds"]
    assert hist.type == "histogram"
    les = [s.labels["le"] for s in hist.samples if s.name.endswith("_bucket")]
    assert les == [*(str(b) for b in MCP_DURATION_BUCKETS), "+Inf"]
    count = next(s for s in hist.samples if s.name.endswith("_count"))
    assert count.value == 1 and count.labels["mcp_method_name"] == "tools/call"
    assert [s.value for s in families["triplock_decisions"].samples if s.name.endswith("_total")] == [1.0]


def test_no_exporter_configured_means_no_op_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    tel = setup_telemetry(TelemetryConfig(prometheus=False))
    assert not tel.active and tel.processor is None and tel.pusher is None
    assert tel.server_span(_ctx(), {"method": "tools/call"}, _scope()) is NOOP
    assert tel.client_span("mail", {"method": "tools/call"}) is NOOP
    msg = {"method": "tools/call", "params": {}}
    assert NOOP.inject(msg) is msg


def test_grpc_protocol_selects_the_grpc_exporter() -> None:
    exporter = span_exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    assert span_exporter_from_env({}) is None
    assert span_exporter_from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}) is None


def test_metrics_without_tracing_record_durations_errors_and_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    # /metrics on, no OTEL exporter: the lean per-request objects must still label errors as spans would.
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        monkeypatch.delenv(var, raising=False)
    tel = setup_telemetry(TelemetryConfig(prometheus=True))
    assert tel.active and not tel.tracing
    _call(tel, {"content": [], "isError": True})
    _call(tel, {"content": []}, fail=UpstreamError("mail", "timeout", "no answer within 30s"))
    samples = [s for f in text_string_to_metric_families(tel.metrics.exposition().decode()) for s in f.samples]

    def count(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    assert count("mcp_server_operation_duration_seconds_count", error_type="tool_error",
                 gen_ai_tool_name="mail__send_email") == 2
    assert count("mcp_client_operation_duration_seconds_count", error_type="tool_error",
                 triplock_upstream="mail") == 1
    assert count("mcp_client_operation_duration_seconds_count", error_type="timeout") == 1
    assert count("triplock_upstream_errors_total", triplock_upstream="mail", error_type="timeout") == 1
    assert count("triplock_decisions_total", triplock_decision="hold") == 2
    assert tel.current() is None  # no span context to carry without tracing
