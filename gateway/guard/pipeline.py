"""The guarded path: every client-to-upstream request, whatever its method, takes these steps.

    authorize → classify → state → decide → (hold) → forward → learn → record

``tools/call``, ``resources/read``, ``resources/(un)subscribe``, ``prompts/get`` and
``completion/complete`` all come here with a :class:`~gateway.guard.target.Target` the
router resolved; nothing else in the gateway talks to an upstream on a client's behalf
(listings are served from the catalog, filtered by the same authorization).

Each step is a method with one job; :class:`~gateway.guard.record.CallObserver` hooks
(audit, spans, metrics) see every decision and outcome. At most one store round trip on
the allow path (``call_state``, none on a warm session while nothing changed). Writes happen
only when something changed: the call's own legs before it is sent (so an error, a
cancellation or a crash once the upstream acted cannot lose them), then what its result
taught (legs from its content, an ``isError`` result's too), first use and pin. A store that
refuses a write counts as down: writes, E legs and holds fail closed until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.guard.answers import HELD_FOR_APPROVAL, refuse, tool_error
from gateway.guard.hold import Approvals
from gateway.guard.memory import MemoryKeys, SessionMemory, lacks, with_legs
from gateway.guard.policy_runtime import PolicyRuntime
from gateway.guard.record import CallObserver, CallRecord
from gateway.guard.state_cache import CallStateCache
from gateway.guard.target import LEARNS_FROM_RESULT, Target
from gateway.identity.roles import AccessPolicy
from gateway.mcp.context import RequestContext
from gateway.mcp.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, ProtocolError
from gateway.ports.store import CallStateRecord, Store, StoreUnavailable
from gateway.ports.upstream import UpstreamError
from policy import CallState, Decision, Leg, ToolCall, ToolProfile
from policy.models import NO_LEGS, Effect
from policy.provenance import untrusted_values

log = logging.getLogger("triplock.guard")

Forward = Callable[[RequestContext, str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends one message to an upstream and returns its response message (``UpstreamForwarder.forward_raw``)."""

_LEGS: dict[frozenset[str], frozenset[Leg]] = {}
_NOT_FOUND = {"tool": "Unknown tool", "prompt": "Unknown prompt", "resource": "Resource not found"}
_CANNOT_HOLD = (
    "Refused: this call needs a human's approval and the approval store is unavailable, so it cannot be "
    "held (failing closed). Try again later."
)


_NOTHING_KNOWN = CallStateRecord()


def _legs_of(names: frozenset[str]) -> frozenset[Leg]:
    """Stored leg names as Legs, memoised (eight possible sets; an unknown name raises, so none is kept)."""
    legs = _LEGS.get(names)
    if legs is None:
        legs = _LEGS[names] = frozenset(Leg(x) for x in names)
    return legs


class GuardedPath:
    """Runs one guarded request from authorization to its recorded outcome."""

    def __init__(
        self,
        forward: Forward,
        policy: PolicyRuntime,
        store: Store,
        approvals: Approvals,
        observers: list[CallObserver] | None = None,
        access: AccessPolicy | None = None,
        after_record: Callable[[CallRecord], Awaitable[object]] | None = None,
        on_state_write_failed: Callable[[], None] | None = None,
    ) -> None:
        self.forward = forward
        self.access = access
        self.policy = policy
        self.store = store
        # legs are cached only while the store says nothing changed (a principal's, a second at most)
        self.state = CallStateCache(store, cache_legs=True, on_write_failed=on_state_write_failed)
        self.memory = SessionMemory(store, self.state)
        self.approvals = approvals
        self.observers = observers or []
        # What the answer waits for once the observers recorded the call (durable audit: its record written).
        self.after_record = after_record

    # -- authorize ----------------------------------------------------------------------------
    def may_reach(self, ctx: RequestContext, kind: str, upstream: str, name: str) -> bool:
        """Whether the caller's roles let it see and use this object (listings ask the same question).

        Tools are granted one by one (``upstream:tool`` patterns); an upstream's resources and
        prompts go with access to any of its tools.
        """
        access = self.access
        if access is None:
            return True
        if kind == "tool":
            return access.may_call(ctx, upstream, name)
        return access.may_use_upstream(ctx, upstream)

    async def __call__(self, ctx: RequestContext, msg: dict[str, Any], target: Target) -> dict[str, Any]:
        """Answer one guarded request: the upstream's result, or a refusal that says why."""
        params = msg.get("params") or {}
        arguments = params.get("arguments") if target.method in ("tools/call", "prompts/get") else None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ProtocolError(INVALID_PARAMS, "Invalid params: 'arguments' must be an object")
        call = ToolCall(ctx.principal, ctx.agent, ctx.groups, ctx.session_key, target.upstream, target.name, arguments)
        record = CallRecord(ctx, target.exposed, call, method=target.method)
        meta = params.get("_meta")
        if isinstance(meta, dict):
            record.progress_token = meta.get("progressToken")
        try:
            access = self.access
            if access is not None and not (
                access.may_call(ctx, target.upstream, target.name)  # tools: inline of may_reach (hot path)
                if target.kind == "tool"
                else access.may_use_upstream(ctx, target.upstream)
            ):
                return self._unauthorized(record, target)
            return await self._run(record, target, msg)
        finally:
            for obs in self.observers:
                obs.finished(record)
            if self.after_record is not None:
                await self.after_record(record)

    def _unauthorized(self, record: CallRecord, target: Target) -> dict[str, Any]:
        """Denied by role: recorded, and answered as if the object did not exist (never reveal it)."""
        record.profile = None
        record.decision = Decision(
            "deny", NO_LEGS, NO_LEGS, None, ("access.role",),
            (f"the caller's roles grant no access to this {target.kind} of {target.upstream!r}",),
            self.policy.revision, "enforce", False, False, False,
        )
        record.outcome = "denied"
        for obs in self.observers:
            obs.decided(record)
        if target.kind == "resource":
            raise ProtocolError(-32002, f"Resource not found: {target.exposed}", {"uri": target.exposed})
        raise ProtocolError(INVALID_PARAMS, f"{_NOT_FOUND[target.kind]}: {target.exposed}")

    async def refuse_unlisted(
        self, ctx: RequestContext, msg: dict[str, Any], kind: str, exposed: str, hidden: Target | None
    ) -> None:
        """Record (audit, metrics) the refusal of a name outside the caller's catalog; the router answers it as
        unknown. ``hidden``: what action control hides behind the name (rule ids ``action_control.hidden`` and the
        policy's denying findings); None: nothing serves it (``catalog.unknown_<kind>``, upstream ``""``)."""
        args = (msg.get("params") or {}).get("arguments")
        up, name = (hidden.upstream, hidden.name) if hidden is not None else ("", exposed)
        call = ToolCall(ctx.principal, ctx.agent, ctx.groups, ctx.session_key, up, name,
                        args if isinstance(args, dict) else {})
        record = CallRecord(ctx, exposed, call, method=str(msg.get("method", "")))
        why = [(0, f"catalog.unknown_{kind}", f"no {kind} by that name in the catalog")]
        if hidden is not None:
            why = [(0, "action_control.hidden", f"action control hides this {kind} of {up!r}")]
            try:  # hidden means its strongest static finding is a deny: those say why
                plan = self._classify(hidden).plan
                why += [f for f in plan.static if f[0] == plan.static_top]
            except Exception:  # unclassifiable, which is why the catalog hid it: the hidden id alone says so
                pass
        record.decision = Decision("deny", NO_LEGS, NO_LEGS, None, tuple(f[1] for f in why),
                                   tuple(f[2] for f in why), self.policy.revision, "enforce", False, False, False)
        record.outcome = "denied"
        try:
            for obs in self.observers:
                obs.decided(record)
        finally:
            for obs in self.observers:
                obs.finished(record)
            if self.after_record is not None:
                await self.after_record(record)

    # -- classify, state, decide ----------------------------------------------------------------
    def _classify(self, target: Target) -> ToolProfile:
        runtime = self.policy
        if target.kind == "tool":
            assert target.definition is not None
            return runtime.profile(target.upstream, target.definition)
        if target.kind == "prompt":
            return runtime.prompt_profile(target.upstream, target.definition or {"name": target.name})
        return runtime.resource_profile(target.upstream, target.name)

    async def _run(self, record: CallRecord, target: Target, msg: dict[str, Any]) -> dict[str, Any]:
        policy = self.policy.policy
        call = record.call
        profile = record.profile = self._classify(target)
        session = record.ctx.session
        keys = SessionMemory.keys(policy, call.principal, session.id if session is not None else None)
        first_use_key = self._first_use_key(call)
        store_ok = True
        st = _NOTHING_KNOWN
        try:
            # A call that acts on the world (E or a write) always asks the store (a down store is noticed at
            # once) and reads the session's memory: the untrusted values it must not carry, the legs' sources.
            acts = Leg.E in profile.legs or profile.effect is not Effect.READ
            st = await self.state.call_state(keys.legs, first_use_key, call.upstream, call.tool, acts, keys.principal)
            legs = _legs_of(st.legs | st.principal_legs if st.principal_legs else st.legs)
            if acts:
                recall = await self.memory.recall(keys)
                state = CallState(
                    legs, st.tool_used_before, st.pinned_hash, self.store.suspended(), True, *recall
                )
            else:
                state = CallState(legs, st.tool_used_before, st.pinned_hash, self.store.suspended(), True)
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
            return refuse(
                target.method,
                tool_error(
                    "Denied by policy: " + "; ".join(decision.reasons),
                    {"triplock/decision": {"effect": "deny", "rule_ids": list(decision.rule_ids)}},
                ),
            )
        if effect == "hold":
            if not store_ok:
                record.outcome = "denied"
                return refuse(target.method, tool_error(_CANNOT_HOLD))
            held = await self.approvals.hold(record, self._suspended_meanwhile)
            if held is not None:
                code = HELD_FOR_APPROVAL if record.outcome == "pending" else -32010
                return refuse(target.method, held, code)
        else:
            record.outcome = "allowed"
        learns = store_ok and target.method in LEARNS_FROM_RESULT
        record.legs_after = decision.legs_after
        if learns and lacks(keys, st, decision.legs_after):
            # The call's own legs count from the moment it is sent, so they are recorded before it is:
            # an upstream error, a cancellation or a crash once the upstream acted cannot lose them.
            if await self._remember_legs(keys, st, decision.legs_after, record.exposed):
                st = with_legs(st, decision.legs_after)
            elif (refusal := self._refuse_store_down(record, target)) is not None:
                return refusal
        result, from_upstream = await self._forward(record, target, msg)
        if learns and from_upstream:
            await self._learn(record, state, st, keys, result, first_use_key, target.kind == "tool")
        return result

    def _refuse_store_down(self, record: CallRecord, target: Target) -> dict[str, Any] | None:
        """The store failed while recording the call's legs: decide again as with the store down
        (writes, E legs and holds refused; reads as ``store_unavailable_reads`` says)."""
        assert record.profile is not None
        state = CallState(store_ok=False, suspended=self._last_known_suspensions())
        down = self.policy.policy.decide(record.call, record.profile, state)
        if down.enforced_effect == "allow":
            return None
        record.decision = down
        record.outcome = "denied"
        if down.enforced_effect == "hold":
            return refuse(target.method, tool_error(_CANNOT_HOLD))
        return refuse(
            target.method,
            tool_error(
                "Denied by policy: " + "; ".join(down.reasons),
                {"triplock/decision": {"effect": "deny", "rule_ids": list(down.rule_ids)}},
            ),
        )

    # -- forward ------------------------------------------------------------------------------
    async def _forward(
        self, record: CallRecord, target: Target, msg: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """The answer for the client, and whether it is a result object the upstream sent (``isError`` too)."""
        params = msg.get("params") or {}
        forwarded = {**msg, "params": target.upstream_params(params)}
        upstream = target.upstream
        try:
            reply = await self.forward(record.ctx, upstream, forwarded)
        except UpstreamError as exc:
            record.is_error = True
            if target.method != "tools/call":
                raise ProtocolError(INTERNAL_ERROR, f"Upstream {upstream!r} failed: {exc.kind}: {exc.detail}") from None
            return tool_error(f"Upstream {upstream!r} failed ({exc.kind}): {exc.detail}"), False
        if "error" in reply:
            record.is_error = True
            return reply, False  # the upstream's JSON-RPC error, passed through by the router
        result = reply.get("result")
        if not isinstance(result, dict):
            record.is_error = True
            if target.method != "tools/call":
                raise ProtocolError(INTERNAL_ERROR, f"Upstream {upstream!r} answered without a result object")
            return tool_error(f"Upstream {upstream!r} answered without a result object"), False
        record.is_error = bool(result.get("isError"))
        if record.outcome == "approved":
            record.outcome = "executed"
        return result, True

    # -- learn --------------------------------------------------------------------------------
    async def _learn(
        self,
        record: CallRecord,
        state: CallState,
        st: CallStateRecord,
        keys: MemoryKeys,
        result: dict[str, Any],
        first_use_key: str,
        is_tool: bool,
    ) -> None:
        """Write back what the upstream's result taught: the legs its content adds (an ``isError``
        result too: its text may carry injected instructions), the values an untrusted result
        brought in, and for a tool that ran without error, its first use and pin. ``st``: the legs
        each key holds now."""
        policy = self.policy.policy
        decision, profile = record.decision, record.profile
        assert decision is not None and profile is not None
        added = policy.inspect_result(profile, result, record.call.arguments, known=decision.legs_after)
        legs = decision.legs_after | added
        record.legs_after = legs
        if not self.store.health.ok:  # it refused this call's legs just now: keep them in memory, write nothing
            self.memory.note_legs(policy, keys, legs)
            return
        writes: list[Awaitable[Any]] = []
        if lacks(keys, st, legs):
            writes.append(self.memory.remember_legs(policy, keys, st, legs, record.exposed))
        if Leg.U in decision.call_legs or Leg.U in added:
            values, saturated = untrusted_values(result, record.call.arguments, profile.plan.url_allowlist)
            if values or saturated:
                writes.append(self.memory.remember_values(policy, keys, values, saturated, record.exposed))
        if is_tool and not record.is_error and not state.tool_used_before:
            writes.append(self.state.mark_used(first_use_key))
        if is_tool and not record.is_error and state.pinned_hash is None:
            writes.append(
                self.state.set_pin(profile.upstream, profile.tool, profile.definition_hash, record.call.principal)
            )
        if writes:
            try:
                # shielded: the upstream acted, so a cancelled request still records what it taught
                await asyncio.shield(asyncio.gather(*writes))
            except StoreUnavailable as exc:
                log.error("could not record what a call taught (the store counts as down): %s", exc)

    async def _remember_legs(self, keys: MemoryKeys, st: CallStateRecord, legs: frozenset[Leg], source: str) -> bool:
        """Record a call's legs; False, logged and counted, if the store refused."""
        try:
            await self.memory.remember_legs(self.policy.policy, keys, st, legs, source)
        except StoreUnavailable as exc:
            log.error("could not record a call's legs (the store counts as down until it answers): %s", exc)
            return False
        return True

    async def forget_session(self, session_id: str) -> None:
        """A session ended: its legs and memory go, from this process and the store (else every
        closed session leaves keys behind); the principal's window stays."""
        try:
            await self.memory.forget_session(session_id)
        except StoreUnavailable as exc:
            log.warning("legs of session %s not dropped from the store: %s", session_id[:8], exc)

    # -- keys and suspensions -------------------------------------------------------------------
    def _suspended_meanwhile(self, call: ToolCall) -> bool:
        suspended = self._last_known_suspensions()
        return f"principal:{call.principal}" in suspended or (
            call.agent is not None and f"agent:{call.agent}" in suspended
        )

    def _first_use_key(self, call: ToolCall) -> str:
        if self.policy.policy.first_use_scope == "principal_tool":
            return f"{call.principal}|{call.upstream}__{call.tool}"
        return f"{call.upstream}__{call.tool}"

    def _last_known_suspensions(self) -> frozenset[str]:
        try:
            return self.store.suspended()
        except StoreUnavailable:
            return frozenset()


__all__ = ["CallObserver", "CallRecord", "Forward", "GuardedPath"]
