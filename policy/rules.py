"""Explicit policy rules, compiled: static parts (upstream, tool) are resolved once per tool at
profile time; only the parts that depend on the call (who, category, effect, legs) run per call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from policy.config import Rule
from policy.globs import NameMatcher, is_glob
from policy.models import Effect, Leg, ToolCall

ALLOW: Final = 0
HOLD: Final = 1
DENY: Final = 2
RANK = {"allow": ALLOW, "hold": HOLD, "deny": DENY}
EFFECT_NAME = ("allow", "hold", "deny")


class CompiledRule:
    """One rule with its match lists as sets; `None` means 'any'."""

    __slots__ = (
        "agents",
        "call_legs",
        "categories",
        "effects",
        "groups",
        "principals",
        "rank",
        "reason",
        "rule_id",
        "session_legs",
        "source",
        "tools",
        "upstreams",
    )

    def __init__(self, rule: Rule) -> None:
        self.source = rule
        self.rule_id = f"rule:{rule.id}"
        self.rank = RANK[rule.action]
        self.reason = rule.reason or f"rule {rule.id!r} says {rule.action}"
        self.upstreams = NameMatcher(rule.upstreams) if rule.upstreams else None
        self.tools = NameMatcher(rule.tools) if rule.tools else None
        self.categories = frozenset(rule.categories) or None
        self.effects: frozenset[Effect] | None = frozenset(rule.effects) or None
        self.principals = frozenset(rule.principals) or None
        self.agents = frozenset(rule.agents) or None
        self.groups = frozenset(rule.groups) or None
        self.call_legs: frozenset[Leg] | None = frozenset(rule.call_legs_any) or None
        self.session_legs: frozenset[Leg] | None = frozenset(rule.session_legs_any) or None

    def applies_to_tool(self, upstream: str, tool: str) -> bool:
        """Static match, done at profile time."""
        if self.upstreams is not None and not self.upstreams(upstream):
            return False
        return self.tools is None or self.tools(tool)

    def matches(
        self,
        call: ToolCall,
        category: str | None,
        effect: Effect,
        call_legs: frozenset[Leg],
        session_legs: frozenset[Leg],
    ) -> bool:
        """Dynamic match, done per call; cheapest tests first."""
        if self.categories is not None and category not in self.categories:
            return False
        if self.effects is not None and effect not in self.effects:
            return False
        if self.principals is not None and call.principal not in self.principals:
            return False
        if self.agents is not None and call.agent not in self.agents:
            return False
        if self.groups is not None and self.groups.isdisjoint(call.groups):
            return False
        if self.call_legs is not None and self.call_legs.isdisjoint(call_legs):
            return False
        return self.session_legs is None or not self.session_legs.isdisjoint(session_legs)


class RuleIndex:
    """Rules bucketed by exact upstream name, so a tool only scans the rules that can name it."""

    __slots__ = ("_any", "_by_upstream")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._by_upstream: dict[str, list[tuple[int, CompiledRule]]] = {}
        self._any: list[tuple[int, CompiledRule]] = []
        for index, rule in enumerate(rules):
            compiled = CompiledRule(rule)
            if rule.upstreams and not any(is_glob(u) for u in rule.upstreams):
                for name in rule.upstreams:
                    self._by_upstream.setdefault(name, []).append((index, compiled))
            else:
                self._any.append((index, compiled))

    def for_tool(self, upstream: str, tool: str) -> tuple[CompiledRule, ...]:
        """Rules that can apply to this tool, in file order."""
        candidates = sorted(self._by_upstream.get(upstream, []) + self._any, key=lambda pair: pair[0])
        return tuple(rule for _, rule in candidates if rule.applies_to_tool(upstream, tool))
