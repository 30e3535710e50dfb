"""Holding a call for a human: create (or reuse) the approval, wait in-band, answer clearly.

The guarded path (:mod:`gateway.guard.pipeline`) hands a held request to :meth:`Approvals.hold`
and gets back either None (approved: run it now, once) or the answer to send.

Clients time out (Codex: 60 s per tool call) and cannot resume a call, so a hold
waits up to ``hold_wait`` sending progress notifications when the client gave a
progress token; if nobody decided by then the agent gets a tool error naming the
approval, and the identical call repeated after approval runs exactly once, from
any MCP session of the same principal (``codex exec`` opens a new one per run).

An approver may choose a broader scope (:mod:`gateway.ports.records`): ``session`` lets the
identical call repeat in the session it came from, ``principal_tool`` lets the principal call the
tool with any arguments for some minutes. Such an approval is not consumed; each call it lets
through carries its id in the audit record (``approval_id``) with outcome ``approved``.

A client that cancels a held call (``notifications/cancelled``, or ``tasks/cancel``) cancels the
request's task while it waits here: the approval is then stamped ``abandoned_at`` and audited as
``triplock.approval.abandoned``, on a task of its own so the cancellation is never delayed. A client
whose connection drops while its call is held is treated the same (``reason`` ``disconnected`` in
the audit record), unless its reply is a resumable SSE stream it may reconnect to
(:class:`gateway.mcp.http_io.ClientLink`). An abandoned approval stays decidable, since approving
and repeating the call is the documented flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.guard.answers import tool_error
from gateway.guard.record import CallRecord
from gateway.ports.store import PendingApproval, Store, StoreUnavailable, args_hash
from gateway.telemetry.audit_hook import call_audit
from policy import Decision, ToolCall

__all__ = ["APPROVAL_ABANDONED", "Approvals", "HoldSettings", "args_hash"]

log = logging.getLogger("triplock.approvals")

APPROVAL_ABANDONED = "triplock.approval.abandoned"
ABANDON_TIMEOUT = 10.0  # seconds the background stamp may take before it is given up (logged)


@dataclass(frozen=True)
class HoldSettings:
    hold_wait: float = 40.0
    approval_ttl: float = 3600.0
    console_url: str = "http://127.0.0.1:8080/console"
    progress_every: float = 5.0
    end_user_categories: frozenset[str] = frozenset()


class Approvals:
    """The approval workflow on top of the store."""

    def __init__(
        self,
        store: Store,
        settings: HoldSettings,
        on_created: Callable[[PendingApproval], None] | None = None,
        audit: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.on_created = on_created  # notify approvers; must not block
        self.audit = audit  # audit(event_type, **fields), sync or async: the abandoned-hold event
        self._stamping: set[asyncio.Task[None]] = set()  # abandon stamps in flight (kept referenced)

    async def request(
        self, call: ToolCall, exposed: str, decision: Decision, digest: str, now: float | None = None
    ) -> PendingApproval:
        """The pending approval for this exact call: the existing one if the agent repeats it."""
        existing = await self.store.find_pending(call.principal, call.session_id, call.upstream, call.tool, digest)
        if existing is not None:
            return existing
        approval = PendingApproval.new(
            principal=call.principal,
            session_id=call.session_id,
            upstream=call.upstream,
            tool=call.tool,
            arguments=call.arguments,
            policy_revision=decision.policy_revision,
            ttl_seconds=self.settings.approval_ttl,
            now=now,
            category=decision.category,
            legs_before=decision.legs_before,
            legs_after=decision.legs_after,
            rule_ids=decision.rule_ids,
            reasons=decision.reasons,
            exposed_name=exposed,
        )
        await self.store.create_approval(approval)
        if self.on_created is not None:
            self.on_created(approval)
        return approval

    async def hold(self, record: CallRecord, suspended: Callable[[ToolCall], bool]) -> dict[str, Any] | None:
        """Hold ``record``'s call: None when it may run now (approved), else the answer to send.

        ``suspended`` says whether the caller was suspended while the call waited.
        """
        call, decision, store = record.call, record.decision, self.store
        assert decision is not None
        digest = record.args_hash = args_hash(call.arguments)
        now = time.time()
        try:
            approved = await store.find_approved(
                call.principal, call.session_id, call.upstream, call.tool, digest, decision.policy_revision, now
            )
            # A broader scope is not used up; `once` is, atomically (a racing repeat gets held anew).
            if approved is not None and (approved.scope != "once" or await store.consume(approved.id)):
                record.approval, record.outcome = approved, "approved"
                log.info("%s of principal %s runs under approval %s (scope %s)", record.exposed, call.principal,
                         approved.id, approved.scope)
                return None
            approval = record.approval = await self.request(call, record.exposed, decision, digest, now)
            record.outcome = "held"
            # Who, what and why; never the arguments.
            log.info("held %s of principal %s for approval %s (category %s, rules %s)", record.exposed,
                     call.principal, approval.id, decision.category or "-", ",".join(decision.rule_ids) or "-")
            watch = self._watch_client(record)
            try:
                decided = await self._ask_end_user(record, approval)
                if decided is None:
                    decided = await self._wait(record, approval)
            except asyncio.CancelledError:
                self._abandoned(approval, "disconnected" if watch is not None and watch.done() else "cancelled")
                raise
            finally:
                if watch is not None:
                    watch.cancel()
            if decided is not None and decided.state == "approved" and not decided.covers(
                call.principal, call.session_id, call.upstream, call.tool, digest
            ):
                # Approved for another session only (this call reused that session's pending approval):
                # not this call's to run. It is held anew, as its own approval.
                record.approval = await self.request(call, record.exposed, decision, digest, time.time())
                record.outcome = "pending"
                return self.pending_result(record.approval)
        except StoreUnavailable:
            record.outcome = "denied"
            return tool_error("Refused: the approval store became unavailable while holding this call (fail closed).")
        if decided is None:
            record.outcome = "pending"
            log.info("approval %s still undecided after the hold wait: %s of principal %s answered as pending",
                     approval.id, record.exposed, call.principal)
            return self.pending_result(approval)
        record.approval = decided
        log.info("approval %s %s by %s: %s of principal %s", decided.id, decided.state, decided.decided_by or "-",
                 record.exposed, call.principal)
        if decided.state == "approved" and suspended(call):
            record.outcome = "denied"
            return tool_error("Refused: the caller was suspended while this call waited for approval.")
        if decided.state == "approved" and (decided.scope != "once" or await store.consume(decided.id)):
            record.outcome = "approved"
            return None
        record.outcome = "denied"
        return self.denied_result(decided)

    @staticmethod
    def _watch_client(record: CallRecord) -> asyncio.Task[None] | None:
        """While this call is held, cancel it if its client disconnects for good (HTTP only).

        The transport's :class:`~gateway.mcp.http_io.ClientLink` says when the client is gone; a
        dropped connection is then treated like ``notifications/cancelled`` (the stateless era's
        client has no other way to give up). Not for a call run as an MCP task: its POST was
        answered at once and the client polls. Started only here, so allowed calls pay nothing.
        """
        link = record.ctx.client
        holder = asyncio.current_task()
        if link is None or holder is None or record.ctx.in_task:
            return None

        async def cancel_when_gone() -> None:
            with contextlib.suppress(Exception):  # an odd receive() must not end the hold; it just is not watched
                await link.gone()
                holder.cancel()

        return asyncio.get_running_loop().create_task(cancel_when_gone(), name="triplock-hold-client")

    def _abandoned(self, approval: PendingApproval, reason: str) -> None:
        """The waiting client went away: stamp and audit the approval on a task of its own.

        Called while the request's task is being cancelled, so nothing here may await: the stamp
        runs shielded from that cancellation, best effort (a store that is down just logs).
        ``reason`` is ``cancelled`` (the client cancelled the request) or ``disconnected``.
        """
        task = asyncio.get_running_loop().create_task(
            self._stamp_abandoned(approval, reason), name="triplock-abandon"
        )
        self._stamping.add(task)
        task.add_done_callback(self._stamping.discard)

    async def _stamp_abandoned(self, approval: PendingApproval, reason: str) -> None:
        try:
            stamped = await asyncio.wait_for(self.store.mark_abandoned(approval.id, time.time()), ABANDON_TIMEOUT)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("could not mark approval %s abandoned: %s", approval.id, exc)
            return
        except Exception:  # best effort: a bug here must not surface as an unretrieved task error
            log.exception("could not mark approval %s abandoned", approval.id)
            return
        if stamped is None:
            return  # decided meanwhile, or already stamped by an earlier waiter: audited once
        await call_audit(  # the stamp stands whatever the audit hook does
            self.audit, APPROVAL_ABANDONED, approval_id=stamped.id, principal=stamped.principal,
            session=stamped.session_id, upstream=stamped.upstream, tool=stamped.tool, args_hash=stamped.args_hash,
            policy_revision=stamped.policy_revision, abandoned_at=stamped.abandoned_at, reason=reason,
        )

    async def _ask_end_user(self, record: CallRecord, approval: PendingApproval) -> PendingApproval | None:
        """For categories the agent's own user decides: ask through elicitation on this call's stream."""
        ctx = record.ctx
        if ctx.session is None or ctx.emit is None:
            return None
        if not self.ask_end_user(approval.category, ctx.client_capabilities):
            return None
        response = await ctx.session.ask(
            "elicitation/create", self.elicitation_params(approval), ctx.emit, self.settings.hold_wait
        )
        verdict = self.elicitation_verdict(response)
        if verdict is None:
            return None  # no answer: fall back to the approvers
        approve, reason = verdict
        # The user is recorded as a distinct approver id: the store never lets a principal approve itself.
        outcome = await self.store.decide(approval.id, approve, f"end-user:{approval.principal}", reason, time.time())
        return outcome.approval

    async def _wait(self, record: CallRecord, approval: PendingApproval) -> PendingApproval | None:
        """Wait in-band up to hold_wait; progress notifications keep the client's call alive."""
        settings = self.settings
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

    def ask_end_user(self, category: str | None, client_capabilities: dict[str, Any]) -> bool:
        """Whether this hold is the agent's own user's to decide, asked through MCP elicitation."""
        elicitation = client_capabilities.get("elicitation")
        # An empty object declares form mode (the 2025-06-18 shape); newer clients list "form".
        form_ok = isinstance(elicitation, dict) and (not elicitation or "form" in elicitation)
        return form_ok and category is not None and category in self.settings.end_user_categories

    @staticmethod
    def elicitation_params(approval: PendingApproval) -> dict[str, Any]:
        """A form-mode elicitation asking the user to approve this one call (arguments shown as data)."""
        return {
            "mode": "form",
            "message": (
                f"The agent wants to call {approval.exposed_name or approval.tool} with arguments "
                f"{approval.args_preview}. Reason held: {'; '.join(approval.reasons) or 'policy'}. Allow it once?"
            ),
            "requestedSchema": {
                "type": "object",
                "properties": {
                    "approve": {"type": "boolean", "title": "Allow this call once"},
                    "reason": {"type": "string", "title": "Reason (optional)"},
                },
                "required": ["approve"],
            },
        }

    @staticmethod
    def elicitation_verdict(response: dict[str, Any] | None) -> tuple[bool, str] | None:
        """(approve, reason) from the client's answer; None when it gave none (timeout, cancel)."""
        if response is None or not isinstance(response.get("result"), dict):
            return None
        result = response["result"]
        if result.get("action") == "decline":
            return False, "declined by the user"
        if result.get("action") != "accept" or not isinstance(result.get("content"), dict):
            return None
        content = result["content"]
        return content.get("approve") is True, str(content.get("reason") or "answered by the user")

    def pending_result(self, approval: PendingApproval) -> dict[str, Any]:
        """What the agent gets when nobody decided in time: a tool error that says what to do."""
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(approval.expires_at))
        link = f"{self.settings.console_url}#{approval.id}"
        text = (
            f"Held for human approval: {approval.exposed_name or approval.tool} "
            f"(approval id {approval.id}). Reason: {'; '.join(approval.reasons) or 'policy'}. "
            f"An approver can decide at {link} until {until}. "
            "Once approved, repeat exactly the same call (same arguments) and it will run once."
        )
        return tool_error(
            text,
            {
                "triplock/approval": {
                    "status": "pending",
                    "approval_id": approval.id,
                    "approve_url": link,
                    "expires_at": until,
                    "rule_ids": list(approval.rule_ids),
                    "category": approval.category,
                }
            },
        )

    @staticmethod
    def denied_result(approval: PendingApproval) -> dict[str, Any]:
        """A decided-against call: who denied it and why (or that it expired)."""
        if approval.state == "expired":
            text = f"Approval {approval.id} expired without a decision; the call was not made."
        else:
            text = (
                f"Denied by {approval.decided_by}: {approval.reason or 'no reason given'} "
                f"(approval id {approval.id}); the call was not made."
            )
        return tool_error(
            text,
            {
                "triplock/approval": {
                    "status": approval.state,
                    "approval_id": approval.id,
                    "decided_by": approval.decided_by,
                    "reason": approval.reason,
                }
            },
        )

