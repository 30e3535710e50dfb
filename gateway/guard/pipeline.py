"""The ``tools/call`` pipeline: resolve → state → decide → (hold) → forward → learn → record.

Each step is a method with one job; :class:`CallObserver` hooks (audit, telemetry)
see every decision and outcome without the pipeline knowing what they do.
At most one store round trip on the allow path (``call_state``); legs, first use
and pins are written after the upstream answered, and only when they changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.guard.hold import Approvals, args_hash
from gateway.guard.policy_runtime import PolicyRuntime
from gateway.guard.state_cache import CallStateCache
from gateway.identity.roles import AccessPolicy
from gateway.mcp.catalog import CatalogEntry
from gateway.mcp.context import RequestContext
from gateway.mcp.jsonrpc import INVALID_PARAMS, ProtocolError
from gateway.mcp.router import Dispatcher, tool_error
from gateway.ports.store import PendingApproval, Store, StoreUnavailable
from gateway.ports.upstream import UpstreamError
from policy import CallState, Decision, Leg, ToolCall, ToolProfile

log = logging.getLogger("triplock.pipeline")


@dataclass
class CallRecord:
    """Everything known about one tools/call, handed to observers as it progresses."""

    ctx: RequestContext
    exposed: str
    call: ToolCall
    profile: ToolProfile | None = None
    decision: Decision | None = None
    args_hash: str = ""
    approval: PendingApproval | None = None
    outcome: str = ""  # allowed, held, denied, approved, executed, error, pending
    is_error: bool = False
    legs_after: frozenset[Leg] = frozenset()
    started: float = field(default_factory=time.perf_counter)
    hold_waited: float = 0.0
    progress_token: Any = None


_LEGS: dict[frozenset[str], frozenset[Leg]] = {}


def _legs_of(names: frozenset[str]) -> frozenset[Leg]:
    """Stored leg names as Legs, memoised (eight possible sets; an unknown name raises, so none is kept)."""
    legs = _LEGS.get(names)
    if legs is None:
        legs = _LEGS[names] = frozenset(Leg(x) for x in names)
    return legs


class CallObserver(Protocol):
    """Audit and telemetry hook into the pipeline."""

    def decided(self, record: CallRecord) -> None: ...

    def finished(self, record: CallRecord) -> None: ...


class ToolCallPipeline:
    """Runs one ``tools/call`` from request to result."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        policy: PolicyRuntime,
        store: Store,
        approvals: Approvals,
        observers: list[CallObserver] | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        self.access = access
        self.dispatcher = dispatcher
        self.policy = policy
        self.store = store
        # legs are cached only when scoped to a session (one process owns it); see state_cache
        self.state = CallStateCache(store, cache_legs=policy.policy.legs_scope == "session")
        self.approvals = approvals
        self.observers = observers or []

    async def __call__(self, ctx: RequestContext, msg: dict[str, Any]) -> dict[str, Any]:
        params = msg.get("params") or {}
        name = params.get("name")
        arguments = params.get("arguments")
        if not isinstance(name, str):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: tool 'name' must be a string")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: 'arguments' must be an object")
        entry = self.dispatcher.pool.catalog.tools.get(name)
        if entry is not None and self.access is not None and not self.access.may_call(ctx, entry.upstream, entry.name):
            entry = None  # never reveal a tool the caller may not call
        if entry is None:
            down = self.dispatcher.down_upstream_for(name)
            if down is not None:
                return tool_error(f"Upstream {down!r} is unavailable; tool {name!r} cannot be called now.")
            raise ProtocolError(INVALID_PARAMS, f"Unknown tool: {name}")
        call = ToolCall(ctx.principal, ctx.agent, ctx.groups, ctx.session_key, entry.upstream, entry.name, arguments)
        record = CallRecord(ctx, name, call)
        meta = params.get("_meta")
        if isinstance(meta, dict):
            record.progress_token = meta.get("progressToken")
        try:
            return await self._run(record, entry, msg)
        finally:
            for obs in self.observers:
                obs.finished(record)

    async def _run(self, record: CallRecord, entry: CatalogEntry, msg: dict[str, Any]) -> dict[str, Any]:
        policy = self.policy.policy
        call = record.call
        profile = record.profile = self.policy.profile(entry.upstream, entry.definition)
        legs_key = self._legs_key(call)
        first_use_key = self._first_use_key(call)
        store_ok = True
        try:
            st = await self.state.call_state(legs_key, first_use_key, call.upstream, call.tool)
            state = CallState(_legs_of(st.legs), st.tool_used_before, st.pinned_hash, self.store.suspended(), True)
        except StoreUnavailable as exc:
            log.error("state store unavailable (%s): failing closed for writes and holds", exc)
            store_ok = False
            state = CallState(store_ok=False, suspended=self._last_known_suspensions())
        decision = record.decision = policy.decide(call, profile, state)
        for obs in self.observers:
            obs.decided(record)
        effect = decision.enforced_effect
        if effect == "deny":
            record.outcome = "denied"
            return tool_error(
                "Denied by policy: " + "; ".join(decision.reasons),
                {"triplock/decision": {"effect": "deny", "rule_ids": list(decision.rule_ids)}},
            )
        if effect == "hold":
            if not store_ok:
                record.outcome = "denied"
                return tool_error(
                    "Refused: this call needs a human's approval and the approval store is "
                    "unavailable, so it cannot be held (failing closed). Try again later."
                )
            held = await self._hold(record, entry)
            if held is not None:
                return held
        else:
            record.outcome = "allowed"
        result = await self._forward(record, entry, msg)
        if store_ok and not record.is_error:
            await self._learn(record, state, result, legs_key, first_use_key)
        return result

    async def _hold(self, record: CallRecord, entry: CatalogEntry) -> dict[str, Any] | None:
        """None when the call may run now (approved); otherwise the answer to send."""
        call, decision = record.call, record.decision
        assert decision is not None
        digest = record.args_hash = args_hash(call.arguments)
        now = time.time()
        try:
            approved = await self.store.find_approved(
                call.principal, call.session_id, call.upstream, call.tool, digest, decision.policy_revision, now
            )
            if approved is not None and await self.store.consume(approved.id):
                record.approval, record.outcome = approved, "approved"
                return None
            approval = record.approval = await self.approvals.request(call, record.exposed, decision, digest, now)
            record.outcome = "held"
            decided = await self._ask_end_user(record, approval)
            if decided is None:
                decided = await self._wait(record, approval)
        except StoreUnavailable:
            record.outcome = "denied"
            return tool_error("Refused: the approval store became unavailable while holding this call (fail closed).")
        if decided is None:
            record.outcome = "pending"
            return self.approvals.pending_result(approval)
        record.approval = decided
        if decided.state == "approved" and self._suspended_meanwhile(call):
            record.outcome = "denied"
            return tool_error("Refused: the caller was suspended while this call waited for approval.")
        if decided.state == "approved" and await self.store.consume(decided.id):
            record.outcome = "approved"
            return None
        record.outcome = "denied"
        return self.approvals.denied_result(decided)

    async def _ask_end_user(self, record: CallRecord, approval: PendingApproval) -> PendingApproval | None:
        """For categories the agent's own user decides: ask through elicitation on this call's stream."""
        ctx = record.ctx
        if ctx.session is None or ctx.emit is None:
            return None
        if not self.approvals.ask_end_user(approval.category, ctx.client_capabilities):
            return None
        response = await ctx.session.ask(
            "elicitation/create",
            self.approvals.elicitation_params(approval),
            ctx.emit,
            self.approvals.settings.hold_wait,
        )
        verdict = self.approvals.elicitation_verdict(response)
        if verdict is None:
            return None  # no answer: fall back to the approvers
        approve, reason = verdict
        # The user is recorded as a distinct approver id: the store never lets a principal approve itself.
        outcome = await self.store.decide(approval.id, approve, f"end-user:{approval.principal}", reason, time.time())
        return outcome.approval

    async def _wait(self, record: CallRecord, approval: PendingApproval) -> PendingApproval | None:
        """Wait in-band up to hold_wait; progress notifications keep the client's call alive."""
        settings = self.approvals.settings
        ctx = record.ctx
        token = record.progress_token
        start = time.monotonic()
        # A task's client polls, so the hold can last as long as the approval itself.
        deadline = start + (max(0.0, approval.expires_at - time.time()) if ctx.in_task else settings.hold_wait)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                record.hold_waited = time.monotonic() - start
                return None
            decided = await self.store.wait_decided(approval.id, min(remaining, settings.progress_every))
            if decided is not None and decided.state != "pending":
                record.hold_waited = time.monotonic() - start
                return decided
            if token is not None and ctx.emit is not None:
                waited = time.monotonic() - start
                await ctx.emit(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {
                            "progressToken": token,
                            "progress": round(waited, 1),
                            "total": settings.hold_wait,
                            "message": f"Waiting for a human to approve (approval id {approval.id})",
                        },
                    }
                )

    async def _forward(self, record: CallRecord, entry: CatalogEntry, msg: dict[str, Any]) -> dict[str, Any]:
        params = msg.get("params") or {}
        forwarded = {**msg, "params": {**params, "name": entry.name}}
        try:
            reply = await self.dispatcher.forward_raw(record.ctx, entry.upstream, forwarded)
        except UpstreamError as exc:
            record.is_error = True
            return tool_error(f"Upstream {entry.upstream!r} failed ({exc.kind}): {exc.detail}")
        if "error" in reply:
            record.is_error = True
            return reply
        result = reply.get("result")
        if not isinstance(result, dict):
            record.is_error = True
            return tool_error(f"Upstream {entry.upstream!r} answered without a result object")
        record.is_error = bool(result.get("isError"))
        if record.outcome in ("approved",):
            record.outcome = "executed"
        return result

    async def _learn(
        self, record: CallRecord, state: CallState, result: dict[str, Any], legs_key: str, first_use_key: str
    ) -> None:
        """Write back what this call taught: session legs, first use, the pin. Only what changed."""
        policy = self.policy.policy
        decision, profile = record.decision, record.profile
        assert decision is not None and profile is not None
        legs = decision.legs_after | policy.inspect_result(
            profile, result, record.call.arguments, known=decision.legs_after
        )
        record.legs_after = legs
        writes: list[Awaitable[None]] = []
        if legs != state.session_legs:
            ttl = float(policy.legs_window_seconds) if policy.legs_scope == "principal" else None
            writes.append(self.state.add_legs(legs_key, frozenset(str(x) for x in legs), ttl))
        if not state.tool_used_before:
            writes.append(self.state.mark_used(first_use_key))
        if state.pinned_hash is None:
            writes.append(
                self.state.set_pin(profile.upstream, profile.tool, profile.definition_hash, record.call.principal)
            )
        if writes:
            try:
                await asyncio.gather(*writes)
            except StoreUnavailable as exc:
                log.error("could not record session state after a call: %s", exc)

    def _suspended_meanwhile(self, call: ToolCall) -> bool:
        suspended = self._last_known_suspensions()
        return f"principal:{call.principal}" in suspended or (
            call.agent is not None and f"agent:{call.agent}" in suspended
        )

    def _legs_key(self, call: ToolCall) -> str:
        if self.policy.policy.legs_scope == "principal":
            return f"legs:principal:{call.principal}"
        return f"legs:session:{call.session_id}"

    def _first_use_key(self, call: ToolCall) -> str:
        if self.policy.policy.first_use_scope == "principal_tool":
            return f"{call.principal}|{call.upstream}__{call.tool}"
        return f"{call.upstream}__{call.tool}"

    def _last_known_suspensions(self) -> frozenset[str]:
        try:
            return self.store.suspended()
        except StoreUnavailable:
            return frozenset()


__all__ = ["CallObserver", "CallRecord", "ToolCallPipeline"]
