"""The per-tool plan: everything `decide()` needs about one tool, precomputed at profile time."""

from __future__ import annotations

from dataclasses import dataclass

from policy.conditions import CompiledConditions
from policy.globs import HostMatcher
from policy.models import Mode
from policy.rules import CompiledRule

Finding = tuple[int, str, str]  # (rank: ALLOW/HOLD/DENY, rule id, reason)


@dataclass(frozen=True, eq=False)
class Plan:
    """Precompiled, per tool. Bound to the policy revision it was compiled under."""

    revision: str
    mode: Mode
    visible: bool
    read_only: bool  # the upstream's action control is read_only
    static: tuple[Finding, ...]  # findings that do not depend on the call (action control, unknown)
    rules: tuple[CompiledRule, ...]
    conditions: CompiledConditions
    url_allowlist: HostMatcher
    suspend_upstream: str  # 'upstream:NAME'
    suspend_tool: str  # 'tool:UPSTREAM__TOOL'
    entry_where: str | None  # where in the policy file the tool entry is, for explain
