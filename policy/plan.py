"""The per-tool plan: everything `decide()` needs about one tool, resource or prompt, precomputed at
profile time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policy.conditions import CompiledConditions
from policy.globs import HostMatcher
from policy.models import Mode, ToolCall
from policy.rules import CompiledRule

Finding = tuple[int, str, str]  # (rank: ALLOW/HOLD/DENY, rule id, reason)


@dataclass(frozen=True, eq=False)
class Plan:
    """Precompiled, per tool (or resource, or prompt). Bound to the policy revision it was compiled under."""

    revision: str
    mode: Mode
    visible: bool
    read_only: bool  # the upstream's action control is read_only
    static: tuple[Finding, ...]  # findings that do not depend on the call (action control, unknown)
    static_top: int  # strongest rank among `static` (-1 when empty)
    default_finding: Finding  # the default for the tool's own effect
    rules: tuple[CompiledRule, ...]  # rules for anyone
    principal_rules: Mapping[str, tuple[CompiledRule, ...]]  # rules naming principals, by principal
    agent_rules: Mapping[str, tuple[CompiledRule, ...]]  # rules naming agents (and no principal), by agent
    conditions: CompiledConditions
    url_allowlist: HostMatcher
    suspend_upstream: str  # 'upstream:NAME'
    suspend_tool: str  # 'tool:UPSTREAM__TOOL', 'resource:UPSTREAM__URI' or 'prompt:UPSTREAM__PROMPT'
    entry_where: str | None  # where in the policy file the entry is, for explain
    # Per-kind switches, so decide() needs no kind test: first-use holds and pin checks are for
    # tools only (a resource URI or a prompt has no definition an admin approved).
    first_use: bool  # hold the first invocation (tools, when the policy enables it)
    pins: bool  # compare CallState.pinned_hash with the definition hash

    def rules_for(self, call: ToolCall) -> tuple[CompiledRule, ...]:
        """The rules to evaluate for this caller, in file order; usually just `rules`."""
        by_principal = self.principal_rules.get(call.principal) if self.principal_rules else None
        by_agent = self.agent_rules.get(call.agent or "") if self.agent_rules else None
        if not by_principal and not by_agent:
            return self.rules
        return tuple(sorted((*self.rules, *(by_principal or ()), *(by_agent or ())), key=_order))


def _order(rule: CompiledRule) -> int:
    return rule.order
