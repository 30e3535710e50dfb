"""What the guard knows about one request as it progresses, and the hooks that watch it.

Observers (audit, spans, metrics: :mod:`gateway.telemetry.observers`) see every
decision and outcome through :class:`CallObserver` without the guard knowing what
they do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.mcp.context import RequestContext
from gateway.ports.store import PendingApproval
from policy import Decision, Leg, ToolCall, ToolProfile


@dataclass(slots=True)
class CallRecord:
    """Everything known about one guarded request, handed to observers as it progresses."""

    ctx: RequestContext
    exposed: str  # the name the client used: UPSTREAM__TOOL, UPSTREAM__PROMPT or the resource URI
    call: ToolCall  # for a resource or prompt, ``call.tool`` is its URI or name
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
    method: str = "tools/call"


class CallObserver(Protocol):
    """Audit and telemetry hook into the guarded path."""

    def decided(self, record: CallRecord) -> None: ...

    def finished(self, record: CallRecord) -> None: ...


__all__ = ["CallObserver", "CallRecord"]
