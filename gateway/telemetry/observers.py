"""Pipeline observers: what one tools/call's decision and outcome put on spans, metrics and the audit log.

Both are called synchronously by :class:`gateway.guard.pipeline.GuardedPath` on the hot
path, so they only copy fields: the audit log queues, the span is a dict, metrics are
cached prometheus children. Neither ever sees tool arguments or results except as the
arguments' hash (and, on spans, only if ``telemetry.capture_content`` is on, which
:mod:`gateway.telemetry.tracing` handles).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config import Settings
from gateway.mcp.jsonrpc import INTERNAL_ERROR, ProtocolError
from gateway.ports.records import args_hash
from gateway.ports.store import Store
from gateway.telemetry.approval_metrics import DECISION_EVENTS, ApprovalMetrics, rule_label
from gateway.telemetry.audit import STAMP_KEYS, AuditLog, AuditSink, EventType
from gateway.telemetry.tracing import Telemetry, setup_telemetry
from policy import Decision, Leg, Legs

if TYPE_CHECKING:
    from gateway.guard.record import CallRecord
    from gateway.ports.store import PendingApproval

_ALL = frozenset(Leg)
_LEGS_TEXT: dict[frozenset[Leg], str] = {}


def _legs(legs: frozenset[Leg]) -> str:
    """``Legs.format`` memoised: there are only eight leg sets, and this runs several times per call."""
    text = _LEGS_TEXT.get(legs)
    if text is None:
        text = _LEGS_TEXT[legs] = Legs.format(legs)
    return text
_RESOLVED = {"approved": "granted", "denied": "denied", "expired": "expired"}
# The outcome of a guarded call refused because the audit log could not record it (nothing ran).
AUDIT_FULL = "refused_audit_full"
AUDIT_FULL_MESSAGE = ("Refused: the audit log cannot record this call right now (an audit sink is failing and its "
                      "backlog is full), so it was not run (failing closed). Try again later.")
# What _completed adds to _fields: the outcome, and the audit log's stamps (placeholders until sealed).
_OUTCOME_KEYS = ("duration_ms", "is_error", "outcome", *STAMP_KEYS)


def _duration_ms(record: CallRecord) -> float:
    # Whole µs, in ms: round(x, 3) costs ~0.8 µs per call (it goes through decimal conversion).
    return int((time.perf_counter() - record.started) * 1_000_000) / 1000


class TelemetryObserver:
    """Decision attributes on the request's SERVER span, plus decision, hold and trifecta metrics."""

    def __init__(self, telemetry: Telemetry, approvals: ApprovalMetrics | None = None) -> None:
        self.telemetry = telemetry
        self.metrics = telemetry.metrics
        self.approvals = approvals or ApprovalMetrics(telemetry.metrics)
        self.waiting = telemetry.metrics.waiting  # the held calls being answered: the holds.waiting gauge

    def decided(self, record: CallRecord) -> None:
        d = record.decision
        if d is None:
            return
        self.metrics.decision(d.effect, d.category or "", d.mode)
        if d.enforced_effect == "hold":  # the one check allowed calls pay
            self.waiting.add(id(record))
        if not self.telemetry.tracing:
            return
        span = self.telemetry.current()
        if span is not None and span.sampled:
            a = span.attrs
            a["triplock.decision"] = d.effect
            if d.mode != "enforce":  # monitor mode: what was decided is not what was done
                a["triplock.mode"], a["triplock.decision.enforced"] = d.mode, d.enforced_effect
            a["triplock.legs.before"] = _legs(d.legs_before)
            a["triplock.legs.after"] = _legs(d.legs_after)
            if d.category:
                a["triplock.category"] = d.category
            a["triplock.rule_ids"] = d.rule_ids
            a["triplock.policy.revision"] = d.policy_revision
            a["triplock.upstream"] = record.call.upstream
            if d.trifecta:
                a["triplock.trifecta"] = True
            if d.first_use:
                a["triplock.first_use"] = True
            if d.pin_changed:
                a["triplock.pin_changed"] = True

    def finished(self, record: CallRecord) -> None:
        d = record.decision
        approval = record.approval
        if self.waiting and id(record) in self.waiting:
            self.waiting.discard(id(record))
            if approval is not None:
                self._held(record, approval)
        legs = record.legs_after or (d.legs_after if d is not None else frozenset())
        if legs >= _ALL:
            self.metrics.trifecta_reached(record.ctx.session_key)
        if not self.telemetry.tracing:
            return
        span = self.telemetry.current()
        if span is not None and span.sampled:
            a = span.attrs
            a["triplock.outcome"] = record.outcome
            if record.legs_after:
                a["triplock.legs.after"] = _legs(record.legs_after)
            if approval is not None:
                a["triplock.approval.id"] = approval.id
            if record.hold_waited:
                a["triplock.hold.wait_s"] = round(record.hold_waited, 3)
            if record.args_hash:
                a["triplock.args.sha256"] = record.args_hash

    def _held(self, record: CallRecord, approval: PendingApproval) -> None:
        """A held call answered, whatever its outcome: count its hold if it created the approval, and the
        decision it saw if nobody else records that (see :mod:`gateway.telemetry.approval_metrics`)."""
        if AuditObserver._new(approval.created_at, record):
            self.metrics.hold(record.exposed, approval.category or "", rule_label(approval.rule_ids))
        if approval.state in _RESOLVED and approval.decided_at is not None and self.approvals.records_in_band(
                approval):
            self.approvals.resolved(approval)


class AuditObserver:
    """Audit events for each tools/call, as few as keep the record complete.

    A call that is decided and answered without waiting (allow, deny) gets one
    ``connector.call.completed`` event carrying the whole decision and the outcome: a
    ``connector.call.requested`` written just before it would be no more durable (both
    sit in the same in-memory queue while the upstream works) and would double the audit
    cost per call (measured: ~50 µs per event on the benchmark machine). A held call gets
    ``connector.call.requested`` at once, because its completion may be hours away, plus
    ``triplock.approval.requested``/``executed``. ``every_request=True`` writes the
    requested event for every call. Decisions made elsewhere (an approver, a suspension,
    a reload) are emitted by that code through :meth:`AuditLog.emit`.

    Fail closed: while the audit log is ``full`` (a sink is down and its backlog reached
    ``audit.max_backlog``), :meth:`decided` refuses the call before anything runs (a JSON-RPC
    error; the call gets no record, it is counted in the log's ``refused_calls``).
    :meth:`durable` is the guarded path's ``after_record``: the answer waits until the call's
    record is written by every sink.
    """

    def __init__(self, audit: AuditLog, every_request: bool = False) -> None:
        self.audit = audit
        self.every_request = every_request

    @staticmethod
    def _fields(record: CallRecord) -> dict[str, Any]:
        """The call's fields without its outcome, for the events other than an immediate completion.

        The same fields as :meth:`_completed`, which lists them (these paths are rare: holds,
        pin changes); ``legs_after`` is the decision's, not what the result taught.
        """
        d = record.decision
        assert d is not None
        fields = AuditObserver._completed(record, d, 0.0)
        for key in _OUTCOME_KEYS:
            del fields[key]
        fields["legs_after"] = _legs(d.legs_after)
        return fields

    def decided(self, record: CallRecord) -> None:
        d = record.decision
        if d is None or not self.audit.enabled:
            return
        if self.audit.full:
            record.outcome = AUDIT_FULL
            self.audit.refused()
            raise ProtocolError(INTERNAL_ERROR, AUDIT_FULL_MESSAGE)
        if d.pin_changed:
            profile = record.profile
            fields = self._fields(record)
            if profile is not None:
                fields["definition_hash"] = profile.definition_hash
            self.audit.emit_fields(EventType.TOOL_DEFINITION_CHANGED, fields)
        if self.every_request or d.enforced_effect == "hold":
            self.audit.emit_fields(EventType.CALL_REQUESTED, self._fields(record))

    def finished(self, record: CallRecord) -> None:
        d = record.decision
        if d is None or not self.audit.enabled or record.outcome == AUDIT_FULL:
            return
        approval = record.approval
        if approval is None and not record.hold_waited:  # allowed or denied at once: the hot path
            duration = _duration_ms(record)
            self.audit.emit_deferred(EventType.CALL_COMPLETED, lambda: self._completed(record, d, duration),
                                     keys_sorted=True)
            return
        fields = self._fields(record)
        if approval is not None:
            fields["approval_id"] = approval.id
            if record.outcome in ("held", "pending") and self._new(approval.created_at, record):
                self.audit.emit_fields(EventType.APPROVAL_REQUESTED, {**fields, "expires_at": approval.expires_at})
            if record.outcome == "executed":
                self.audit.emit_fields(EventType.APPROVAL_EXECUTED, dict(fields))
        if record.legs_after:
            fields["legs_after"] = _legs(record.legs_after)
        fields["outcome"] = record.outcome
        fields["is_error"] = record.is_error
        if record.hold_waited:
            fields["hold_waited_s"] = round(record.hold_waited, 3)
        fields["duration_ms"] = _duration_ms(record)
        self.audit.emit_fields(EventType.CALL_COMPLETED, fields)  # fields is ours: no copy

    def durable(self, record: CallRecord) -> Awaitable[bool]:
        """What the answer to ``record``'s call waits for: its audit record written by every sink.

        A plain function returning the log's future (no coroutine per call). A call that
        recorded nothing (refused, or failed before its decision) does not wait.
        """
        if record.decision is None or record.outcome == AUDIT_FULL:
            return _NOTHING_TO_WAIT_FOR
        return self.audit.durable()

    @staticmethod
    def _completed(record: CallRecord, d: Decision, duration_ms: float) -> dict[str, Any]:
        """``connector.call.completed`` of a call that waited on no approval: :meth:`_fields` plus the outcome.

        Built when the record is sealed (:meth:`AuditLog.emit_deferred`): the call is over,
        so nothing it reads changes any more.

        One literal with every key in sorted order, the audit log's stamp keys
        (:data:`gateway.telemetry.audit.STAMP_KEYS`) included, so the dict is sized once and the log
        need not sort it (``keys_sorted``). The one list of a call's audit fields:
        :meth:`_fields` is derived from it.
        """
        call = record.call
        if not record.args_hash:
            record.args_hash = args_hash(call.arguments)
        fields = {
            "agent": call.agent,
            "args_hash": record.args_hash,
            "category": d.category,
            "decision": d.effect,
            "duration_ms": duration_ms,
            "enforced": d.enforced_effect,
            "event_id": "",
            "exposed_tool": record.exposed,
            "first_use": d.first_use,
            "is_error": record.is_error,
            "legs_after": _legs(record.legs_after or d.legs_after),
            "legs_before": _legs(d.legs_before),
            "method": record.method,
            "mode": d.mode,
            "outcome": record.outcome,
            "pin_changed": d.pin_changed,
            "policy_revision": d.policy_revision,
            "prev_hash": "",
            "principal": call.principal,
            "protocol_version": record.ctx.protocol_version,
            "reasons": d.reasons,
            "rule_ids": d.rule_ids,
            "session": call.session_id,
            "time": "",
            "tool": call.tool,
            "trifecta": d.trifecta,
            "type": "",
            "upstream": call.upstream,
        }
        if call.agent is None:  # (deleting keeps the others in order)
            del fields["agent"]
        if d.category is None:
            del fields["category"]
        return fields

    @staticmethod
    def _new(created_at: float, record: CallRecord) -> bool:
        """True when the approval was created during this call (not an existing one being repeated)."""
        call_began = time.time() - (time.perf_counter() - record.started)
        return created_at >= call_began - 0.001


class _Written:
    """An awaitable that is already done: a call with no record to wait for."""

    def __await__(self) -> Any:
        return True
        yield  # a generator, so ``await`` works; never reached


_NOTHING_TO_WAIT_FOR = _Written()


@dataclass
class Observability:
    """Telemetry, metrics and the audit log of one gateway, built from settings (see app.py wiring)."""

    telemetry: Telemetry
    audit: AuditLog

    def __post_init__(self) -> None:
        self.audit_observer = AuditObserver(self.audit)
        self.approval_metrics = ApprovalMetrics(self.telemetry.metrics)
        if self.telemetry.metrics.enabled:
            self.audit.listen(self.approval_metrics.listen, DECISION_EVENTS)

    def watch_approvals(self, store: Store) -> None:
        """Hold metrics from the state store calls are held in: the pending gauge (read at each scrape) and
        every decision's latency, whichever process waited (see :mod:`gateway.telemetry.approval_metrics`)."""
        self.approval_metrics.watch(store)

    @property
    def observers(self) -> list[Any]:
        """The pipeline's CallObservers."""
        return [TelemetryObserver(self.telemetry, self.approval_metrics), self.audit_observer]

    @property
    def after_record(self) -> Callable[[CallRecord], Awaitable[object]] | None:
        """The guarded path's wait for a call's audit record (None: audit off or ``audit.durable = false``)."""
        audit = self.audit
        return self.audit_observer.durable if audit.workers and audit.durable_answers else None

    async def startup(self) -> None:
        self.telemetry.start()
        await self.audit.start()
        pusher = self.telemetry.pusher  # an OTLP push reads the gauges a scrape would have refreshed
        self.approval_metrics.start(pusher.interval if pusher is not None else None)

    async def shutdown(self) -> None:
        await self.approval_metrics.stop()
        await self.audit.aclose()
        self.telemetry.shutdown()


def build_observability(settings: Settings, sinks: Iterable[AuditSink]) -> Observability:
    """Telemetry from ``[telemetry]`` + OTEL_* env; the audit log writing to ``sinks`` (built by the app)."""
    telemetry = setup_telemetry(settings.telemetry)
    cfg = settings.audit
    audit = AuditLog(sinks, metrics=telemetry.metrics, backlog_alert=cfg.backlog_alert, durable=cfg.durable,
                     durable_timeout=cfg.durable_timeout, max_backlog=cfg.max_backlog)
    return Observability(telemetry, audit)


__all__ = ["AuditObserver", "Observability", "TelemetryObserver", "build_observability"]
