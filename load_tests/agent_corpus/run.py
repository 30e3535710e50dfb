"""One replay of (part of) the corpus in one setup: start the stack, warm up first use if asked,
replay every session, join the audit, count."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from load_tests.agent_corpus import stack as stacks
from load_tests.agent_corpus.model import Session, Step
from load_tests.agent_corpus.replay import Replayer, SessionResult
from load_tests.agent_corpus.report import FamilyFigures, figures, join_audit, misses

Setup = Literal["fresh", "first-use-approved"]
Principals = Literal["per-session", "shared"]
SHARED_PRINCIPAL = "corpus-agent"


@dataclass
class RunResult:
    """A replay's results and figures."""

    setup: str
    policy: str
    principals: str
    sessions: list[SessionResult]
    figures: dict[str, FamilyFigures]
    warmup: SessionResult | None
    seconds: float
    misses: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"setup": self.setup, "policy": self.policy, "principals": self.principals,
                "seconds": round(self.seconds, 1), "figures": {k: f.to_dict() for k, f in self.figures.items()},
                "warmup_approvals": sum(x.approvals for x in self.warmup.steps) if self.warmup else 0,
                "misses": self.misses, "sessions": [s.to_dict() for s in self.sessions]}


def warmup_session(sessions: Sequence[Session]) -> Session:
    """One call of every tool the sessions use (its first use in the corpus), for the admin to approve."""
    first: dict[str, Step] = {}
    for s in sessions:
        for step in s.steps:
            first.setdefault(step.exposed, Step(step.upstream, step.tool, step.arguments, step.output))
    return Session("warmup", "warmup", "benign", "approve every tool once", tuple(first.values()))


def principal_of(session: Session, principals: Principals) -> str:
    """Each session its own principal (independent tasks), or one agent for all."""
    return SHARED_PRINCIPAL if principals == "shared" else f"corpus-{session.id}"


async def run(sessions: Sequence[Session], setup: Setup, policy: str = "controlled",
              principals: Principals = "per-session") -> RunResult:
    """Replay ``sessions`` through a fresh stack in ``setup``."""
    names = [principal_of(s, principals) for s in sessions]
    start = time.monotonic()
    with stacks.running(names, policy) as stack:
        async with httpx.AsyncClient(timeout=30) as http:
            replayer = Replayer(stack, http)
            warm = None
            if setup == "first-use-approved":
                warm = await replayer.replay(warmup_session(sessions), stacks.WARMUP_PRINCIPAL, approve_all=True)
            results = [await replayer.replay(s, p) for s, p in zip(sessions, names, strict=True)]
        join_audit(results, stack.audit_path)
    return RunResult(setup, policy, principals, results, figures(results), warm, time.monotonic() - start,
                     misses(results))
