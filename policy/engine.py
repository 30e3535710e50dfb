"""The compiled policy: tool profiles, visibility, and the per-call decision.

Evaluation order of `decide()` (all findings are collected; the strongest effect wins,
deny > hold > allow, and `rule_ids` lists the findings that produced it, in this order):

  1. action control and unknown-tool findings precomputed for the tool (upstream disabled,
     denied or not-allowed actions, read_only upstream vs a write, new actions, unknown tool);
  2. suspension of the agent, principal, upstream or tool             -> deny
  3. pinned definition hash differs from the tool's current one      -> deny
  4. argument conditions: never-read paths                           -> deny;
     recipients/URLs may drop E/U; amounts may raise the category
  5. state store unavailable: writes                                 -> deny (reads: configurable)
  6. explicit rules, in file order                                   -> their action
  7. category in approval_required_actions                           -> hold (cannot be unbound)
  8. only if no explicit rule matched: approval_logged_actions -> allow (logged),
     otherwise the default for the effect (read / write / destructive)
  9. first invocation of the tool (per tool or per principal+tool)   -> hold
 10. session legs + the call's legs cover P, U and E (trifecta)      -> hold (strict: deny)

Any exception while evaluating yields deny with rule id `error.fail_closed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from policy.catalog import App, app_for_upstream
from policy.classify import classify
from policy.conditions import NOTHING, CompiledConditions, Outcome, merge_conditions
from policy.config import FIRST_USE_CATEGORY, Conditions, PolicyFile, ToolEntry, UpstreamPolicy
from policy.globs import HostMatcher, NameMatcher, is_glob, name_glob_regex
from policy.hashing import content_revision, definition_hash
from policy.models import (
    ALL_LEGS,
    CallState,
    Decision,
    Effect,
    Leg,
    Mode,
    ToolCall,
    ToolDefinition,
    ToolProfile,
)
from policy.plan import Finding, Plan
from policy.rules import ALLOW, DENY, EFFECT_NAME, HOLD, RANK, RuleIndex
from policy.secrets import has_secret, iter_strings

_E = frozenset({Leg.E})
_PIN_REASON = "the tool's definition changed since it was approved; an admin must re-approve"


class _Upstream:
    """One upstream's settings, compiled: tool table, action-control matchers, merged conditions."""

    def __init__(self, name: str, cfg: UpstreamPolicy, policy_conditions: Conditions, where: str) -> None:
        self.name = name
        self.cfg = cfg
        self.where = where
        self.app: App | None = app_for_upstream(name, cfg.app)
        self.exact: dict[str, ToolEntry] = {}
        self.globs: list[tuple[Any, str, ToolEntry]] = []
        for key, entry in cfg.tools.items():
            if is_glob(key):
                self.globs.append((name_glob_regex(key), key, entry))
            else:
                self.exact[key] = entry
        self.allowed = NameMatcher(cfg.actions_allowed)
        self.denied = NameMatcher(cfg.actions_denied)
        self.conditions = merge_conditions([policy_conditions, cfg.conditions])

    def entry(self, tool: str) -> tuple[ToolEntry | None, str | None]:
        """The policy entry for a tool (exact name first, then globs in file order)."""
        found = self.exact.get(tool)
        if found is not None:
            return found, f"{self.where}.tools.{tool}"
        for regex, key, entry in self.globs:
            if regex.match(tool):
                return entry, f"{self.where}.tools[{key!r}]"
        return None, None


class CompiledPolicy:
    """A validated, compiled policy. Immutable after construction; safe to share across threads
    and to swap atomically on reload (the gateway replaces its reference)."""

    def __init__(self, model: PolicyFile, origin: str | None = None) -> None:
        self.model = model
        self.origin = origin
        self.revision = content_revision(model.model_dump(mode="json"))
        self._upstreams = {
            name: _Upstream(name, cfg, model.conditions, f"upstreams.{name}") for name, cfg in model.upstreams.items()
        }
        self._rules = RuleIndex(model.rules)
        self._required = frozenset(model.approval_required_actions)
        self._logged = frozenset(model.approval_logged_actions)
        self._first_use = model.first_use.enabled or FIRST_USE_CATEGORY in self._required
        d = model.defaults
        self._default = {
            Effect.READ: (RANK[d.read], "default.read", f"reads default to {d.read}"),
            Effect.WRITE: (RANK[d.write], "default.write", f"writes default to {d.write}"),
            Effect.DESTRUCTIVE: (
                RANK[d.destructive],
                "default.destructive",
                f"destructive calls default to {d.destructive}",
            ),
        }
        self._trifecta: Finding = (
            DENY if model.strict else HOLD,
            "trifecta.deny" if model.strict else "trifecta.hold",
            "this call would give the session private data, untrusted input and external send (P+U+E)",
        )
        self._required_findings = {
            c: (HOLD, f"approval_required:{c}", f"{c} always needs a human") for c in self._required
        }
        self._logged_findings = {c: (ALLOW, f"approval_logged:{c}", f"{c} is allowed and logged") for c in self._logged}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str | None = None) -> CompiledPolicy:
        """Validate a policy document (as parsed from YAML/TOML/JSON) and compile it."""
        return cls(PolicyFile.model_validate(data), origin)

    # -- settings the gateway applies -------------------------------------------------------
    @property
    def name(self) -> str:
        """The policy's name (e.g. the preset it came from)."""
        return self.model.name

    @property
    def first_use_scope(self) -> str:
        """'tool' or 'principal_tool': how the gateway must compute `CallState.tool_used_before`."""
        return self.model.first_use.scope

    @property
    def legs_scope(self) -> str:
        """'session' (per MCP session) or 'principal' (per principal over `legs_window_seconds`)."""
        return self.model.legs.scope

    @property
    def legs_window_seconds(self) -> int:
        """Window over which principal-scoped legs accumulate."""
        return self.model.legs.window_seconds

    def upstream_mode(self, upstream: str) -> Mode:
        """'enforce' or 'monitor' for an upstream (its own setting, else the policy's)."""
        return self._upstream(upstream).cfg.mode or self.model.mode

    def trusts_annotations(self, upstream: str) -> bool:
        """Whether this upstream's MCP annotations are believed."""
        return self._upstream(upstream).cfg.trust_annotations

    def _upstream(self, name: str) -> _Upstream:
        found = self._upstreams.get(name)
        if found is None:
            found = _Upstream(name, self.model.default_upstream, self.model.conditions, "default_upstream")
            self._upstreams = {**self._upstreams, name: found}  # copy-on-write: readers never see a half update
        return found

    # -- profiles ---------------------------------------------------------------------------
    def profile(self, upstream: str, tool: ToolDefinition) -> ToolProfile:
        """Classify one tool and precompile everything `decide()` needs for it."""
        up = self._upstream(upstream)
        entry, where = up.entry(tool.name)
        c = classify(
            tool.name,
            tool.annotations,
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
        plan = Plan(
            revision=self.revision,
            mode=up.cfg.mode or self.model.mode,
            visible=visible,
            read_only=up.cfg.action_control == "read_only",
            static=tuple(static),
            rules=self._rules.for_tool(upstream, tool.name),
            conditions=compiled,
            url_allowlist=HostMatcher(cond.url_allowlist),
            suspend_upstream=f"upstream:{upstream}",
            suspend_tool=f"tool:{upstream}__{tool.name}",
            entry_where=where,
        )
        return ToolProfile(
            upstream=upstream,
            tool=tool.name,
            legs=c.legs,
            effect=c.effect,
            category=c.category,
            source=c.source,
            source_detail=c.detail,
            definition_hash=definition_hash(tool),
            definition=tool,
            policy_revision=self.revision,
            plan=plan,
        )

    def _action_control(self, up: _Upstream, tool: str, effect: Effect, unknown: bool) -> tuple[list[Finding], bool]:
        cfg = up.cfg
        found: list[Finding] = []
        if not cfg.enabled:
            found.append((DENY, "upstream.disabled", f"upstream {up.name!r} is not enabled"))
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
        visible = not any(rank == DENY for rank, _, _ in found)
        return found, visible

    def visible(self, profile: ToolProfile) -> bool:
        """False when action control hides the tool (filter it out of `tools/list`)."""
        return self._fresh(profile).plan.visible

    def _fresh(self, profile: ToolProfile) -> ToolProfile:
        # a profile compiled under an older revision (hot reload) is recompiled, never trusted
        if profile.policy_revision == self.revision:
            return profile
        return self.profile(profile.upstream, profile.definition)

    # -- decisions --------------------------------------------------------------------------
    def decide(self, call: ToolCall, profile: ToolProfile, state: CallState) -> Decision:
        """Decide one call. Pure and deterministic; never raises (fails closed)."""
        try:
            return self.evaluate(call, profile, state)[0]
        except Exception as exc:
            return self._fail_closed(profile, state, exc)

    def evaluate(
        self, call: ToolCall, profile: ToolProfile, state: CallState
    ) -> tuple[Decision, list[Finding], Outcome]:
        """`decide()` plus the full finding trail and the argument-condition outcome (for explain)."""
        profile = self._fresh(profile)
        plan = profile.plan
        findings = list(plan.static)
        legs_before = state.session_legs
        if state.suspended:
            for key in (f"agent:{call.agent}", f"principal:{call.principal}", plan.suspend_upstream, plan.suspend_tool):
                if key in state.suspended:
                    findings.append((DENY, "suspended", f"{key} is suspended"))
        pin_changed = state.pinned_hash is not None and state.pinned_hash != profile.definition_hash
        if pin_changed:
            findings.append((DENY, "pin.changed", _PIN_REASON))
        out = plan.conditions.evaluate(call.arguments) if plan.conditions.active else NOTHING
        legs, effect, category = profile.legs, profile.effect, profile.category
        if out is not NOTHING:
            legs = legs - out.drop
            category = out.category or category
            if out.write:
                legs = legs | _E
                if effect is Effect.READ:
                    effect = Effect.WRITE
                    if plan.read_only:
                        findings.append((DENY, "action_control.read_only", "arguments make this call a write"))
            for reason in out.deny:
                findings.append((DENY, "condition.path_deny", reason))
        if not state.store_ok and (
            effect is not Effect.READ or Leg.E in legs or self.model.defaults.store_unavailable_reads == "deny"
        ):
            findings.append((DENY, "store.unavailable", "the state store is unreachable: failing closed"))
        matched = False
        for rule in plan.rules:
            if rule.matches(call, category, effect, legs, legs_before):
                findings.append((rule.rank, rule.rule_id, rule.reason))
                matched = True
        logged = False
        if category is not None:
            required = self._required_findings.get(category)
            if required is not None:
                findings.append(required)
        if not matched:
            logged_finding = self._logged_findings.get(category) if category is not None else None
            if logged_finding is not None:
                findings.append(logged_finding)
                logged = True
            else:
                findings.append(self._default[effect])
        first_use = self._first_use and not state.tool_used_before
        if first_use:
            findings.append((HOLD, "first_use", f"first invocation of {profile.namespaced} needs a human"))
        legs_after = legs_before | legs
        trifecta = legs_after >= ALL_LEGS
        if trifecta:
            findings.append(self._trifecta)
        top = max(f[0] for f in findings)
        winners = [f for f in findings if f[0] == top]
        categories = tuple(c for c in (category, FIRST_USE_CATEGORY if first_use else None) if c)
        decision = Decision(
            effect=EFFECT_NAME[top],  # type: ignore[arg-type]
            legs_before=legs_before,
            legs_after=legs_after,
            category=category or (FIRST_USE_CATEGORY if first_use else None),
            rule_ids=tuple(f[1] for f in winners),
            reasons=tuple(f[2] for f in winners),
            policy_revision=self.revision,
            mode=plan.mode,
            trifecta=trifecta,
            first_use=first_use,
            pin_changed=pin_changed,
            logged=logged and top == ALLOW,
            categories=categories,
        )
        return decision, findings, out

    def _fail_closed(self, profile: Any, state: Any, exc: BaseException) -> Decision:
        legs = getattr(state, "session_legs", ALL_LEGS)
        legs = legs if isinstance(legs, frozenset) else ALL_LEGS
        upstream = getattr(profile, "upstream", None)
        mode: Mode = "enforce"
        try:
            mode = self.upstream_mode(upstream) if isinstance(upstream, str) else self.model.mode
        except Exception:
            mode = "enforce"
        return Decision(
            effect="deny",
            legs_before=legs,
            legs_after=legs,
            category=getattr(profile, "category", None),
            rule_ids=("error.fail_closed",),
            reasons=(f"policy evaluation failed ({type(exc).__name__}): failing closed",),
            policy_revision=self.revision,
            mode=mode,
            trifecta=False,
            first_use=False,
            pin_changed=False,
        )

    # -- results and sessions ---------------------------------------------------------------
    def inspect_result(
        self, profile: ToolProfile, result: Mapping[str, Any], arguments: Mapping[str, Any] | None = None
    ) -> frozenset[Leg]:
        """Legs a tool result adds to the session: P for secrets, U for untrusted content.

        U comes from the tool itself being a U tool (unless `arguments` show an allowlisted URL)
        or from resource links to hosts outside the URL allowlist.
        """
        profile = self._fresh(profile)
        legs: set[Leg] = set()
        if Leg.U in profile.legs:
            out = profile.plan.conditions.evaluate(arguments) if arguments else NOTHING
            if Leg.U not in out.drop:
                legs.add(Leg.U)
        allow = profile.plan.url_allowlist
        content = result.get("content")
        for item in content if isinstance(content, list) else ():
            if not isinstance(item, Mapping):
                continue
            uri = item.get("uri") if item.get("type") == "resource_link" else None
            if item.get("type") == "resource" and isinstance(item.get("resource"), Mapping):
                uri = item["resource"].get("uri")
            if isinstance(uri, str) and _remote_host(uri) and not allow(_remote_host(uri)):
                legs.add(Leg.U)
        if any(has_secret(text) for text in iter_strings(result)):
            legs.add(Leg.P)
        return frozenset(legs)

    def trifecta_capable(self, profiles: Iterable[ToolProfile]) -> bool:
        """True when the tools together span P, U and E (a session could complete the trifecta)."""
        legs: set[Leg] = set()
        for profile in profiles:
            legs |= profile.legs
            if legs >= ALL_LEGS:
                return True
        return False

    def explain(
        self,
        call: ToolCall,
        profile: ToolProfile,
        state: CallState,
        pinned_definition: ToolDefinition | None = None,
    ) -> str:
        """A person-readable account of the decision: profile source, conditions, every rule."""
        from policy.explain import render

        return render(self, call, profile, state, pinned_definition)


def _remote_host(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "invalid"
    return parts.hostname if parts.scheme in ("http", "https") else None
