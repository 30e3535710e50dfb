"""The compiled policy: profiles (tools, resources, prompts), visibility, and the per-call decision.

Profiles are compiled by `policy.profiler`; `decide()` runs the same way for every kind (a
resource read or a prompt get is a `ToolCall` whose `tool` is the URI or the prompt name).

Evaluation order of `decide()` (all findings are collected; the strongest effect wins,
deny > hold > allow, and `rule_ids` lists the findings that produced it, in this order):

  1. findings precomputed for the profile: action control and unknown tool (upstream disabled,
     denied or not-allowed actions, read_only upstream vs a write, new actions, unknown tool),
     for a resource a URI that names a never-read path;
  2. suspension of the agent, principal, upstream or tool             -> deny
  3. pinned definition hash differs from the tool's current one      -> deny (tools only)
  4. argument conditions: never-read paths                           -> deny;
     recipients/URLs may drop E/U; amounts may raise the category
  5. state store unavailable: writes                                 -> deny (reads: configurable)
  6. explicit rules, in file order                                   -> their action
  7. category in approval_required_actions                           -> hold (cannot be unbound)
  8. only if no explicit rule matched: approval_logged_actions -> allow (logged),
     otherwise the default for the effect (read / write / destructive)
  9. first invocation of the tool (per tool or per principal+tool)   -> hold (tools only)
 10. the call can send data out (E) and the session's legs with the call's cover P, U and E
     (trifecta; the reason names the calls that contributed P and U) -> hold (strict: deny)
 11. a call that acts on the world (a write, or E) carries a value that arrived in untrusted
     content (`policy.provenance`)                                    -> hold

Any exception while evaluating yields deny with rule id `error.fail_closed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from policy.conditions import NOTHING, Outcome
from policy.config import FIRST_USE_CATEGORY, PolicyFile
from policy.explain import render
from policy.hashing import content_revision
from policy.models import (
    ALL_LEGS,
    CallState,
    Decision,
    Effect,
    Leg,
    Mode,
    ToolCall,
    ToolDefinition,
)
from policy.plan import Finding
from policy.profile import ToolProfile
from policy.profiler import Profiler
from policy.reasons import provenance_findings, trifecta_reason
from policy.results import result_legs
from policy.rules import ALLOW, DENY, EFFECT_NAME, HOLD, RANK
from policy.upstream_table import UpstreamTable

_E = frozenset({Leg.E})
_LEG_E = Leg.E
_new_tuple = tuple.__new__
_PIN_REASON = "the tool's definition changed since it was approved; an admin must re-approve"


class CompiledPolicy:
    """A validated, compiled policy. Immutable after construction; safe to share across threads
    and to swap atomically on reload (the gateway replaces its reference)."""

    def __init__(self, model: PolicyFile, origin: str | None = None) -> None:
        self.model = model
        self.origin = origin
        self.revision = content_revision(model.model_dump(mode="json"))
        self._required = frozenset(model.approval_required_actions)
        self._logged = frozenset(model.approval_logged_actions)
        self._store_down_reads_deny = model.defaults.store_unavailable_reads == "deny"
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
        self._profiler = Profiler(model, self.revision, self._default)

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
        """'both' (per session and per principal over `legs_window_seconds`), 'session' or 'principal'."""
        return self.model.legs.scope

    @property
    def legs_window_seconds(self) -> int:
        """Sliding window over which a principal's legs and untrusted values accumulate."""
        return self.model.legs.window_seconds

    @property
    def legs_session_ttl_seconds(self) -> int:
        """How long a session's legs and untrusted values are kept after their last change."""
        return self.model.legs.session_ttl_seconds

    @property
    def memory_limit(self) -> int:
        """Untrusted values remembered per session and per principal."""
        return self.model.legs.memory_limit

    def upstream_mode(self, upstream: str) -> Mode:
        """'enforce' or 'monitor' for an upstream (its own setting, else the policy's)."""
        return self._upstream(upstream).cfg.mode or self.model.mode

    def trusts_annotations(self, upstream: str) -> bool:
        """Whether this upstream's MCP annotations are believed."""
        return self._upstream(upstream).cfg.trust_annotations

    def _upstream(self, name: str) -> UpstreamTable:
        return self._profiler.upstream(name)

    # -- profiles ---------------------------------------------------------------------------
    def profile(self, upstream: str, tool: ToolDefinition) -> ToolProfile:
        """Classify one tool and precompile everything `decide()` needs for it."""
        return self._profiler.tool(upstream, tool)

    def resource_profile(self, upstream: str, uri: str) -> ToolProfile:
        """Classify one resource URI of an upstream (kind 'resource', effect read) for
        `resources/read` and `resources/subscribe`. Cache it per (upstream, URI) like a tool's.

        Legs come from the `resources` entry (exact URI, then globs in file order), else the
        upstream's catalog app, else P+U (fail closed; not held by itself)."""
        return self._profiler.resource(upstream, uri)

    def prompt_profile(self, upstream: str, prompt: Mapping[str, Any]) -> ToolProfile:
        """Classify one prompt of an upstream from its MCP `Prompt` object (name, description,
        arguments): kind 'prompt', effect read, for `prompts/get`. Raises ValueError without a name.

        Legs come from the `prompts` entry (exact name, then globs in file order), else the
        upstream's catalog app, else P+U (fail closed; not held by itself)."""
        return self._profiler.prompt(upstream, ToolDefinition.from_mcp_prompt(prompt))

    def visible(self, profile: ToolProfile) -> bool:
        """False when action control hides the tool, resource or prompt (filter it out of
        `tools/list`, `resources/list`, `prompts/list`)."""
        return self._fresh(profile).plan.visible

    def _fresh(self, profile: ToolProfile) -> ToolProfile:
        # a profile compiled under an older revision (hot reload) is recompiled, never trusted
        if profile.policy_revision == self.revision:
            return profile
        return self._profiler.recompile(profile)

    # -- decisions --------------------------------------------------------------------------
    def decide(self, call: ToolCall, profile: ToolProfile, state: CallState) -> Decision:
        """Decide one call. Pure and deterministic; never raises (fails closed)."""
        try:
            return self.evaluate(call, profile, state)[0]
        except Exception as exc:
            return self._fail_closed(profile, state, exc)

    def evaluate(
        self, call: ToolCall, profile: ToolProfile, state: CallState, trail: bool = False
    ) -> tuple[Decision, list[Finding], Outcome]:
        """`decide()` plus the full finding trail and the argument-condition outcome (for explain).

        Written for speed: the hot path is a few set/dict operations and one tuple build.
        """
        if profile.policy_revision != self.revision:
            profile = self._profiler.recompile(profile)
        plan = profile.plan
        findings = list(plan.static)
        top = plan.static_top
        legs_before = state.session_legs
        suspended = state.suspended
        if suspended:
            for key in (f"agent:{call.agent}", f"principal:{call.principal}", plan.suspend_upstream, plan.suspend_tool):
                if key in suspended:
                    findings.append((DENY, "suspended", f"{key} is suspended"))
                    top = DENY
        pin_changed = state.pinned_hash is not None and plan.pins and state.pinned_hash != profile.definition_hash
        if pin_changed:
            findings.append((DENY, "pin.changed", _PIN_REASON))
            top = DENY
        out = plan.conditions.evaluate(call.arguments, trail) if plan.conditions.active else NOTHING
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
                        top = DENY
            for reason in out.deny:
                findings.append((DENY, "condition.path_deny", reason))
                top = DENY
        if not state.store_ok and (effect is not Effect.READ or Leg.E in legs or self._store_down_reads_deny):
            findings.append((DENY, "store.unavailable", "the state store is unreachable: failing closed"))
            top = DENY
        matched = False
        for rule in plan.rules_for(call):
            if rule.matches(call, category, effect, legs, legs_before):
                findings.append((rule.rank, rule.rule_id, rule.reason))
                matched = True
                if rule.rank > top:
                    top = rule.rank
        logged = False
        if category is not None and category in self._required_findings:
            findings.append(self._required_findings[category])
            top = max(top, HOLD)
        if not matched:
            if category is not None and category in self._logged_findings:
                findings.append(self._logged_findings[category])
                logged = True
                top = max(top, ALLOW)
            else:
                # the plan's copy avoids hashing an Enum (a Python-level __hash__) on the hot path
                default = plan.default_finding if effect is profile.effect else self._default[effect]
                findings.append(default)
                top = max(top, default[0])
        first_use = plan.first_use and not state.tool_used_before  # False in resource/prompt plans
        if first_use:
            findings.append((HOLD, "first_use", f"first invocation of {profile.namespaced} needs a human"))
            top = max(top, HOLD)
        legs_after = legs_before | legs
        # Only a call that can send data out is held for the trifecta: a read adds no exit.
        trifecta = _LEG_E in legs and legs_after >= ALL_LEGS
        if trifecta:
            finding = self._trifecta
            findings.append((finding[0], finding[1], trifecta_reason(legs_before, state.leg_sources)))
            top = max(top, finding[0])
        if (state.tainted or state.saturated) and (effect is not Effect.READ or _LEG_E in legs):
            for finding in provenance_findings(call.arguments, state.tainted, state.saturated):
                findings.append(finding)
                top = max(top, finding[0])
        rule_ids: tuple[str, ...]
        reasons: tuple[str, ...]
        if len(findings) == 1:
            rule_ids, reasons = (findings[0][1],), (findings[0][2],)
        else:
            winners = [f for f in findings if f[0] == top]
            rule_ids, reasons = tuple(f[1] for f in winners), tuple(f[2] for f in winners)
        if first_use:
            categories: tuple[str, ...] = (category, FIRST_USE_CATEGORY) if category else (FIRST_USE_CATEGORY,)
            category = category or FIRST_USE_CATEGORY
        else:
            categories = (category,) if category else ()
        # tuple.__new__ skips NamedTuple's keyword binding: a third of the cost of building a Decision
        decision: Decision = _new_tuple(
            Decision,
            (
                EFFECT_NAME[top],
                legs_before,
                legs_after,
                category,
                rule_ids,
                reasons,
                self.revision,
                plan.mode,
                trifecta,
                first_use,
                pin_changed,
                logged and top == ALLOW,
                categories,
                legs,
            ),
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
        self,
        profile: ToolProfile,
        result: Mapping[str, Any],
        arguments: Mapping[str, Any] | None = None,
        known: frozenset[Leg] = frozenset(),
    ) -> frozenset[Leg]:
        """Legs a result adds to the session: P for secrets, U for untrusted content.

        `result` is a `tools/call`, `resources/read` (`contents`) or `prompts/get` (`messages`)
        result, with the matching profile. U comes from the profile being a U one (unless a
        tool's `arguments` show an allowlisted URL) or from content whose URI is on an http(s)
        host outside the URL allowlist. Legs in `known` (already the session's) are not looked
        for again.
        """
        return result_legs(self._fresh(profile), result, arguments, known)

    def trifecta_capable(self, profiles: Iterable[ToolProfile]) -> bool:
        """True when the profiles together span P, U and E (a session could complete the trifecta)."""
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
        """A person-readable account of the decision: the kind of object, the entry that classified
        it, conditions, every rule (`policy.explain.render`)."""
        return render(self, call, profile, state, pinned_definition)
