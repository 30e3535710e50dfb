"""W3C trace context toward HTTP upstreams: what the gateway put in ``params._meta``, as HTTP headers."""

from __future__ import annotations

from typing import Any

_TRACE_KEYS = ("traceparent", "tracestate", "baggage")


def trace_headers(message: dict[str, Any]) -> dict[str, str] | None:
    """W3C trace context the gateway put in ``params._meta``, repeated as HTTP headers for HTTP-level tracing."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict) or "traceparent" not in meta:
        return None
    return {k: v for k in _TRACE_KEYS if isinstance(v := meta.get(k), str) and v.isascii() and v.isprintable()}
