"""Human-readable explanation of one decision: the rule trail `triplock policy explain` prints.

`render` takes any `Evaluator` (in practice a `CompiledPolicy`), so this module does not import
the engine and the engine can import it: no import cycle, not even under TYPE_CHECKING.
"""

from __future__ import annotations

import difflib
from typing import Protocol

from policy.conditions import Outcome
from policy.hashing import canonical_json, definition_document, definition_hash
from policy.models import CallState, Decision, Legs, ToolCall, ToolDefinition
from policy.plan import Finding
from policy.profile import ToolProfile
from policy.rules import EFFECT_NAME


class Evaluator(Protocol):
    """What `render` needs of a policy: its name, revision, and both ways of deciding."""

    @property
    def name(self) -> str:
        """The policy's name."""
        ...

    @property
    def revision(self) -> str:
        """The policy's content revision."""
        ...

    def evaluate(
        self, call: ToolCall, profile: ToolProfile, state: CallState, trail: bool = False
    ) -> tuple[Decision, list[Finding], Outcome]:
        """The decision with its full finding trail and the argument-condition outcome."""
        ...

    def decide(self, call: ToolCall, profile: ToolProfile, state: CallState) -> Decision:
        """The decision alone (fails closed)."""
        ...


def pin_diff(old: ToolDefinition, new: ToolDefinition) -> str:
    """Unified diff of two tool definitions as canonical, indented JSON ('' when identical)."""
    a = canonical_json(definition_document(old), indent=2).splitlines()
    b = canonical_json(definition_document(new), indent=2).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "pinned", "current", lineterm=""))


def subject_lines(profile: ToolProfile) -> list[str]:
    """The first lines of an explanation: what kind of object it is and what classified it."""
    if profile.kind == "resource":
        head = f"resource  {profile.tool}  (upstream {profile.upstream!r})"
    elif profile.kind == "prompt":
        head = f"prompt    {profile.namespaced}  (upstream {profile.upstream!r}, prompt {profile.tool!r})"
    else:
        head = f"tool      {profile.namespaced}  (upstream {profile.upstream!r}, tool {profile.tool!r})"
    where = profile.plan.entry_where
    entry = where if where is not None else f"none: no {profile.kind} entry of the policy file matches"
    lines = [head, f"entry     {entry}"]
    if profile.kind != "tool":
        lines.append(f"          a {profile.kind} is always a read; first-use holds and pins apply to tools only")
    return lines


def render(
    policy: Evaluator,
    call: ToolCall,
    profile: ToolProfile,
    state: CallState,
    pinned_definition: ToolDefinition | None = None,
) -> str:
    """Render the decision for `call` with every finding, in evaluation order."""
    error: str | None = None
    outcome: Outcome | None
    try:
        decision, findings, outcome = policy.evaluate(call, profile, state, trail=True)
    except Exception as exc:  # explain what decide() would do: fail closed
        decision = policy.decide(call, profile, state)
        findings, outcome = [], None
        error = f"{type(exc).__name__}: {exc}"
    lines = subject_lines(profile)
    lines += [
        f"policy    {policy.name} {policy.revision}  mode {decision.mode}",
        f"profile   legs {Legs.format(profile.legs)}, effect {profile.effect.value}, "
        f"category {profile.category or '-'}",
        f"          decided by: {profile.source} ({profile.source_detail})",
    ]
    if profile.kind != "resource":  # a resource's definition is a stand-in: its hash says nothing
        lines.append(f"          definition {profile.definition_hash}")
    lines.append(f"caller    principal {call.principal!r}, agent {call.agent!r}, groups {sorted(call.groups)}")
    if outcome is not None and outcome.notes:
        lines.append("arguments")
        lines.extend(f"          - {note}" for note in outcome.notes)
    lines.append(
        f"legs      session {Legs.format(decision.legs_before)} -> {Legs.format(decision.legs_after)}"
        + ("   TRIFECTA" if decision.trifecta else "")
    )
    lines.append("trail     (deny > hold > allow; * marks the findings that decided)")
    winners = set(decision.rule_ids)
    for rank, rule_id, reason in findings:
        mark = "*" if rule_id in winners and EFFECT_NAME[rank] == decision.effect else " "
        lines.append(f"        {mark} {EFFECT_NAME[rank]:<5} {rule_id:<40} {reason}")
    if error:
        lines.append(f"          ! evaluation error {error}: failing closed")
    verdict = decision.effect.upper()
    if decision.mode == "monitor":
        verdict += " (monitor mode: recorded, not enforced)"
    if decision.logged:
        verdict += " (logged)"
    lines.append(f"decision  {verdict}  category {decision.category or '-'}")
    if decision.pin_changed:
        lines.append(f"pin       pinned {state.pinned_hash} != current {profile.definition_hash}")
        if pinned_definition is not None and definition_hash(pinned_definition) != profile.definition_hash:
            lines.append(pin_diff(pinned_definition, profile.definition))
    return "\n".join(lines)
