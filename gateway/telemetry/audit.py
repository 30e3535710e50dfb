"""The audit log: hash-chained JSON Lines events, delivered at least once to every sink.

``AuditLog.emit(event_type, **fields)`` is synchronous and never waits on I/O: it seals
the record (event id, time, ``prev_hash``, ``hash``) and appends it to one in-memory
queue per sink; a task per sink drains its queue in batches
(:mod:`gateway.telemetry.audit_delivery`). A record leaves a queue only after its sink
accepted it, so a dead sink or a full disk keeps records (and retries with backoff)
instead of dropping them, and says so loudly: ``health()`` fails,
``triplock.audit.sink.up`` drops to 0, ``triplock.audit.sink.errors`` counts, and the log
says what is wrong and how many records are waiting. A retried batch may be delivered
twice (at least once): consumers deduplicate on ``event_id``.

Durable answers (``durable=True``, the default): :meth:`AuditLog.durable` gives the
guarded path a future that completes once every record emitted so far is written by
every sink, and the answer waits for it (group commit: the sinks write whatever was
sealed since their last write, so concurrent answers share one write). A sink that is
down makes answers wait at most ``durable_timeout``; the answer is then sent and counted
as undurable. Past ``max_backlog`` records waiting for a sink the log is ``full``: new
guarded calls are refused (fail closed) until the sink catches up.

Chain: ``hash = sha256(canonical JSON of the record without "hash")``, where the
record includes ``prev_hash`` (the previous record's ``hash``; 64 zeros for the first
record ever). Canonical JSON is orjson with sorted keys. :func:`verify_lines` checks a
chain and names the first broken record. A record whose fields cannot be built or
serialised is replaced by a ``triplock.audit.record_failed`` record (its event type and
the error's class, no content), so the rest of its batch is written and the chain holds.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gateway.ports.audit_sink import AuditSink
from gateway.telemetry.audit_delivery import DurabilityBarrier, SinkWorker
from gateway.telemetry.audit_ids import EventIds

log = logging.getLogger("triplock.audit")

GENESIS = "0" * 64


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
    PIN_UPDATED = "triplock.pin.updated"  # a definition was approved and pinned (first_use: a new tool)
    CONFIG_RELOADED = "triplock.config.reloaded"
    UPSTREAM_ADDED = "triplock.upstream.added"
    UPSTREAM_REQUEST = "triplock.upstream.request"  # an upstream's request to a client: relayed or refused
    CATALOG_COLLISION = "triplock.catalog.collision"  # a name two upstreams claim: exposed from neither
    RECORD_FAILED = "triplock.audit.record_failed"  # stands in for a record that could not be built


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


class AuditLog:
    """Seals events into the hash chain and hands them to the sinks' workers."""

    def __init__(self, sinks: Iterable[AuditSink], *, metrics: Any = None, backlog_alert: int = 100_000,
                 clock: Callable[[], float] = time.time, linger: float = 0.05, durable: bool = True,
                 durable_timeout: float = 5.0, max_backlog: int = 200_000) -> None:
        self.metrics = metrics
        self.durable_answers = durable
        # Durable answers wait for the write, so nothing lingers: a batch is what was sealed meanwhile.
        self.linger = 0.0 if durable else linger
        self.backlog_alert = backlog_alert
        self.max_backlog = max_backlog
        self.full = False  # a sink holds max_backlog records: guarded calls are refused (AuditObserver)
        self.undurable_answers = 0  # answers sent before their records were written (durable_timeout)
        self.refused_calls = 0  # guarded calls refused while the log was full
        self._queued = 0  # records queued for the sinks so far: a durability ticket
        self._barrier = DurabilityBarrier(durable_timeout, self._undurable)
        self._last_loud = {"undurable": 0.0, "refused": 0.0}
        self._clock = clock
        self._ids = EventIds()
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
        self.workers = [SinkWorker(s, self) for s in sinks]
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
                last_id = getattr(w.sink, "tail_event_id", None)
                if isinstance(last_id, str):
                    # ids of this process come after the tail's, even within the previous process's last millisecond
                    self._ids.start_after(last_id)
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
        the others emitted in it: nothing waits for I/O in between (and a durable answer waits
        for :meth:`durable`, which counts the record from the moment it is queued). Sealing a record takes
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
        ``build`` must read only what no longer changes. If it raises, a
        ``triplock.audit.record_failed`` record takes its place (the others sealed with it are kept).

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
                try:
                    built = fields if isinstance(fields, dict) else fields()
                except Exception as exc:
                    built = self._failure(event_type, exc)
                self._tell({**built, "type": event_type})
            return False
        now = self._clock()
        self._queued += 1
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
            try:
                record = seal(event_type, fields, now, option, lines)
            except Exception as exc:  # one bad record must not take its batch with it
                record = seal(EventType.RECORD_FAILED, self._failure(event_type, exc), now, _SORTED, lines)
        max_backlog = self.max_backlog
        for w in self.workers:
            w.put(lines)
            if len(w.queue) >= max_backlog and not self.full:
                self.full = True
                log.critical("audit sink %s holds %d undelivered records (audit.max_backlog): refusing guarded "
                             "calls until it catches up", w.sink.name, len(w.queue))
        return record

    @staticmethod
    def _failure(event_type: str, exc: Exception) -> dict[str, Any]:
        """The stand-in for a record that failed: which event and which error, never its content."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        # The message may quote arguments or results: only the exception's class is logged and recorded.
        log.error("audit record %s could not be built (%s%s); a %s record takes its place",
                  event_type, type(exc).__name__, where, EventType.RECORD_FAILED)
        return {"failed_type": event_type, "error": type(exc).__name__}

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
                try:
                    listener(record)
                except Exception:  # a listener's bug must not unseal a sealed record
                    log.exception("audit listener %r failed on a %s record", listener, record["type"])

    def durable(self) -> asyncio.Future[bool]:
        """A future that completes once every record emitted so far is written by every sink.

        True when written; False when ``durable_timeout`` passed first (a sink is down: the
        caller answers anyway, and the answer is counted in ``undurable_answers``). The
        guarded path awaits it after a call's record is emitted, so the answer leaves only
        after its record is in every sink (for the file sink: written to the file, which
        survives a kill -9 of the process; ``audit.fsync`` adds power loss).
        """
        return self._barrier.wait(self._queued if self.workers else 0)

    def delivered(self, worker: SinkWorker, n: int) -> None:
        """A sink wrote ``n`` more records: release the answers every sink has now written."""
        if self.metrics is not None:
            self.metrics.audit_delivered(worker.sink.name, n)
        workers = self.workers
        self._barrier.advance(worker.written if len(workers) == 1 else min(w.written for w in workers))
        if self.full and all(len(w.queue) < self.max_backlog for w in workers):
            self.full = False
            log.warning("audit backlog is below audit.max_backlog again: accepting guarded calls")

    def failed(self, worker: SinkWorker) -> None:
        """A sink's write failed (the worker retries)."""
        if self.metrics is not None:
            self.metrics.audit_failed(worker.sink.name)
        self.check_backlog()

    def refused(self) -> None:
        """Count a guarded call refused because the log is full (and say so, at most every 30 s)."""
        self.refused_calls += 1
        if self.metrics is not None:
            self.metrics.audit_refused()
        if self._loud("refused"):
            log.error("refusing guarded calls: the audit log cannot record them (%d records wait for a failing "
                      "sink, audit.max_backlog = %d); %d refused so far", self.backlog(), self.max_backlog,
                      self.refused_calls)

    def _undurable(self, n: int) -> None:
        self.undurable_answers += n
        if self.metrics is not None:
            self.metrics.audit_undurable(n)
        if self._loud("undurable"):
            failing = ", ".join(w.sink.name for w in self.workers if not w.ok) or "slow"
            log.error("%d answers were sent before their audit records were written (sink %s; waited "
                      "audit.durable_timeout = %gs); %d so far", n, failing, self._barrier.timeout,
                      self.undurable_answers)

    def _loud(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._last_loud[what] < 30:
            return False
        self._last_loud[what] = now
        return True

    def check_backlog(self) -> None:
        """Log (once per episode) when undelivered records pass the alert threshold; sinks call it on failure."""
        if not self._alerted and self.backlog() > self.backlog_alert:
            self._alerted = True
            log.critical("audit backlog is over %d records: a sink has been failing for a while (see health)",
                         self.backlog_alert)

    def backlog(self) -> int:
        return max((len(w.queue) for w in self.workers), default=0)

    def health(self) -> dict[str, Any]:
        """``ok`` is False while any sink fails, the backlog is over the alert threshold, or the log is full."""
        sinks = {w.sink.name: {"ok": w.ok, "backlog": len(w.queue), "last_error": w.last_error or None}
                 for w in self.workers}
        backlog = self.backlog()
        if backlog <= self.backlog_alert:
            self._alerted = False
        return {"ok": all(w.ok for w in self.workers) and backlog <= self.backlog_alert and not self.full,
                "backlog": backlog, "full": self.full, "max_backlog": self.max_backlog,
                "undurable_answers": self.undurable_answers, "refused_calls": self.refused_calls, "sinks": sinks}

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
        self._barrier.release_all()
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


__all__ = ["GENESIS", "STAMP_KEYS", "AuditLog", "AuditSink", "EventType"]
