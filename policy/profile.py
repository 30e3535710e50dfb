"""`ToolProfile`: the engine's view of one tool, resource or prompt of an upstream.

A module of its own because a profile holds a compiled `Plan`, and `policy.plan` imports
rules, config and models: with `ToolProfile` in `policy.models` the import graph had a cycle.
Here it sits on top (profile -> plan -> rules -> config -> models) and nothing below imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policy.models import Effect, Leg, ProfileKind, ProfileSource, ToolDefinition
from policy.plan import Plan


@dataclass(frozen=True, eq=False)
class ToolProfile:
    """The engine's view of one upstream tool, resource or prompt, computed once per catalog refresh.

    `plan` holds everything precompiled for `decide()` (argument conditions, the rules that can
    apply, action control); it is bound to `policy_revision`, and `decide()` recompiles it if
    the policy was swapped since.

    `kind` says what the profile describes. For a resource, `tool` holds its URI and
    `definition` is a stand-in (`ToolDefinition(name=uri)`); for a prompt, `tool` holds the
    prompt name and `definition` comes from `ToolDefinition.from_mcp_prompt`. Resources and
    prompts are always reads (`effect` READ).
    """

    upstream: str
    tool: str
    legs: frozenset[Leg]
    effect: Effect
    category: str | None
    source: ProfileSource
    source_detail: str
    definition_hash: str
    definition: ToolDefinition
    policy_revision: str
    plan: Plan = field(repr=False)
    kind: ProfileKind = "tool"

    @property
    def namespaced(self) -> str:
        """The name agents see for a tool or prompt: `UPSTREAM__NAME` (for a resource, the same
        shape around its URI)."""
        return f"{self.upstream}__{self.tool}"

    @property
    def mcp_annotations(self) -> dict[str, bool]:
        """MCP tool annotations as Triplock sees the tool, to re-emit in `tools/list` (tools only)."""
        return {
            "readOnlyHint": self.effect is Effect.READ,
            "destructiveHint": self.effect is Effect.DESTRUCTIVE,
            "idempotentHint": False,
            "openWorldHint": Leg.U in self.legs or Leg.E in self.legs,
        }
