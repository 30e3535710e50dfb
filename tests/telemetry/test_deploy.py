"""deploy/ stays in step with the code: dashboard metric names exist; Sigma rules match real audit events."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.guard.record import CallRecord
from gateway.telemetry.audit import AuditLog
from gateway.telemetry.metrics import INSTRUMENTS, Metrics
from gateway.telemetry.observers import AuditObserver
from policy import Decision, Leg, ToolCall
from tests.telemetry.test_spans import _ctx

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_dashboard_and_alerts_use_metrics_the_gateway_exports() -> None:
    m = Metrics()
    m.server_operation("tools/call", "t", "", "2025-11-25", 0.1)
    m.client_operation("tools/call", "t", "", "u", 0.1)
    m.decision("hold", "c", "enforce")
    m.hold("t", "c", "a1")
    m.approval_resolved("a1", "approved", 1.0, 2.0)
    m.upstream_error("u", "timeout")
    m.trifecta_reached("s")
    m.observe_sessions(lambda: 1)

    async def pending_in_store() -> int:
        return 1

    m.observe_approvals_pending(pending_in_store)  # the gauge reads the store at each scrape
    asyncio.run(m.refresh())
    m.audit_sink("file", lambda: 0, lambda: True)
    m.audit_delivered("file", 1)
    m.audit_failed("file")
    samples = {s.name for f in text_string_to_metric_families(m.exposition().decode()) for s in f.samples}
    text = (DEPLOY / "grafana-dashboard.json").read_text() + (DEPLOY / "triplock-alerts.yml").read_text()
    labels = {lb.replace(".", "_") for spec in INSTRUMENTS for lb in spec.labels}
    used = set(re.findall(r"\b((?:mcp|triplock)_[a-z_]+)\b", text)) - labels
    assert used and used <= samples, sorted(used - samples)
    json.loads((DEPLOY / "grafana-dashboard.json").read_text())


def _matches(detection: dict[str, Any], event: dict[str, Any]) -> bool:
    def sel(spec: dict[str, Any]) -> bool:
        return all(event.get(k) in (v if isinstance(v, list) else [v]) for k, v in spec.items())

    names = {k: sel(v) for k, v in detection.items() if k != "condition"}
    return bool(eval(detection["condition"], {"__builtins__": {}}, names))  # "a or b" / "selection" only


def _rule(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "sigma" / name).read_text())["detection"])


def _events(effect: str, trifecta: bool, first_use: bool, pin_changed: bool) -> list[dict[str, Any]]:
    audit = AuditLog([])
    seen: list[dict[str, Any]] = []
    audit.listen(seen.append)
    audit._started = True  # no sinks: only the listener sees the sealed records
    obs = AuditObserver(audit)
    record = CallRecord(_ctx(), "mail__send_email", ToolCall("alice", "codex", frozenset(), "s1", "mail",
                                                             "send_email", {"to": "x"}))
    record.decision = Decision(effect, frozenset({Leg.P, Leg.U}), frozenset(Leg), "email_send",  # type: ignore[arg-type]
                               ("r",), ("why",), "rev", "enforce", trifecta, first_use, pin_changed)
    obs.decided(record)
    record.outcome = "pending" if effect == "hold" else "allowed"
    obs.finished(record)
    return seen


def test_sigma_rules_fire_on_the_events_the_gateway_writes() -> None:
    trifecta, first, changed = (_rule(f"triplock_{n}.yml") for n in
                                ("trifecta_hold", "first_mcp_tool_invocation", "tool_definition_changed"))
    held = _events("hold", trifecta=True, first_use=False, pin_changed=False)
    assert any(_matches(trifecta, e) for e in held)
    assert not any(_matches(trifecta, e) for e in _events("allow", False, False, False))
    assert any(_matches(first, e) for e in _events("allow", False, first_use=True, pin_changed=False))
    assert not any(_matches(first, e) for e in _events("allow", False, False, False))
    assert any(_matches(changed, e) for e in _events("hold", False, False, pin_changed=True))
    suspended = {"type": "agent.lifecycle", "action": "suspended", "target": "agent:codex"}
    assert _matches(_rule("triplock_agent_suspended.yml"), suspended)
    assert not _matches(_rule("triplock_agent_suspended.yml"), {**suspended, "action": "resumed"})
    assert _matches(_rule("triplock_new_upstream.yml"), {"type": "triplock.upstream.added", "upstream": "x"})
