"""The audit log: hash-chained JSON Lines events, delivered at least once to every sink.

``AuditLog.emit(event_type, **fields)`` is synchronous and never waits on I/O: it seals
the record (event id, time, ``prev_hash``, ``hash``) and appends it to one in-memory
queue per sink; a task per sink drains its queue in batches, at most every ``linger``
seconds. A record leaves a queue
only after its sink accepted it, so a dead sink or a full disk keeps records (and
retries with backoff) instead of dropping them, and says so loudly: ``health()``
fails, ``triplock.audit.sink.up`` drops to 0, ``triplock.audit.sink.errors`` counts,
and the log says what is wrong and how many records are waiting. A retried batch may
be delivered twice (at least once): consumers deduplicate on ``event_id``.

Chain: ``hash = sha256(canonical JSON of the record without "hash")``, where the
record includes ``prev_hash`` (the previous record's ``hash``; 64 zeros for the first
record ever). Canonical JSON is orjson with sorted keys. :func:`verify_lines` checks a
chain and names the first broken record.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gateway.ports.audit_sink import AuditSink

log = logging.getLogger("triplock.audit")

GENESIS = "0" * 64
_MAX_BATCH = 512


class EventType:
    """Event types: seed 000 section 6.6's families where one fits, ``triplock.*`` otherwise."""

    CALL_REQUESTED = "connector.call.requested"  # a tools/call was decided (allow, hold or deny)
    CALL_COMPLETED = "connector.call.completed"  # ... and how it ended
    AGENT_LIFECYCLE = "agent.lifecycle"  # action: suspended | resumed
    APPROVAL_REQUESTED = "triplock.approval.requested"
    APPROVAL_GRANTED = "triplock.approval.granted"
    APPROVAL_DENIED = "triplock.approval.denied"
    APPROVAL_EXPIRED = "triplock.approval.expired"
    APPROVAL_EXECUTED = "triplock.approval.executed"
    TOOL_DEFINITION_CHANGED = "triplock.tool.definition_changed"  # pin mismatch seen on a call
    PIN_UPDATED = "triplock.pin.updated"  # a changed definition was re-approved and re-pinned
    CONFIG_RELOADED = "triplock.config.reloaded"
    UPSTREAM_ADDED = "triplock.upstream.added"
    UPSTREAM_REQUEST = "triplock.upstream.request"  # an upstream's request to a client: relayed or refused


def _jsonable(value: Any) -> Any:
    # Sets (legs, groups) have no JSON form: sorted lists keep records deterministic.
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)
    raise TypeError(f"not JSON-serialisable in an audit event: {type(value).__name__}")


# The fields _seal adds to every record (and "hash" last, outside the hashed body).
STAMP_KEYS = ("event_id", "prev_hash", "time", "type")

# An event's fields, or a function that builds them when the event is sealed (emit_deferred).
Fields = dict[str, Any] | Callable[[], dict[str, Any]]
# An event waiting to be sealed: type, fields, time, orjson options for its canonical body.
_Queued = tuple[str, Fields, float, int]
_SORTED = orjson.OPT_SORT_KEYS


_HEX2 = tuple(f"{i:02x}" for i in range(256))


class _EventIds:
    """Unique, time-ordered ids: 48-bit milliseconds then 80 bits, random per ms and incremented within it.

    The random part only has to make ids from different processes distinct (they are not
    secrets), so it comes from a generator seeded once from the OS: reading ``os.urandom``
    every millisecond was a system call on most records under load. Its first 72 bits change
    only every 256 ids, so they are formatted with the millisecond and the last 8 come from
    a table (formatting all 80 bits per record was ~0.5 µs).
    """

    def __init__(self) -> None:
        self._ms = 0
        self._high = 0  # the first 72 of the 80 bits
        self._low = 0  # the last 8
        self._prefix = ""  # "evt_", the milliseconds and _high, in hex
        self._random = random.Random(os.urandom(16))

    def next(self, ms: int) -> str:
        """The next id for a record stamped at ``ms`` (milliseconds since the epoch)."""
        if ms > self._ms:
            rand = self._random.getrandbits(79)  # one bit of headroom for increments
            self._ms, self._high, self._low = ms, rand >> 8, rand & 0xFF
            self._prefix = f"evt_{ms:012x}{self._high:018x}"
        elif self._low < 0xFF:  # same millisecond (or the clock stepped back): stay ordered
            self._low += 1
        else:
            self._high, self._low = self._high + 1, 0
            self._prefix = f"evt_{self._ms:012x}{self._high:018x}"
        return self._prefix + _HEX2[self._low]


class _Worker:
    """One sink's queue and the task that drains it."""

    def __init__(self, sink: AuditSink, log_owner: AuditLog) -> None:
        self.sink = sink
        self.owner = log_owner
        self.queue: collections.deque[bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.ok = True
        self.last_error = ""
        self.task: asyncio.Task[None] | None = None
        self._last_loud = 0.0

    def put(self, lines: list[bytes]) -> None:
        self.queue.extend(lines)
        self.idle.clear()
        self.wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            if not self.queue:
                self.idle.set()
                self.wake.clear()
                await self.wake.wait()
            if len(self.queue) < _MAX_BATCH:
                # Let a batch build up, also under steady load (when the queue never empties): the
                # file sink's thread hop costs far more than a record (measured ~25 us per call
                # when it hopped for every few records), so hop at most 1/linger times a second.
                await asyncio.sleep(self.owner.linger)
            batch = [self.queue[i] for i in range(min(len(self.queue), _MAX_BATCH))]
            try:
                await self.sink.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _ in batch:  # only now: a record leaves the queue once its sink has it
                self.queue.popleft()
            backoff = 0.1
            self.owner.metrics_delivered(self.sink.name, len(batch))
            if not self.ok:
                self.ok = True
                log.warning("audit sink %s recovered; delivered the held records", self.sink.name)

    def _failed(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.owner.metrics_failed(self.sink.name)
        now = time.monotonic()
        if self.ok or now - self._last_loud > 30:
            self._last_loud = now
            log.error("audit sink %s is failing (%s): %d records held in memory, retrying; nothing is dropped",
                      self.sink.name, self.last_error, len(self.queue))
        self.ok = False
        self.owner.check_backlog()


class AuditLog:
    """Seals events into the hash chain and hands them to the sinks' workers."""

    def __init__(self, sinks: Iterable[AuditSink], *, metrics: Any = None, backlog_alert: int = 100_000,
                 clock: Callable[[], float] = time.time, linger: float = 0.05) -> None:
        self.metrics = metrics
        self.linger = linger
        self.backlog_alert = backlog_alert
        self._clock = clock
        self._ids = _EventIds()
        self._prev = GENESIS
        self._second, self._second_text = -1, ""  # strftime once a second ...
        self._ms, self._time_text = -1, ""  # ... and the "time" field once a millisecond
        self._started = False
        self._early: list[_Queued] = []
        self._unsealed: collections.deque[_Queued] = collections.deque()
        self._seal_scheduled = False
        self._listeners: list[tuple[Callable[[dict[str, Any]], None], frozenset[str] | None]] = []
        self._seal_all = False  # a listener for every event type: seal records even with no sinks
        self._listened: frozenset[str] = frozenset()  # the types typed listeners want
        self.workers = [_Worker(s, self) for s in sinks]
        self._alerted = False
        if metrics is not None:
            for w in self.workers:
                metrics.audit_sink(w.sink.name, w.queue.__len__, lambda w=w: w.ok)

    @property
    def enabled(self) -> bool:
        """True when records are sealed: there is a sink, or a listener for every event type."""
        return bool(self.workers) or self._seal_all

    def listen(self, listener: Callable[[dict[str, Any]], None], types: Iterable[str] | None = None) -> None:
        """Call ``listener(record)`` for each event, or only for those of ``types``.

        A typed listener does not make the log seal anything: with no sinks it gets the
        event's fields and ``type`` unsealed, so (say) the approval metrics cost nothing on
        calls that are not approval events. A listener for every type gets sealed records.
        """
        wanted = frozenset(types) if types is not None else None
        self._listeners.append((listener, wanted))
        if wanted is None:
            self._seal_all = True
        else:
            self._listened |= wanted

    async def start(self) -> None:
        """Continue the chain from the first sink that knows its tail, then start delivering."""
        for w in self.workers:
            try:
                tail = await w.sink.tail_hash()
            except Exception as exc:
                log.error("audit sink %s: cannot read its last record (%s); chain continues from genesis",
                          w.sink.name, exc)
                tail = None
            if tail:
                self._prev = tail
                break
        self._started = True
        self._unsealed.extend(self._early)
        self._early.clear()
        self.seal_pending()
        for w in self.workers:
            w.task = asyncio.create_task(w.run(), name=f"audit-sink:{w.sink.name}")

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any] | None:
        """Record one event (None values are left out); returns the sealed record (None before ``start``)."""
        if self._queue(event_type, {k: v for k, v in fields.items() if v is not None}, _SORTED):
            return self.seal_pending()  # now, after whatever was queued before it
        return None

    def emit_fields(self, event_type: str, fields: dict[str, Any]) -> None:
        """The hot path's :meth:`emit`: ``fields`` is handed over (not copied) and holds no None values.

        The record is sealed at the end of the event loop's current iteration, together with
        the others emitted in it: nothing waits for I/O in between, so no record can be lost
        that would not also be lost from the sinks' in-memory queues. Sealing a record takes
        tens of µs, so records are not held back for a bigger batch: sealing 50 ms worth at
        once measured no cheaper and stalled the loop for milliseconds (p99 at 1 connection
        +1.8 ms instead of +1.1 ms).
        """
        self._emit(event_type, fields, False)

    def emit_deferred(self, event_type: str, build: Callable[[], dict[str, Any]], keys_sorted: bool = False) -> None:
        """:meth:`emit_fields`, with the fields built by ``build()`` when the record is sealed.

        Why: the sealing pass runs the records of one loop iteration back to back, where
        building a call's fields (and hashing its arguments) measured ~10 µs per call cheaper
        in the loaded gateway than the same work done inline between the steps of a request
        (its code and data are still in the CPU's caches). The time stamp is still taken now.
        ``build`` must read only what no longer changes, and must not raise.

        ``keys_sorted=True`` promises that the built fields already hold :data:`STAMP_KEYS`
        (any value) and that all keys are in sorted order, so the canonical body is dumped as
        it is (sorting ~27 keys was ~1.2 µs of the ~20 µs a record costs). A broken promise
        breaks the chain, which every test that verifies a log would catch.
        """
        self._emit(event_type, build, keys_sorted)

    def _emit(self, event_type: str, fields: Fields, keys_sorted: bool) -> None:
        if self._queue(event_type, fields, 0 if keys_sorted else _SORTED) and not self._seal_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.seal_pending)
            except RuntimeError:  # no loop (a synchronous caller): seal at once
                self.seal_pending()
                return
            self._seal_scheduled = True

    def _queue(self, event_type: str, fields: Fields, option: int) -> bool:
        """Queue one event for sealing; False when there is nothing to seal now (disabled, or before start)."""
        if not self.workers and not self._seal_all:
            if event_type in self._listened:  # nothing to seal: tell the typed listeners only
                self._tell({**(fields if isinstance(fields, dict) else fields()), "type": event_type})
            return False
        now = self._clock()
        if not self._started:
            self._early.append((event_type, fields, now, option))
            return False
        self._unsealed.append((event_type, fields, now, option))
        return True

    def seal_pending(self) -> dict[str, Any] | None:
        """Seal what is queued, in order, and hand it to the sinks; returns the last record sealed."""
        self._seal_scheduled = False
        record = None
        unsealed = self._unsealed
        if not unsealed:
            return None
        lines: list[bytes] = []
        seal = self._seal
        while unsealed:
            event_type, fields, now, option = unsealed.popleft()
            record = seal(event_type, fields, now, option, lines)
        for w in self.workers:
            w.put(lines)
        return record

    def _seal(self, event_type: str, fields: Fields, now: float, option: int, lines: list[bytes]) -> dict[str, Any]:
        """Stamp and chain one record; its JSON line goes on ``lines`` (for the sinks)."""
        ms = int(now * 1000)
        if ms != self._ms:  # several records share a millisecond under load: format its time once
            self._ms = ms
            secs, millis = divmod(ms, 1000)
            if secs != self._second:
                self._second, self._second_text = secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
            self._time_text = f"{self._second_text}.{millis:03d}Z"
        record = fields if isinstance(fields, dict) else fields()
        record["event_id"] = self._ids.next(ms)
        record["time"] = self._time_text
        record["type"] = event_type
        record["prev_hash"] = self._prev
        body = orjson.dumps(record, default=_jsonable, option=option)
        digest = hashlib.sha256(body).hexdigest()
        record["hash"] = self._prev = digest
        lines.append(b"".join((body[:-1], b',"hash":"', digest.encode(), b'"}\n')))
        if self._seal_all or event_type in self._listened:
            self._tell(record)
        return record

    def _tell(self, record: dict[str, Any]) -> None:
        for listener, types in self._listeners:
            if types is None or record["type"] in types:
                listener(record)

    def check_backlog(self) -> None:
        """Log (once per episode) when undelivered records pass the alert threshold; sinks call it on failure."""
        if not self._alerted and self.backlog() > self.backlog_alert:
            self._alerted = True
            log.critical("audit backlog is over %d records: a sink has been failing for a while (see health)",
                         self.backlog_alert)

    def backlog(self) -> int:
        return max((len(w.queue) for w in self.workers), default=0)

    def health(self) -> dict[str, Any]:
        """``ok`` is False while any sink fails or the backlog is over the alert threshold."""
        sinks = {w.sink.name: {"ok": w.ok, "backlog": len(w.queue), "last_error": w.last_error or None}
                 for w in self.workers}
        backlog = self.backlog()
        if backlog <= self.backlog_alert:
            self._alerted = False
        return {"ok": all(w.ok for w in self.workers) and backlog <= self.backlog_alert,
                "backlog": backlog, "sinks": sinks}

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every sink has every record; False on timeout (records stay queued)."""
        self.seal_pending()
        try:
            async with asyncio.timeout(timeout):
                for w in self.workers:
                    await w.idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop. Undeliverable records go to stderr rather than vanish."""
        self.seal_pending()
        delivered = await self.flush(timeout) if self._started else False
        for w in self.workers:
            if w.task is not None:
                w.task.cancel()
        for w in self.workers:
            if w.queue and not delivered:
                log.critical("audit sink %s: %d records could not be delivered before shutdown; "
                             "writing them to stderr", w.sink.name, len(w.queue))
                for line in w.queue:
                    os.write(2, line)
            try:
                await w.sink.aclose()
            except Exception as exc:
                log.warning("audit sink %s did not close cleanly: %s", w.sink.name, exc)

    def metrics_delivered(self, sink: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.audit_delivered(sink, n)

    def metrics_failed(self, sink: str) -> None:
        if self.metrics is not None:
            self.metrics.audit_failed(sink)


__all__ = ["GENESIS", "STAMP_KEYS", "AuditLog", "AuditSink", "EventType"]
