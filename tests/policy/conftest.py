"""Shared helpers for policy tests: the demo upstream's tools and call/state builders."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from policy import CallState, CompiledPolicy, Leg, ToolCall, ToolDefinition, ToolProfile, load_preset

FIXTURES = Path(__file__).parent / "fixtures"
P, U, E = Leg.P, Leg.U, Leg.E

# The bundled demo upstream's tools, as it declares them (honest annotations).
DEMO_TOOLS: dict[str, dict[str, Any]] = {
    "read_inbox": {"props": {"folder": {"type": "string"}}, "ann": {"readOnlyHint": True, "openWorldHint": True}},
    "send_email": {
        "props": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
        "ann": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True},
    },
    "search_drive": {"props": {"query": {"type": "string"}}, "ann": {"readOnlyHint": True, "openWorldHint": False}},
    "fetch_url": {"props": {"url": {"type": "string"}}, "ann": {"readOnlyHint": True, "openWorldHint": True}},
    "update_crm_record": {
        "props": {"record_id": {"type": "string"}, "fields": {"type": "object"}},
        "ann": {"readOnlyHint": False, "destructiveHint": False},
    },
    "post_to_chat": {
        "props": {"channel": {"type": "string"}, "text": {"type": "string"}},
        "ann": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": True},
    },
}


def tool(
    name: str,
    props: Mapping[str, Any] | None = None,
    annotations: Mapping[str, Any] | None = None,
    description: str = "",
) -> ToolDefinition:
    """A tool definition with the given argument names."""
    return ToolDefinition(
        name=name,
        description=description,
        input_schema={"type": "object", "properties": dict(props or {})},
        annotations=annotations,
    )


def demo_tool(name: str) -> ToolDefinition:
    spec = DEMO_TOOLS[name]
    return tool(name, spec["props"], spec["ann"], description=f"demo {name}")


def call(
    upstream: str,
    name: str,
    args: Mapping[str, Any] | None = None,
    principal: str = "alice@example.com",
    agent: str | None = "agent-1",
    groups: frozenset[str] = frozenset(),
) -> ToolCall:
    return ToolCall(principal, agent, groups, "sess-1", upstream, name, dict(args or {}))


def state(
    legs: str | frozenset[Leg] = frozenset(),
    used: bool = True,
    pinned: str | None = None,
    suspended: frozenset[str] = frozenset(),
    store_ok: bool = True,
) -> CallState:
    from policy import Legs

    return CallState(Legs.parse(legs) if isinstance(legs, str) else legs, used, pinned, suspended, store_ok)


def demo_profiles(policy: CompiledPolicy, upstream: str = "demo") -> dict[str, ToolProfile]:
    return {name: policy.profile(upstream, demo_tool(name)) for name in DEMO_TOOLS}


@pytest.fixture(scope="session")
def controlled() -> CompiledPolicy:
    return load_preset("controlled")


@pytest.fixture(scope="session")
def lockdown() -> CompiledPolicy:
    return load_preset("lockdown")


@pytest.fixture(scope="session")
def open_policy() -> CompiledPolicy:
    return load_preset("open")
