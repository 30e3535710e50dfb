"""Every metric Triplock records, under its OpenTelemetry name and its Prometheus name.

The catalogue apart from the recording code (:mod:`gateway.telemetry.metrics`), so that the
dashboard, the docs and the tests read one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The MCP conventions' ExplicitBucketBoundaries for the operation-duration histograms.
MCP_DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Humans take seconds to hours to decide on a held call.
APPROVAL_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0)

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class Instrument:
    """One metric under both names: ``otel`` (OTLP, conventions) and ``prom`` (Prometheus)."""

    otel: str
    prom: str
    kind: Kind
    unit: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def prom_labels(self) -> tuple[str, ...]:
        return tuple(k.replace(".", "_") for k in self.labels)


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("mcp.server.operation.duration", "mcp_server_operation_duration_seconds", "histogram", "s",
               "MCP request duration as observed by the gateway, from receipt until the answer is sent.",
               ("mcp.method.name", "gen_ai.tool.name", "error.type", "mcp.protocol.version"), MCP_DURATION_BUCKETS),
    Instrument("mcp.client.operation.duration", "mcp_client_operation_duration_seconds", "histogram", "s",
               "Duration of one request the gateway sent to an upstream MCP server, until its response.",
               ("mcp.method.name", "gen_ai.tool.name", "error.type", "triplock.upstream"), MCP_DURATION_BUCKETS),
    Instrument("triplock.decisions", "triplock_decisions", "counter", "{decision}",
               "Policy decisions on guarded requests (tools/call, resources/read, prompts/get, and refusals of"
               " names outside the caller's catalog), by the policy's effect, action category and mode (in monitor"
               " mode the effect is what enforce mode would have done).",
               ("triplock.decision", "triplock.category", "triplock.mode")),
    Instrument("triplock.holds", "triplock_holds", "counter", "{approval}",
               "Approvals requested: each call held anew for a human, counted once by the process that held it"
               " whatever happens next (a repeat of a call already held or approved is not a new hold), by"
               " exposed tool, category and the rule ids that held it.",
               ("gen_ai.tool.name", "triplock.category", "triplock.rule.id")),
    Instrument("triplock.holds.waiting", "triplock_holds_waiting", "gauge", "{call}",
               "Held calls this process is answering now: waiting in-band for a human's decision (or running once"
               " approved); the sum over processes is every held call in flight."),
    Instrument("triplock.approvals.pending", "triplock_approvals_pending", "gauge", "{approval}",
               "Approvals waiting for a human in the state store this process uses, read at collection time;"
               " processes sharing a store report the same number (aggregate with max), absent while the store"
               " cannot be read."),
    Instrument("triplock.approval.duration", "triplock_approval_duration_seconds", "histogram", "s",
               "Time from a hold to its approval's decision (approved, denied) or expiry, recorded once per"
               " approval by the process that decided or expired it; _count is decisions by state and rule ids.",
               ("triplock.approval.state", "triplock.rule.id"), APPROVAL_BUCKETS),
    Instrument("triplock.upstream.errors", "triplock_upstream_errors", "counter", "{error}",
               "Upstream calls that failed, by upstream and error.type (timeout, unreachable, protocol, ...).",
               ("triplock.upstream", "error.type")),
    Instrument("triplock.limit.exceeded", "triplock_limit_exceeded", "counter", "{event}",
               "Requests or answers refused by a limit (sessions_per_principal, requests_per_principal,"
               " upstream_response_bytes, sse_line_bytes, sse_event_bytes, stdio_line_bytes, header_value),"
               " by upstream where one is involved.", ("limit", "triplock.upstream")),
    Instrument("triplock.sessions.active", "triplock_sessions_active", "gauge", "{session}",
               "Live downstream MCP sessions."),
    Instrument("triplock.http.server.connections", "triplock_http_server_connections", "gauge", "{connection}",
               "Open client connections of the process's own HTTP server (server.runtime = triplock)."),
    Instrument("triplock.http.server.refusals", "triplock_http_server_refusals", "counter", "{connection}",
               "Connections the own HTTP server answered with an error and closed, by error.type: header_timeout,"
               " body_timeout (408), header_too_large (431), bad_request (400, 501), too_many_connections (503).",
               ("error.type",)),
    Instrument("triplock.sessions.trifecta", "triplock_sessions_trifecta", "counter", "{session}",
               "Sessions (or principals) whose legs reached P+U+E, counted by the first call of each this process"
               " saw reach it (a session served by several processes may count once on each)."),
    Instrument("triplock.store.write.failures", "triplock_store_write_failures", "counter", "{write}",
               "Writes of what a guarded call taught (legs, first use, pin) that the state store refused; each"
               " counts the store as down (writes, E legs and holds refused) until a write or probe succeeds."),
    Instrument("triplock.audit.undurable_answers", "triplock_audit_undurable_answers", "counter", "{answer}",
               "Answers sent before their audit record was written (a sink failed or was slower than"
               " audit.durable_timeout)."),
    Instrument("triplock.audit.refused_calls", "triplock_audit_refused_calls", "counter", "{call}",
               "Guarded calls refused because the audit log could not record them (backlog full)."),
    Instrument("triplock.audit.records", "triplock_audit_records", "counter", "{record}",
               "Audit records delivered, by sink.", ("triplock.audit.sink",)),
    Instrument("triplock.audit.sink.errors", "triplock_audit_sink_errors", "counter", "{error}",
               "Failed audit deliveries (records are kept and retried), by sink.", ("triplock.audit.sink",)),
    Instrument("triplock.audit.backlog", "triplock_audit_backlog", "gauge", "{record}",
               "Audit records waiting for delivery, by sink.", ("triplock.audit.sink",)),
    Instrument("triplock.audit.sink.up", "triplock_audit_sink_up", "gauge", "1",
               "1 while the sink's last delivery succeeded, 0 while it is failing.", ("triplock.audit.sink",)),
)
