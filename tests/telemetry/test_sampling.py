"""Root-span sampling decided without the SDK's call must agree with the SDK's samplers."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from gateway.telemetry.tracing import _root_bound


@pytest.mark.parametrize("name", ["traceidratio", "parentbased_traceidratio"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_ratio_bound_agrees_with_the_sdk(name: str, rate: float) -> None:
    bound = _root_bound({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": str(rate)})
    assert bound is not None
    sdk = TraceIdRatioBased(rate)
    rng = random.Random(7)
    for _ in range(2000):
        trace_id = rng.getrandbits(128)
        ours = (trace_id & ((1 << 64) - 1)) < bound
        theirs = sdk.should_sample(None, trace_id, "tools/call x", SpanKind.SERVER).decision
        assert ours == (theirs == Decision.RECORD_AND_SAMPLE)


def test_static_and_unknown_samplers() -> None:
    assert _root_bound({}) == 1 << 64  # the default: parentbased_always_on
    assert _root_bound({"OTEL_TRACES_SAMPLER": "always_off"}) == 0
    assert _root_bound({"OTEL_TRACES_SAMPLER": "jaeger_remote"}) is None  # left to the SDK
    assert _root_bound({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}) is None
