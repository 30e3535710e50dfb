"""Profile compilation: classify one tool, resource or prompt of an upstream and precompile the
`Plan` that `decide()` runs. Done once per object (catalog refresh, first sight of a resource
URI) and again after a policy reload, never per call.

Resources and prompts differ from tools in what is precompiled, not in how `decide()` runs:
  - they are always reads (reading a resource or getting a prompt changes nothing upstream);
  - unclassified, they count as P+U, with no `unknown.tool` hold and no new-action finding;
  - action control: a disabled upstream denies them; `read_only` lets them through; the action
    lists (`actions_allowed`, `actions_denied`, `new_actions_default`) name tools only;
  - first-use holds and pin checks are off in their plan (`Plan.first_use`, `Plan.pins`);
  - argument conditions keep only restrictions (never-read paths), and a resource URI that names
    a never-read path is denied statically.
"""

from __future__ import annotations

from collections.abc import Mapping

from policy.classify import Classification, classify, classify_read_object
from policy.conditions import CompiledConditions, merge_conditions
from policy.config import Conditions, PolicyFile, PromptEntry, ResourceEntry
from policy.globs import HostMatcher
from policy.hashing import definition_hash
from policy.models import Effect, Leg, ProfileKind, ToolDefinition
from policy.plan import Finding, Plan
from policy.profile import ToolProfile
from policy.rules import DENY, RANK, RuleIndex, ToolRules
from policy.upstream_table import UpstreamTable

_E = frozenset({Leg.E})
_READ = frozenset({Effect.READ})


class Profiler:
    """Compiles profiles for one policy revision; owned by `CompiledPolicy`."""

    def __init__(self, model: PolicyFile, revision: str, defaults: Mapping[Effect, Finding]) -> None:
        self.model = model
        self.revision = revision
        self._defaults = defaults
        self._upstreams = {
            name: UpstreamTable(name, cfg, model.conditions, f"upstreams.{name}")
            for name, cfg in model.upstreams.items()
        }
        self._rules = RuleIndex(model.rules)
        # first_use.enabled is the one switch; effects narrow it (the controlled preset never holds a read)
        self._first_use = frozenset(model.first_use.effects) if model.first_use.enabled else frozenset()

    def upstream(self, name: str) -> UpstreamTable:
        """The compiled settings of an upstream (`default_upstream` for one not listed)."""
        found = self._upstreams.get(name)
        if found is None:
            found = UpstreamTable(name, self.model.default_upstream, self.model.conditions, "default_upstream")
            self._upstreams = {**self._upstreams, name: found}  # copy-on-write: readers never see a half update
        return found

    # -- tools --------------------------------------------------------------------------------
    def tool(self, upstream: str, tool: ToolDefinition) -> ToolProfile:
        """Classify one tool and precompile everything `decide()` needs for it."""
        up = self.upstream(upstream)
        entry, where = up.entry(tool.name)
        c = classify(
            tool,
            up.app,
            up.cfg.trust_annotations,
            frozenset(entry.legs) if entry is not None and entry.legs is not None else None,
            entry.effect if entry is not None else None,
            entry.category if entry is not None else None,
            where,
        )
        explicit = entry is not None and entry.conditions is not None
        cond = merge_conditions([up.conditions, entry.conditions]) if explicit and entry else up.conditions
        compiled = CompiledConditions(cond, c.legs, c.category, tool.argument_names(), explicit)
        static, visible = self._action_control(up, tool.name, c.effect, c.source == "unknown")
        # what argument conditions could turn a call into, so rules that can never match are dropped now
        amounts = bool(cond.amounts)
        rules = self._rules.for_tool(
            upstream,
            tool.name,
            effects=frozenset({c.effect, Effect.WRITE} if amounts else {c.effect}),
            categories=frozenset(
                {c.category, cond.internal_categories.get(c.category or "", c.category)}
                | {t.category for t in cond.amounts}
            ),
            legs=c.legs | _E if amounts else c.legs,
        )
        plan = self._plan(up, "tool", tool.name, c, static, visible, rules, compiled, cond, where)
        return self._profile("tool", up, tool.name, c, tool, plan)

    def _action_control(
        self, up: UpstreamTable, tool: str, effect: Effect, unknown: bool
    ) -> tuple[list[Finding], bool]:
        cfg = up.cfg
        found: list[Finding] = []
        if not cfg.enabled:
            found.append(_disabled(up))
        if up.denied(tool):
            found.append((DENY, "action_control.denied", f"{tool!r} is in actions_denied of {up.where}"))
        if cfg.action_control == "read_only" and effect is not Effect.READ:
            reason = f"{up.where} is read_only and {tool!r} is a {effect.value}"
            found.append((DENY, "action_control.read_only", reason))
        new_action = (cfg.action_control == "custom" and not up.allowed(tool) and not up.denied(tool)) or (
            cfg.action_control != "custom" and unknown
        )
        if new_action and cfg.new_actions_default != "allow":
            found.append(
                (
                    RANK[cfg.new_actions_default],
                    "action_control.new_action",
                    f"{tool!r} is not an approved action of {up.where}: new_actions_default {cfg.new_actions_default}",
                )
            )
        if unknown:
            rank = RANK[self.model.defaults.unknown]
            found.append((rank, "unknown.tool", "no source classifies this tool: treated as a write touching P+U+E"))
        return found, not any(rank == DENY for rank, _, _ in found)

    # -- resources and prompts ----------------------------------------------------------------
    def resource(self, upstream: str, uri: str) -> ToolProfile:
        """Classify one resource URI (a read) and precompile its plan."""
        up = self.upstream(upstream)
        entry, where = up.resources.lookup(uri)
        static: list[Finding] = []
        if up.denies_uri(uri):
            static.append((DENY, "condition.path_deny", f"resource {uri!r} names a path that must never be read"))
        return self._read_object("resource", up, uri, ToolDefinition(name=uri), entry, where, static)

    def prompt(self, upstream: str, definition: ToolDefinition) -> ToolProfile:
        """Classify one prompt (a read; `definition` from `ToolDefinition.from_mcp_prompt`)."""
        up = self.upstream(upstream)
        entry, where = up.prompts.lookup(definition.name)
        return self._read_object("prompt", up, definition.name, definition, entry, where, [])

    def _read_object(
        self,
        kind: ProfileKind,
        up: UpstreamTable,
        name: str,
        definition: ToolDefinition,
        entry: ResourceEntry | PromptEntry | None,
        where: str | None,
        static: list[Finding],
    ) -> ToolProfile:
        legs = frozenset(entry.legs) if entry is not None and entry.legs is not None else None
        c = classify_read_object(kind, up.app, legs, entry.category if entry is not None else None, where)
        if not up.cfg.enabled:
            static.insert(0, _disabled(up))
        cond = up.read_conditions
        compiled = CompiledConditions(cond, c.legs, c.category, definition.argument_names(), False)
        rules = self._rules.for_profile(kind, up.name, name, _READ, frozenset({c.category}), c.legs)
        visible = not any(rank == DENY for rank, _, _ in static)
        plan = self._plan(up, kind, name, c, static, visible, rules, compiled, cond, where)
        return self._profile(kind, up, name, c, definition, plan)

    # -- shared -------------------------------------------------------------------------------
    def recompile(self, profile: ToolProfile) -> ToolProfile:
        """The same object's profile under this revision (after a reload)."""
        if profile.kind == "resource":
            return self.resource(profile.upstream, profile.tool)
        if profile.kind == "prompt":
            return self.prompt(profile.upstream, profile.definition)
        return self.tool(profile.upstream, profile.definition)

    def _plan(
        self,
        up: UpstreamTable,
        kind: ProfileKind,
        name: str,
        c: Classification,
        static: list[Finding],
        visible: bool,
        rules: ToolRules,
        compiled: CompiledConditions,
        cond: Conditions,
        where: str | None,
    ) -> Plan:
        is_tool = kind == "tool"
        return Plan(
            revision=self.revision,
            mode=up.cfg.mode or self.model.mode,
            visible=visible,
            read_only=up.cfg.action_control == "read_only",
            static=tuple(static),
            static_top=max((f[0] for f in static), default=-1),
            default_finding=self._defaults[c.effect],
            rules=rules.general,
            principal_rules=rules.by_principal,
            agent_rules=rules.by_agent,
            conditions=compiled,
            # results are judged against the upstream's whole allowlist (read conditions drop it)
            url_allowlist=HostMatcher(cond.url_allowlist if is_tool else up.conditions.url_allowlist),
            suspend_upstream=f"upstream:{up.name}",
            suspend_tool=f"{kind}:{up.name}__{name}",
            entry_where=where,
            first_use=is_tool and c.effect in self._first_use,
            pins=is_tool,
        )

    def _profile(
        self, kind: ProfileKind, up: UpstreamTable, name: str, c: Classification, definition: ToolDefinition, plan: Plan
    ) -> ToolProfile:
        return ToolProfile(
            upstream=up.name,
            tool=name,
            legs=c.legs,
            effect=c.effect,
            category=c.category,
            source=c.source,
            source_detail=c.detail,
            definition_hash=definition_hash(definition),
            definition=definition,
            policy_revision=self.revision,
            plan=plan,
            kind=kind,
        )


def _disabled(up: UpstreamTable) -> Finding:
    return (DENY, "upstream.disabled", f"upstream {up.name!r} is not enabled")
