"""The standard ``OTEL_*`` environment variables, and W3C trace context strings.

Exporter choice differs from the SDK's default on purpose: the SDK exports OTLP to
localhost when nothing is set; the gateway exports nothing unless an endpoint or an
exporter name is configured, so an unconfigured gateway pays nothing for tracing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

log = logging.getLogger("triplock.telemetry")

_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: Any) -> SpanContext | None:
    """A remote SpanContext from a W3C ``traceparent`` (version 00 layout), or None if invalid."""
    if not isinstance(value, str) or len(value) < 55:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if len(parts[3]) != 2 or not set(parts[1] + parts[2] + parts[3]) <= _HEX or (parts[0] == "00" and len(parts) != 4):
        return None
    trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, True, TraceFlags(int(parts[3], 16) & 1))


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def _otlp_protocol(env: Mapping[str, str], signal: str) -> str:
    proto = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    proto = proto.strip() or "http/protobuf"
    if proto not in ("grpc", "http/protobuf"):
        log.warning("OTLP protocol %r is not supported here; using http/protobuf", proto)
        proto = "http/protobuf"
    return proto


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    """Which exporters the env asks for. Unlike the SDK default, nothing unless something is configured."""
    names = env.get(f"OTEL_{signal}_EXPORTER")
    if names is None:
        has_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        return ["otlp"] if has_endpoint else []
    return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]


def span_exporter_from_env(env: Mapping[str, str]) -> SpanExporter | None:
    for name in _exporter_names(env, "TRACES"):
        if name == "otlp":
            if _otlp_protocol(env, "TRACES") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

                return Grpc()
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

            return Http()
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        log.warning("OTEL_TRACES_EXPORTER %r is not supported (otlp, console, none)", name)
    return None


def metric_exporter_from_env(env: Mapping[str, str]) -> Any:
    for name in _exporter_names(env, "METRICS"):
        if name == "otlp":
            if _otlp_protocol(env, "METRICS") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

                return Grpc()
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

            return Http()
        if name != "prometheus":  # /metrics is always served by the gateway itself when enabled
            log.warning("OTEL_METRICS_EXPORTER %r is not supported (otlp, prometheus, none)", name)
    return None


def wants_fast_otlp_http(env: Mapping[str, str]) -> bool:
    """True when traces go to OTLP over HTTP/protobuf: the lean exporter handles that case."""
    return _exporter_names(env, "TRACES") == ["otlp"] and _otlp_protocol(env, "TRACES") == "http/protobuf"
