"""Replaying sessions through the gateway: one MCP session per corpus session, each step a real
``tools/call``, and a scripted ideal approver on the approvals REST API.

The approver uses the documented flow for ``hold_wait = 0``: a held call comes back at once as a
tool error carrying ``triplock/approval`` (status ``pending``, the approval id); the approver
approves it if the corpus labels the step not harmful (and the agent repeats the exact call, which
then runs once), or denies it if the step is harmful (and the agent moves on to its next step, as
an agent told "denied" would).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

from load_tests.agent_corpus.model import Session, Step
from load_tests.agent_corpus.stack import Stack

MAX_ROUNDS = 3  # holds in a row on one step before the harness gives up (a policy that re-holds an approved call)


class HarnessError(RuntimeError):
    """The replay itself went wrong (not a policy outcome): a drifted upstream, a failed decision."""


@dataclass
class StepResult:
    """What happened to one step: the gateway's first answer and what followed."""

    index: int
    tool: str
    harmful: bool
    first: str  # allowed | held | denied | refused
    executed: bool = False
    approvals: int = 0  # holds the approver decided on this step
    first_use_holds: int = 0  # of which the hold named the tool's first use
    rule_ids: list[str] = field(default_factory=list)
    category: str | None = None
    text: str = ""  # the refusal's or hold's text (the gateway's words; never the step's output)
    audit: dict[str, Any] | None = None  # the first attempt's audit record: legs, category, rule ids


@dataclass
class SessionResult:
    """One replayed session and its labels."""

    id: str
    family: str
    kind: str
    goal: str
    principal: str
    steps: list[StepResult]
    attempts: list[str] = field(default_factory=list)  # UPSTREAM__TOOL of every call made, in order

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


def _answer(result: types.CallToolResult) -> tuple[str, dict[str, Any], str]:
    """(allowed | held | approver-denied | denied | refused | upstream-error, its metadata, its text)."""
    meta = dict(result.meta or {})
    text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))[:300]
    approval = meta.get("triplock/approval")
    if isinstance(approval, dict):
        return ("held" if approval.get("status") == "pending" else "approver-denied"), approval, text
    decision = meta.get("triplock/decision")
    if isinstance(decision, dict):
        return "denied", decision, text
    if result.is_error:
        return ("refused" if text.startswith("Refused") else "upstream-error"), {}, text
    return "allowed", {}, text


class Replayer:
    """Replays sessions against one running stack."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient) -> None:
        self.stack = stack
        self.http = http

    async def _decide(self, approval_id: str, approve: bool) -> None:
        verb = "approve" if approve else "deny"
        r = await self.http.post(f"{self.stack.base_url}/api/approvals/{approval_id}/{verb}",
                                 json={"reason": "corpus label"},
                                 headers={"authorization": f"Bearer {self.stack.approver_token}"})
        if r.status_code != 200:
            raise HarnessError(f"{verb} {approval_id}: HTTP {r.status_code} {r.text[:200]}")

    async def _start(self, session_id: str, steps: tuple[Step, ...]) -> None:
        r = await self.http.post(f"{self.stack.control_url}/session", json={"id": session_id, "steps": [
            {"upstream": s.upstream, "tool": s.tool, "arguments": s.arguments, "output": s.output} for s in steps]})
        r.raise_for_status()

    async def _executed(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.stack.control_url}/executed")
        r.raise_for_status()
        return list(r.json()["executed"])

    async def replay(self, session: Session, principal: str, approve_all: bool = False) -> SessionResult:
        """Replay ``session`` as ``principal``; ``approve_all``: approve every hold (the warm-up)."""
        await self._start(session.id, session.steps)
        out = SessionResult(session.id, session.family, session.kind, session.goal, principal, [])
        headers = {"authorization": f"Bearer {self.stack.keys[principal]}"}
        async with create_mcp_http_client(headers=headers) as client_http, \
                Client(streamable_http_client(self.stack.mcp_url, http_client=client_http), mode="legacy") as agent:
            for i, step in enumerate(session.steps):
                out.steps.append(await self._step(agent, out, i, step, approve=approve_all or not step.harmful))
        await self._check_upstream(session, out)
        return out

    async def _call(self, agent: Client, out: SessionResult, step: Step) -> tuple[str, dict[str, Any], str]:
        out.attempts.append(step.exposed)
        try:
            result = await agent.call_tool(step.exposed, step.arguments)
        except Exception as exc:  # a JSON-RPC error: the gateway refused before the tool (unknown, hidden)
            return "refused", {}, str(exc)[:300]
        return _answer(result)

    async def _step(self, agent: Client, out: SessionResult, i: int, step: Step, approve: bool) -> StepResult:
        kind, meta, text = await self._call(agent, out, step)
        res = StepResult(i, step.exposed, step.harmful, kind if kind != "approver-denied" else "held", text=text)
        if kind == "upstream-error":
            raise HarnessError(f"{out.id} step {i} {step.exposed}: the upstream failed: {text}")
        if kind in ("denied", "refused"):
            res.rule_ids, res.text = list(meta.get("rule_ids", [])), text
            return res
        rounds = 0
        while kind in ("held", "approver-denied"):
            if kind == "approver-denied":
                raise HarnessError(f"{out.id} step {i}: a repeated call met an already-decided approval: {text}")
            rounds += 1
            if rounds > MAX_ROUNDS:
                raise HarnessError(f"{out.id} step {i} {step.exposed}: held {MAX_ROUNDS} times after approvals")
            res.approvals += 1
            rule_ids = [str(r) for r in meta.get("rule_ids", [])]
            res.first_use_holds += any("first" in r for r in rule_ids)
            if rounds == 1:
                res.rule_ids, res.category = rule_ids, meta.get("category")
            await self._decide(str(meta["approval_id"]), approve)
            if not approve:
                return res
            kind, meta, text = await self._call(agent, out, step)
        if kind != "allowed":
            raise HarnessError(f"{out.id} step {i} {step.exposed}: approved, then answered {kind}: {text}")
        res.executed = True
        return res

    async def _check_upstream(self, session: Session, out: SessionResult) -> None:
        """Every call the harness counts as executed reached the upstream, and nothing else did."""
        executed = await self._executed()
        drift = [e for e in executed if e["step"] is None]
        if drift:
            raise HarnessError(f"{session.id}: calls matching no recorded step reached the upstream: {drift}")
        seen = sorted(int(e["step"]) for e in executed)
        counted = [s.index for s in out.steps if s.executed]
        if seen != counted:
            raise HarnessError(f"{session.id}: the upstream ran steps {seen}, the harness counted {counted}")
