"""What one request records while it runs: the SERVER span, the CLIENT span, or less.

A request gets the cheapest object that does the job: :data:`NOOP` with telemetry off,
:class:`MeteredRequest`/:class:`MeteredCall` (duration and error type for the metrics)
with metrics on but no trace exporter, :class:`ServerSpan`/:class:`ClientSpan` when
tracing. Each is a context manager with the same hooks (``reply``, ``inject``); they are
created by :class:`gateway.telemetry.tracing.Telemetry`, which owns sampling and export.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any, Protocol

import orjson
from opentelemetry.trace import Link, SpanContext, SpanKind

from gateway.ports.upstream import UpstreamError
from gateway.telemetry.metrics import OTHER, Metrics
from gateway.telemetry.otel_env import format_traceparent


class Recorder(Protocol):
    """What a span needs of the :class:`gateway.telemetry.tracing.Telemetry` that created it."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def tracing(self) -> bool: ...
    @property
    def capture_content(self) -> bool: ...
    def export(self, name: str, kind: SpanKind, trace_id: int, span_id: int, parent: SpanContext | None,
               attrs: dict[str, Any], links: Any, start: int, end: int, error: str, message: str,
               tracestate: str) -> None: ...


CURRENT: contextvars.ContextVar[ServerSpan | None] = contextvars.ContextVar("triplock_server_span", default=None)
# Well-known mcp.method.name values: anything else is reported as _OTHER in metrics (cardinality).
KNOWN_METHODS = frozenset({
    "completion/complete", "elicitation/create", "initialize", "logging/setLevel", "ping", "prompts/get",
    "prompts/list", "resources/list", "resources/read", "resources/subscribe", "resources/templates/list",
    "resources/unsubscribe", "roots/list", "sampling/createMessage", "tools/call", "tools/list", "server/discover",
})


class _Noop:
    """Stands in for a span when telemetry is off: every hook is a cheap pass-through."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def reply(self, reply: Any) -> Any:
        return reply

    def inject(self, msg: dict[str, Any]) -> dict[str, Any]:
        return msg


NOOP = _Noop()


def error_type(reply: dict[str, Any]) -> str:
    """The ``error.type`` of a JSON-RPC answer: its error code, ``tool_error`` for ``isError``, else ''."""
    err = reply.get("error")
    if isinstance(err, dict):
        return str(err.get("code", OTHER))
    if isinstance(res := reply.get("result"), dict) and res.get("isError") is True:
        return "tool_error"
    return ""


def raised(exc_type: type[BaseException]) -> str:
    """The ``error.type`` of a request that ended in an exception."""
    return "cancelled" if exc_type.__name__ == "CancelledError" else exc_type.__qualname__


class MeteredRequest:
    """One MCP request when metrics are on but tracing is off: only what the duration metric needs.

    No span ids, attributes or context variable: a third of a :class:`ServerSpan`'s cost.
    """

    __slots__ = ("error", "method", "start", "tel", "tool", "version")

    def __init__(self, tel: Recorder, method: str, tool: str, version: str) -> None:
        self.tel, self.method, self.tool, self.version = tel, method, tool, version
        self.error = ""
        self.start = time.perf_counter()

    def __enter__(self) -> MeteredRequest:
        return self

    def reply(self, reply: Any) -> Any:
        if isinstance(reply, dict):
            self.error = error_type(reply)
        return reply

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None and not self.error:
            self.error = raised(exc_type)
        method = self.method
        self.tel.metrics.server_operation(method if method in KNOWN_METHODS else OTHER, self.tool, self.error,
                                          self.version, time.perf_counter() - self.start)


class MeteredCall:
    """One upstream request when metrics are on but tracing is off (see :class:`MeteredRequest`)."""

    __slots__ = ("error", "method", "start", "tel", "tool", "upstream")

    def __init__(self, tel: Recorder, upstream: str, method: str, tool: str) -> None:
        self.tel, self.upstream, self.method, self.tool = tel, upstream, method, tool
        self.error = ""
        self.start = time.perf_counter()

    def __enter__(self) -> MeteredCall:
        return self

    def inject(self, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def reply(self, reply: dict[str, Any]) -> dict[str, Any]:
        self.error = error_type(reply)
        return reply

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, UpstreamError):
            self.error = exc.kind
        elif exc_type is not None:
            self.error = raised(exc_type)
        error, metrics = self.error, self.tel.metrics
        if error and error != "tool_error" and error != "cancelled":
            metrics.upstream_error(self.upstream, error)
        method = self.method
        metrics.client_operation(method if method in KNOWN_METHODS else OTHER, self.tool, error, self.upstream,
                                 time.perf_counter() - self.start)


class ServerSpan:
    """One MCP request as the gateway serves it (SERVER span); also the duration metric's source."""

    __slots__ = ("attrs", "baggage", "error", "links", "message", "method", "name", "parent", "recording",
                 "sampled", "span_id", "start", "tel", "token", "tool", "trace_id", "tracestate", "version")

    def __init__(self, tel: Recorder, method: str, tool: str, version: str) -> None:
        self.tel = tel
        self.method, self.tool, self.version = method, tool, version
        self.name = f"{method} {tool}" if tool else method
        self.attrs: dict[str, Any] = {}
        self.error = ""
        self.message = ""
        self.recording = self.sampled = False
        self.parent: SpanContext | None = None
        self.links: list[Link] = []
        self.trace_id = self.span_id = 0
        self.tracestate = self.baggage = ""
        self.token: contextvars.Token[ServerSpan | None] | None = None
        self.start = time.time_ns()

    def __enter__(self) -> ServerSpan:
        self.token = CURRENT.set(self)
        return self

    def reply(self, reply: Any) -> Any:
        """Note the JSON-RPC answer: an error code, or a tool result with ``isError``."""
        if isinstance(reply, dict):
            self.error = error_type(reply)
            if isinstance(err := reply.get("error"), dict):
                self.attrs["rpc.response.status_code"] = self.error
                self.message = str(err.get("message", ""))[:200]
        return reply

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.token is not None:
            CURRENT.reset(self.token)
        if exc_type is not None and not self.error:
            self.error = raised(exc_type)
        end = time.time_ns()
        tel = self.tel
        tel.metrics.server_operation(self.method if self.method in KNOWN_METHODS else OTHER, self.tool,
                                     self.error, self.version, (end - self.start) / 1e9)
        if self.sampled:
            if self.error:
                self.attrs["error.type"] = self.error
            tel.export(self.name, SpanKind.SERVER, self.trace_id, self.span_id, self.parent, self.attrs,
                       self.links, self.start, end, self.error, self.message, self.tracestate)


class ClientSpan:
    """One request sent to an upstream (CLIENT span), child of the current SERVER span."""

    __slots__ = ("attrs", "error", "message", "method", "parent", "sampled", "server", "span_id", "start", "tel",
                 "tool", "trace_id", "upstream")

    def __init__(self, tel: Recorder, upstream: str, method: str, tool: str, server: ServerSpan | None) -> None:
        self.tel, self.upstream, self.method, self.tool, self.server = tel, upstream, method, tool, server
        self.attrs: dict[str, Any] = {}
        self.error = self.message = ""
        self.sampled = False
        self.trace_id = self.span_id = 0
        self.parent: SpanContext | None = None
        self.start = time.time_ns()

    def __enter__(self) -> ClientSpan:
        return self

    def inject(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``msg`` whose ``params._meta`` carries this span's trace context."""
        if not self.tel.tracing:
            return msg
        params = msg.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta["traceparent"] = format_traceparent(self.trace_id, self.span_id, self.sampled)
        srv = self.server
        if srv is not None and srv.tracestate:
            meta["tracestate"] = srv.tracestate
        if srv is not None and srv.baggage:
            meta["baggage"] = srv.baggage
        return {**msg, "params": {**params, "_meta": meta}}

    def reply(self, reply: dict[str, Any]) -> dict[str, Any]:
        err = reply.get("error")
        if isinstance(err, dict):
            self.error = str(err.get("code", OTHER))
            self.attrs["rpc.response.status_code"] = self.error
            self.message = str(err.get("message", ""))[:200]
        elif isinstance(res := reply.get("result"), dict):
            if res.get("isError") is True:
                self.error = "tool_error"
            elif self.tel.capture_content and self.sampled and self.method == "tools/call":
                self.attrs["gen_ai.tool.call.result"] = orjson.dumps(res).decode()
        return reply

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        tel = self.tel
        if isinstance(exc, UpstreamError):
            self.error, self.message = exc.kind, exc.detail[:200]
        elif exc_type is not None:
            self.error = raised(exc_type)
        if self.error and self.error != "tool_error" and self.error != "cancelled":
            tel.metrics.upstream_error(self.upstream, self.error)
        end = time.time_ns()
        tel.metrics.client_operation(self.method if self.method in KNOWN_METHODS else OTHER, self.tool, self.error,
                                     self.upstream, (end - self.start) / 1e9)
        if self.sampled:
            if self.error:
                self.attrs["error.type"] = self.error
            name = f"{self.method} {self.tool}" if self.tool else self.method
            tel.export(name, SpanKind.CLIENT, self.trace_id, self.span_id, self.parent, self.attrs, (),
                       self.start, end, self.error, self.message, self.server.tracestate if self.server else "")


__all__ = ["CURRENT", "KNOWN_METHODS", "NOOP", "ClientSpan", "MeteredCall", "MeteredRequest", "Recorder",
           "ServerSpan", "error_type", "raised"]
