"""A real OTLP/HTTP receiver on loopback: decodes protobuf traces and metrics for tests to assert on.

It runs under uvicorn on its own thread; tests wait on it with deadlines
(:meth:`OtlpReceiver.wait_for`), never with fixed sleeps.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


@dataclass
class Span:
    name: str
    kind: int  # 2 SERVER, 3 CLIENT
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    links: list[tuple[str, str]]
    resource: dict[str, Any]


@dataclass
class MetricPoint:
    name: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    value: float = 0.0
    count: int = 0
    bounds: list[float] = field(default_factory=list)
    bucket_counts: list[int] = field(default_factory=list)


class OtlpReceiver:
    """Collects everything exported to ``url`` (``/v1/traces`` and ``/v1/metrics``)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[MetricPoint] = []
        self.requests = 0
        self._cond = threading.Condition()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off", access_log=False,
                                                     interface="asgi3"))
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="otlp-receiver")

    def start(self, deadline: float = 15.0) -> OtlpReceiver:
        self._thread.start()
        end = time.monotonic() + deadline
        while not self._server.started:
            if time.monotonic() > end or not self._thread.is_alive():
                raise RuntimeError("OTLP receiver did not start")
            time.sleep(0.01)  # polling for readiness, bounded by the deadline
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def clear(self) -> None:
        with self._cond:
            self.spans.clear()
            self.metrics.clear()

    def spans_named(self, name: str) -> list[Span]:
        with self._cond:
            return [s for s in self.spans if s.name == name]

    def metric(self, name: str) -> list[MetricPoint]:
        with self._cond:
            return [m for m in self.metrics if m.name == name]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = dict(scope["headers"])
        if headers.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        if scope["path"] == "/v1/traces":
            self._traces(ExportTraceServiceRequest.FromString(body))
            reply = ExportTraceServiceResponse().SerializeToString()
        elif scope["path"] == "/v1/metrics":
            self._metrics(ExportMetricsServiceRequest.FromString(body))
            reply = ExportMetricsServiceResponse().SerializeToString()
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-protobuf")]})
        await send({"type": "http.response.body", "body": reply})

    def _traces(self, req: ExportTraceServiceRequest) -> None:
        got = []
        for rs in req.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    got.append(Span(sp.name, sp.kind, sp.trace_id.hex(), sp.span_id.hex(), sp.parent_span_id.hex(),
                                    attributes(sp.attributes), sp.status.code, sp.status.message,
                                    [(ln.trace_id.hex(), ln.span_id.hex()) for ln in sp.links], resource))
        with self._cond:
            self.requests += 1
            self.spans.extend(got)
            self._cond.notify_all()

    def _metrics(self, req: ExportMetricsServiceRequest) -> None:
        got = []
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind == "histogram":
                        for p in m.histogram.data_points:
                            got.append(MetricPoint(m.name, m.unit, kind, attributes(p.attributes), p.sum, p.count,
                                                   list(p.explicit_bounds), list(p.bucket_counts)))
                    elif kind in ("sum", "gauge"):
                        for q in getattr(m, kind).data_points:
                            value = q.as_double if q.WhichOneof("value") == "as_double" else q.as_int
                            got.append(MetricPoint(m.name, m.unit, kind, attributes(q.attributes), value))
        with self._cond:
            self.requests += 1
            self.metrics.extend(got)
            self._cond.notify_all()
