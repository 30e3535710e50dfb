"""Value types shared by the whole engine: legs, effects, tools, calls, state and decisions.

`ToolProfile` lives in `policy.profile`: it holds a compiled `Plan`, and keeping it out of this
module keeps the import graph of `policy/` acyclic (every module may import this one).

Per-call values (`ToolCall`, `CallState`, `Decision`) are `typing.NamedTuple`s: immutable like a
frozen dataclass, but built in well under a microsecond (a 12-field frozen dataclass costs ~4 µs
because every field goes through `object.__setattr__`), which matters on the hot path.
Per-tool values (`ToolDefinition`, `policy.profile.ToolProfile`) are frozen dataclasses: built once per catalog
refresh, so clarity wins there.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple


class Leg(enum.StrEnum):
    """One leg of the lethal trifecta."""

    P = "P"  # private data read
    U = "U"  # untrusted input ingested
    E = "E"  # external send / state change


class Effect(enum.StrEnum):
    """What a tool does to the world: `read` is provably read-only; anything else is a write."""

    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"


EMPTY_MAP: Mapping[str, str] = MappingProxyType({})
ALL_LEGS: frozenset[Leg] = frozenset(Leg)
NO_LEGS: frozenset[Leg] = frozenset()
_LEG_ORDER = {Leg.P: 0, Leg.U: 1, Leg.E: 2}


class Legs(frozenset[Leg]):
    """A set of legs with parsing and formatting helpers; a `Legs` *is* a `frozenset[Leg]`."""

    ALL: frozenset[Leg] = ALL_LEGS
    NONE: frozenset[Leg] = NO_LEGS

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> Legs:
        """Parse 'P,U', 'P+U', 'PU', ['P', 'U'] (case-insensitive) into legs; '' or None is empty."""
        if text is None:
            return cls()
        items: Iterable[str]
        if isinstance(text, str):
            cleaned = text.replace("+", ",").replace(" ", ",")
            parts = [p for p in cleaned.split(",") if p]
            # 'PUE' written without separators
            items = [c for p in parts for c in p] if all(len(p) > 1 for p in parts) else parts
        else:
            items = text
        legs = []
        for item in items:
            try:
                legs.append(Leg(item.strip().upper()))
            except ValueError:
                raise ValueError(f"unknown leg {item!r}: expected P, U or E") from None
        return cls(legs)

    @staticmethod
    def format(legs: Iterable[Leg]) -> str:
        """Format legs in P, U, E order as 'P+U'; the empty set is '-'."""
        ordered = sorted(legs, key=_LEG_ORDER.__getitem__)
        return "+".join(leg.value for leg in ordered) or "-"


@dataclass(frozen=True)
class ToolDefinition:
    """A tool as an upstream declares it. Everything in it is covered by the pin hash."""

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] | None = None
    annotations: Mapping[str, Any] | None = None

    @classmethod
    def from_mcp(cls, tool: Mapping[str, Any]) -> ToolDefinition:
        """Build from an MCP `Tool` object as JSON (`inputSchema`, `outputSchema`, `annotations`)."""
        return cls(
            name=str(tool["name"]),
            description=str(tool.get("description") or ""),
            input_schema=dict(tool.get("inputSchema") or {}),
            output_schema=tool.get("outputSchema"),
            annotations=tool.get("annotations"),
        )

    @classmethod
    def from_mcp_prompt(cls, prompt: Mapping[str, Any]) -> ToolDefinition:
        """Build from an MCP `Prompt` object as JSON (`name`, `description`, `arguments`).

        The prompt's arguments become an input schema (name -> description, plus `required`),
        so argument conditions and the definition hash see them as they see a tool's.
        Raises ValueError when `name` is missing or not a string.
        """
        name = prompt.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("an MCP prompt needs a non-empty string 'name'")
        props: dict[str, Any] = {}
        required: list[str] = []
        raw_args = prompt.get("arguments")
        for arg in raw_args if isinstance(raw_args, list) else ():
            if not isinstance(arg, Mapping) or not isinstance(arg.get("name"), str):
                continue
            props[arg["name"]] = {"type": "string", "description": str(arg.get("description") or "")}
            if arg.get("required") is True:
                required.append(arg["name"])
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        return cls(name=name, description=str(prompt.get("description") or ""), input_schema=schema)

    def argument_names(self) -> frozenset[str]:
        """Names of the properties the input schema declares."""
        props = self.input_schema.get("properties") if isinstance(self.input_schema, Mapping) else None
        return frozenset(props) if isinstance(props, Mapping) else frozenset()


ProfileSource = Literal["policy", "annotations", "catalog", "heuristic", "unknown"]
# What a profile describes: a tool (tools/call), a resource (resources/read, resources/subscribe)
# or a prompt (prompts/get).
ProfileKind = Literal["tool", "resource", "prompt"]


class ToolCall(NamedTuple):
    """One `tools/call` as the gateway sees it, after authentication and routing.

    For `resources/read`/`resources/subscribe`, `tool` is the resource URI and `arguments` is
    `{}`; for `prompts/get`, `tool` is the prompt name and `arguments` the prompt's arguments.
    """

    principal: str
    agent: str | None
    groups: frozenset[str]
    session_id: str
    upstream: str
    tool: str
    arguments: Mapping[str, Any]


class CallState(NamedTuple):
    """What the gateway's store knows at call time.

    `suspended` holds ids 'agent:X', 'principal:Y', 'upstream:Z', 'tool:UPSTREAM__TOOL',
    'resource:UPSTREAM__URI' and 'prompt:UPSTREAM__PROMPT'.
    For a resource or prompt, `tool_used_before` and `pinned_hash` are ignored (first-use holds
    and pins apply to tools only).
    `store_ok` is False when the state store is unreachable: writes then fail closed.

    `session_legs` are the session's legs and the principal's over its window, together. The
    session's memory (`policy.provenance`) is read only for calls that can act on the world:
    `tainted` maps a value key that arrived in untrusted content ('host:evil.example') to the
    call it came from; `saturated` says more values arrived than are kept (fail closed);
    `leg_sources` maps 'P', 'U', 'E' to the call that first contributed the leg (for reasons).
    """

    session_legs: frozenset[Leg] = NO_LEGS
    tool_used_before: bool = False
    pinned_hash: str | None = None
    suspended: frozenset[str] = frozenset()
    store_ok: bool = True
    tainted: Mapping[str, str] = EMPTY_MAP
    leg_sources: Mapping[str, str] = EMPTY_MAP
    saturated: bool = False


DecisionEffect = Literal["allow", "hold", "deny"]
Mode = Literal["enforce", "monitor"]


class Decision(NamedTuple):
    """The engine's answer for one call. Immutable.

    `rule_ids`/`reasons` are the rules that produced the winning effect, in evaluation order;
    `explain()` shows the full trail. In `monitor` mode the gateway records `effect` but acts on
    `enforced_effect`, which is always 'allow'.
    """

    effect: DecisionEffect
    legs_before: frozenset[Leg]
    legs_after: frozenset[Leg]
    category: str | None
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_revision: str
    mode: Mode
    trifecta: bool
    first_use: bool
    pin_changed: bool
    logged: bool = False
    categories: tuple[str, ...] = ()
    call_legs: frozenset[Leg] = NO_LEGS  # the call's own legs after its arguments' conditions

    @property
    def enforced_effect(self) -> DecisionEffect:
        """What the gateway must do: `effect` in enforce mode, always 'allow' in monitor mode."""
        return self.effect if self.mode == "enforce" else "allow"

    @property
    def allowed(self) -> bool:
        """True when the gateway lets the call through now."""
        return self.enforced_effect == "allow"
