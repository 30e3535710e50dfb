"""Explicit policy rules, compiled: static parts (upstream, kind, tool/resource/prompt name) are
resolved once per profile at profile time; only the parts that depend on the call (who, category,
effect, legs) run per call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

from policy.config import Rule
from policy.globs import NameMatcher, UriMatcher, is_glob
from policy.models import Effect, Leg, ProfileKind, ToolCall

ALLOW: Final = 0
HOLD: Final = 1
DENY: Final = 2
RANK = {"allow": ALLOW, "hold": HOLD, "deny": DENY}
EFFECT_NAME = ("allow", "hold", "deny")


class CompiledRule:
    """One rule with its match lists as sets; `None` means 'any'."""

    __slots__ = (
        "agents",
        "any_kind",
        "call_legs",
        "categories",
        "effects",
        "groups",
        "order",
        "principals",
        "prompts",
        "rank",
        "reason",
        "resources",
        "rule_id",
        "session_legs",
        "source",
        "tools",
        "upstreams",
    )

    def __init__(self, rule: Rule, order: int) -> None:
        self.source = rule
        self.order = order
        self.rule_id = f"rule:{rule.id}"
        self.rank = RANK[rule.action]
        self.reason = rule.reason or f"rule {rule.id!r} says {rule.action}"
        self.upstreams = NameMatcher(rule.upstreams) if rule.upstreams else None
        self.tools = NameMatcher(rule.tools) if rule.tools else None
        self.resources = UriMatcher(rule.resources) if rule.resources else None
        self.prompts = NameMatcher(rule.prompts) if rule.prompts else None
        # a rule naming no tool, resource or prompt applies to every kind
        self.any_kind = self.tools is None and self.resources is None and self.prompts is None
        self.categories = frozenset(rule.categories) or None
        self.effects: frozenset[Effect] | None = frozenset(rule.effects) or None
        self.principals = frozenset(rule.principals) or None
        self.agents = frozenset(rule.agents) or None
        self.groups = frozenset(rule.groups) or None
        self.call_legs: frozenset[Leg] | None = frozenset(rule.call_legs_any) or None
        self.session_legs: frozenset[Leg] | None = frozenset(rule.session_legs_any) or None

    def applies_to(self, kind: ProfileKind, upstream: str, name: str) -> bool:
        """Static match, done at profile time: upstream, kind, and the tool name / URI / prompt name."""
        if self.upstreams is not None and not self.upstreams(upstream):
            return False
        matcher = self.tools if kind == "tool" else self.resources if kind == "resource" else self.prompts
        return matcher(name) if matcher is not None else self.any_kind

    def applies_to_tool(self, upstream: str, tool: str) -> bool:
        """Static match for a tool, done at profile time."""
        return self.applies_to("tool", upstream, tool)

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


class ToolRules(NamedTuple):
    """The rules that can apply to one tool (resource, prompt), split so that per-caller rules cost
    nothing to others."""

    general: tuple[CompiledRule, ...]
    by_principal: dict[str, tuple[CompiledRule, ...]]
    by_agent: dict[str, tuple[CompiledRule, ...]]


class RuleIndex:
    """Rules bucketed by exact upstream name, so a tool only scans the rules that can name it."""

    __slots__ = ("_any", "_by_upstream")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._by_upstream: dict[str, list[CompiledRule]] = {}
        self._any: list[CompiledRule] = []
        for index, rule in enumerate(rules):
            compiled = CompiledRule(rule, index)
            if rule.upstreams and not any(is_glob(u) for u in rule.upstreams):
                for name in rule.upstreams:
                    self._by_upstream.setdefault(name, []).append(compiled)
            else:
                self._any.append(compiled)

    def for_tool(
        self,
        upstream: str,
        tool: str,
        effects: frozenset[Effect],
        categories: frozenset[str | None],
        legs: frozenset[Leg],
    ) -> ToolRules:
        """Rules that can apply to a tool whose calls may have these effects, categories and legs
        (a superset: argument conditions can change them), in file order."""
        return self.for_profile("tool", upstream, tool, effects, categories, legs)

    def for_profile(
        self,
        kind: ProfileKind,
        upstream: str,
        name: str,
        effects: frozenset[Effect],
        categories: frozenset[str | None],
        legs: frozenset[Leg],
    ) -> ToolRules:
        """`for_tool` for any kind: `name` is the tool name, the resource URI or the prompt name."""
        candidates = sorted(self._by_upstream.get(upstream, []) + self._any, key=lambda r: r.order)
        general: list[CompiledRule] = []
        by_principal: dict[str, list[CompiledRule]] = {}
        by_agent: dict[str, list[CompiledRule]] = {}
        for rule in candidates:
            if not rule.applies_to(kind, upstream, name):
                continue
            if rule.effects is not None and rule.effects.isdisjoint(effects):
                continue
            if rule.categories is not None and rule.categories.isdisjoint(categories):
                continue
            if rule.call_legs is not None and rule.call_legs.isdisjoint(legs):
                continue
            if rule.principals is not None:
                for principal in rule.principals:
                    by_principal.setdefault(principal, []).append(rule)
            elif rule.agents is not None:
                for agent in rule.agents:
                    by_agent.setdefault(agent, []).append(rule)
            else:
                general.append(rule)
        return ToolRules(
            tuple(general),
            {k: tuple(v) for k, v in by_principal.items()},
            {k: tuple(v) for k, v in by_agent.items()},
        )
