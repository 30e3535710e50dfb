"""The lock-free hot-path instruments expose what prometheus_client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.hot_instruments import HotCounter, HotHistogram

BUCKETS = (0.01, 0.1, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {(s.name, s.labels.get("le", "")): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if not s.name.endswith("_created")}


def test_histogram_matches_prometheus_client_bucket_for_bucket() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("op_duration", "d", ("method",), BUCKETS, unit="seconds")
    ours.register(hot)
    ref = Histogram("op_duration", "d", ("method",), buckets=BUCKETS, unit="seconds", registry=theirs)
    # On a bound, below all, above all, between: "le" means less than or equal.
    for value in (0.01, 0.0, 5.0, 0.05, 0.1, 1.0, 0.011):
        hot.labels("tools/call").observe(value)
        ref.labels("tools/call").observe(value)
    assert _samples(ours) == _samples(theirs)
    assert _samples(ours)[("op_duration_seconds_bucket", "0.01")] == 2
    assert _samples(ours)[("op_duration_seconds_count", "")] == 7


def test_counter_counts_per_label_set() -> None:
    registry = CollectorRegistry()
    counter = HotCounter("decisions", "d", ("effect",))
    registry.register(counter)
    counter.labels("allow").inc()
    counter.labels("allow").inc()
    counter.labels("hold").inc(3)
    text = generate_latest(registry).decode()
    totals = {s.labels["effect"]: s.value for fam in text_string_to_metric_families(text)
              for s in fam.samples if s.name == "decisions_total"}
    assert totals == {"allow": 2.0, "hold": 3.0}


def test_invented_tool_names_cannot_grow_the_metrics_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.telemetry.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "_CHILD_LIMIT", 5)
    m = metrics_module.Metrics()
    for i in range(500):  # a client calling 500 made-up tools
        m.server_operation("tools/call", f"made_up_{i}", "-32602", "2025-11-25", 0.001)
        m.client_operation("tools/call", f"made_up_{i}", "", "mail", 0.001)
    assert len(m._server_children) <= 5 and len(m._client_children) <= 5
    tools = {s.labels["gen_ai_tool_name"] for f in text_string_to_metric_families(m.exposition().decode())
             for s in f.samples if "gen_ai_tool_name" in s.labels}
    assert metrics_module.OTHER in tools
    assert len(tools) <= 5 * len(metrics_module.INSTRUMENTS) + 1
    total = sum(s.value for f in text_string_to_metric_families(m.exposition().decode())
                if f.name == "mcp_server_operation_duration_seconds" for s in f.samples
                if s.name.endswith("_count"))
    assert total == 500  # nothing is lost: the extra names count under _OTHER
