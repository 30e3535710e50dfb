"""The upstreams, named like the suites agents really get: each a list of tool definitions."""

from __future__ import annotations

from load_tests.agent_corpus.model import ToolDef
from load_tests.agent_corpus.suites.business import CRM, GITHUB, WEB
from load_tests.agent_corpus.suites.personal import BANKING, SLACK, TRAVEL
from load_tests.agent_corpus.suites.workspace import WORKSPACE

SUITES: dict[str, tuple[ToolDef, ...]] = {
    "workspace": WORKSPACE, "slack": SLACK, "banking": BANKING, "travel": TRAVEL,
    "crm": CRM, "github": GITHUB, "web": WEB,
}


def tool_def(upstream: str, name: str) -> ToolDef:
    """The definition of ``upstream``'s tool ``name`` (KeyError if there is none)."""
    for t in SUITES[upstream]:
        if t.name == name:
            return t
    raise KeyError(f"{upstream} has no tool {name!r}")
