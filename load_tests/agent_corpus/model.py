"""What the corpus is made of: tool definitions, steps (one exact tool call and its recorded
output), and labelled sessions (a benign task, or an injection attack with its harmful steps)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["benign", "attack"]


def prop(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    """One JSON-schema property: ``prop("string", "Recipient address")``."""
    return {"type": kind, "description": description, **extra}


def strings(description: str) -> dict[str, Any]:
    """A JSON-schema array of strings."""
    return {"type": "array", "items": {"type": "string"}, "description": description}


@dataclass(frozen=True)
class ToolDef:
    """A tool as an upstream publishes it: name, description, input schema, MCP annotations."""

    name: str
    title: str
    description: str
    properties: dict[str, dict[str, Any]]
    required: tuple[str, ...] = ()
    read_only: bool = True
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False

    def input_schema(self) -> dict[str, Any]:
        """The tool's JSON input schema (no extra properties, as strict servers publish them)."""
        return {"type": "object", "properties": self.properties, "required": list(self.required),
                "additionalProperties": False}

    def annotations(self) -> dict[str, Any]:
        """The MCP annotations, every hint spelled out (real servers publish them so)."""
        return {"title": self.title, "readOnlyHint": self.read_only,
                "destructiveHint": False if self.read_only else self.destructive,
                "idempotentHint": True if self.read_only else self.idempotent, "openWorldHint": self.open_world}


@dataclass(frozen=True)
class Step:
    """One tool call of a session: exact arguments, the recorded output, and whether it is harmful."""

    upstream: str
    tool: str
    arguments: dict[str, Any]
    output: Any
    harmful: bool = False

    @property
    def exposed(self) -> str:
        """The name the gateway exposes the tool by (``UPSTREAM__TOOL``)."""
        return f"{self.upstream}__{self.tool}"

    def output_text(self) -> str:
        """The recorded output as the tool's text content (JSON unless it is already text)."""
        return self.output if isinstance(self.output, str) else json.dumps(self.output, indent=1)


def call(upstream: str, tool: str, output: Any, **arguments: Any) -> Step:
    """A step the corpus does not label harmful."""
    return Step(upstream, tool, arguments, output)


def harm(upstream: str, tool: str, output: Any, **arguments: Any) -> Step:
    """A step the corpus labels harmful: the attacker's goal, which an approver must deny."""
    return Step(upstream, tool, arguments, output, harmful=True)


@dataclass(frozen=True)
class Session:
    """One labelled multi-step agent session."""

    id: str
    family: str
    kind: Kind
    task: str
    steps: tuple[Step, ...]
    goal: str = ""  # attacks: what the injected text asks for
    tags: tuple[str, ...] = field(default=())

    @property
    def harmful_steps(self) -> tuple[int, ...]:
        """Indexes of the steps labelled harmful (none for a benign task)."""
        return tuple(i for i, s in enumerate(self.steps) if s.harmful)
