"""A lean OTLP/HTTP span exporter: spans encoded straight to protobuf wire bytes, batched on a thread.

Why: the SDK's OTLP encoder measured ~140 µs per span with ~20 attributes on the
benchmark machine (a Python object per attribute, then serialisation); two spans per
call made tracing cost more than half the gateway's throughput. Here a span is a tuple
until export, and the encoded ``KeyValue`` bytes of repeated attribute pairs (method,
tool, decision, upstream...) are cached, so most of a span is a few dict lookups and a
``b"".join``. The wire format is ``opentelemetry/proto/trace/v1/trace.proto``; the tests
decode what this sends with the official ``opentelemetry-proto`` classes.

Honours OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT / HEADERS / TIMEOUT / COMPRESSION / CERTIFICATE
and OTEL_BSP_SCHEDULE_DELAY / MAX_EXPORT_BATCH_SIZE / MAX_QUEUE_SIZE. gRPC and other
exporters go through the SDK instead (see :mod:`gateway.telemetry.tracing`).
"""

from __future__ import annotations

import collections
import gzip
import http.client
import logging
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("triplock.telemetry")

SERVER, CLIENT = 2, 3  # OTLP SpanKind values
SpanTuple = tuple[str, int, int, int, int, dict[str, Any], Any, int, int, str, str, str]
"""name, kind, trace_id, span_id, parent_span_id (0: root), attributes, links, start_ns, end_ns, error, message,
tracestate"""


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _any(value: Any) -> bytes:
    if isinstance(value, str):
        return _ld(1, value.encode())
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, list | tuple):
        return _ld(5, b"".join(_ld(1, _any(v)) for v in value))
    return _ld(1, str(value).encode())


class Encoder:
    """ExportTraceServiceRequest bytes for one batch of span tuples."""

    def __init__(self, resource_attrs: Mapping[str, Any], scope_name: str, scope_version: str) -> None:
        resource = _ld(1, b"".join(self._kv_uncached(k, v) for k, v in resource_attrs.items()))
        self._resource = _ld(1, resource)
        self._scope = _ld(1, _ld(1, scope_name.encode()) + _ld(2, scope_version.encode()))
        self._cache: dict[tuple[str, Any], bytes] = {}

    @staticmethod
    def _kv_uncached(key: str, value: Any) -> bytes:
        return _ld(1, key.encode()) + _ld(2, _any(value))

    def kv(self, key: str, value: Any) -> bytes:
        try:
            cached = self._cache.get((key, value))
        except TypeError:  # an unhashable value (a list): encode it every time
            return _ld(9, self._kv_uncached(key, value))
        if cached is None:
            if len(self._cache) > 20_000:  # ids and ports vary: keep the cache for the repeating pairs
                self._cache.clear()
            cached = self._cache[(key, value)] = _ld(9, self._kv_uncached(key, value))
        return cached

    def span(self, s: SpanTuple) -> bytes:
        name, kind, trace_id, span_id, parent, attrs, links, start, end, error, message, tracestate = s
        parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
        if tracestate:
            parts.append(_ld(3, tracestate.encode()))
        if parent:
            parts += [b"\x22\x08", parent.to_bytes(8, "big")]
        parts += [_ld(5, name.encode()), b"\x30", _varint(kind), b"\x39", struct.pack("<Q", start), b"\x41",
                  struct.pack("<Q", end)]
        kv = self.kv
        parts += [kv(k, v) for k, v in attrs.items()]
        for link_trace, link_span, link_attrs in links:
            body = b"\x0a\x10" + link_trace.to_bytes(16, "big") + b"\x12\x08" + link_span.to_bytes(8, "big")
            body += b"".join(_ld(4, self._kv_uncached(k, v)) for k, v in link_attrs.items())
            parts.append(_ld(13, body))
        if error:
            parts.append(_ld(15, (_ld(2, message.encode()) if message else b"") + b"\x18\x02"))
        return _ld(2, b"".join(parts))

    def request(self, spans: list[SpanTuple]) -> bytes:
        scope_spans = _ld(2, self._scope + b"".join(self.span(s) for s in spans))
        return _ld(1, self._resource + scope_spans)


def _env(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or default


class OtlpHttpSpanSink:
    """Queue of finished spans; a daemon thread POSTs them in batches to ``/v1/traces``."""

    def __init__(self, env: Mapping[str, str], resource_attrs: Mapping[str, Any]) -> None:
        traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
        self.url = urlsplit(traces or base.rstrip("/") + "/v1/traces")
        self.headers = {"content-type": "application/x-protobuf"}
        for pair in _env(env, "HEADERS").split(","):
            k, sep, v = pair.partition("=")
            if sep and k.strip():
                self.headers[unquote(k.strip()).lower()] = unquote(v.strip())
        self.gzip = _env(env, "COMPRESSION").strip().lower() == "gzip"
        if self.gzip:
            self.headers["content-encoding"] = "gzip"
        self.timeout = float(_env(env, "TIMEOUT", "10000")) / 1000  # ms, per the spec
        self.certificate = _env(env, "CERTIFICATE") or None
        self.delay = float(env.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000
        self.batch = int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"))
        self.max_queue = int(env.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048"))
        self.encoder = Encoder(resource_attrs, "triplock", "0.1.0")
        self.queue: collections.deque[SpanTuple] = collections.deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one drain at a time: the thread's or a force_flush's
        self._stop = False
        self._conn: http.client.HTTPConnection | None = None
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="triplock-otlp-spans", daemon=True)
        self._thread.start()

    def add(self, span: SpanTuple) -> None:
        """Called on the event loop: O(1), never blocks; a full queue drops (and counts) the span."""
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            return
        self.queue.append(span)
        # Only on reaching a batch: Event.set() takes a lock and notifies, and the queue stays at or
        # over a batch for as long as the thread is busy draining (which drains until empty anyway).
        if len(self.queue) == self.batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.delay)
            self._wake.clear()
            self._drain()

    def _drain(self) -> bool:
        ok = True
        with self._lock:
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
                ok = self._post(self.encoder.request(batch)) and ok
        return ok

    def _post(self, body: bytes) -> bool:
        if self.gzip:
            body = gzip.compress(body)
        for attempt in (1, 2):  # one reconnect: keep-alive connections go stale
            try:
                conn = self._connection()
                conn.request("POST", self.url.path or "/v1/traces", body, self.headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status < 300:
                    return True
                self._warn(f"HTTP {resp.status}")
                return False
            except (OSError, http.client.HTTPException) as exc:
                self._conn = None
                if attempt == 2:
                    self._warn(str(exc))
        return False

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = self.url.hostname or "localhost", self.url.port
            if self.url.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.certificate)
                self._conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ctx)
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            log.warning("OTLP span export to %s failed: %s (spans in that batch are dropped)", self.url.geturl(), why)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export what is queued now, on the caller's thread; False if a POST failed."""
        return self._drain()

    def shutdown(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=self.timeout + 5)
        self._drain()
