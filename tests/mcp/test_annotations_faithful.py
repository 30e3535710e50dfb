"""Tool annotations re-emitted faithfully: Triplock may make a hint stricter, never weaker.

Each hint is the stricter of the upstream's and the policy's: readOnlyHint true only if both say
read-only, destructiveHint true if either says so, openWorldHint true if either, idempotentHint
true only if both; a hint the upstream left out counts as the MCP default (the strict value).
End to end: an official-SDK upstream over HTTP declares each combination, a real gateway whose
policy classifies each tool fronts it, and the SDK client lists what agents see. Before, the
policy's view replaced the upstream's hints, so ``send_email``'s ``destructiveHint: true`` came
out ``false``.

Run the upstream alone: ``python -m tests.mcp.test_annotations_faithful --port 8943``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from gateway.mcp.catalog import Catalog, UpstreamListing, no_weaker_hints
from tests.support import PY, free_port, gateway_cmd, running, serve_upstream_main, write_config

# tool -> (what the upstream declares, or None for no annotations at all)
UPSTREAM: dict[str, dict[str, Any] | None] = {
    "send_email": {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": True},
    "lookup": {"title": "Look up", "readOnlyHint": True, "destructiveHint": False, "idempotentHint": True,
               "openWorldHint": False},
    "archive": {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
    "bare": None,
    "post": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False},
    "wipe": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False},
}
POLICY = """version: 1
name: annotations
first_use: {enabled: false}
defaults: {read: allow, write: allow, destructive: allow, unknown: hold}
upstreams:
  up:
    tools:
      send_email: {legs: [E], effect: write}
      lookup: {legs: [P], effect: read}
      archive: {legs: [P], effect: write}
      bare: {legs: [P], effect: read}
      post: {legs: [E], effect: write}
      wipe: {legs: [P], effect: destructive}
"""
# What agents see: the stricter of the two, hint by hint (the policy's own view is in the comment).
EXPECTED = {
    # policy: write, E. The case: the upstream's destructiveHint=true survives.
    "up__send_email": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True},
    # policy: read, P. Both read-only and closed world; idempotent only if both say so (the policy does not).
    "up__lookup": {"title": "Look up", "readOnlyHint": True, "destructiveHint": False, "idempotentHint": False,
                   "openWorldHint": False},
    # policy: write, P. The upstream's read-only claim does not outweigh the policy's write.
    "up__archive": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False,
                    "openWorldHint": False},
    # policy: read, P. The upstream said nothing: the MCP defaults (not read-only, destructive, open world).
    "up__bare": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True},
    # policy: write, E. Closed world by the upstream, open by the policy: open.
    "up__post": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": True},
    # policy: destructive, P. Not destructive by the upstream, destructive by the policy: destructive.
    "up__wipe": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": False},
}


def build_upstream() -> MCPServer:
    server: MCPServer = MCPServer("annotated", version="1.0.0", log_level="WARNING")

    def answer() -> str:
        return "ok"

    for name, hints in UPSTREAM.items():
        annotations = ToolAnnotations.model_validate(hints) if hints is not None else None
        server.add_tool(answer, name=name, description=f"The {name} tool.", annotations=annotations)
    return server


async def test_agents_see_each_hint_as_the_stricter_of_upstream_and_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    up, port = free_port(), free_port()
    cfg = write_config(tmp_path / "triplock.toml", port,
                       [{"name": "up", "transport": "http", "url": f"http://127.0.0.1:{up}/mcp"}],
                       policy={"file": str(policy)})
    base = f"http://127.0.0.1:{port}"
    with running([PY, "-m", "tests.mcp.test_annotations_faithful", "--port", str(up)], None), \
            running(gateway_cmd(cfg), base + "/readyz"):
        async with Client(base + "/mcp", mode="legacy") as client:
            tools = (await client.list_tools()).tools
    seen = {t.name: t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else None
            for t in tools}
    assert seen == EXPECTED


@pytest.mark.parametrize(
    ("upstream", "view", "expected"),
    [
        # a lenient value stays only where the upstream stated that same value
        ({"readOnlyHint": True}, {"readOnlyHint": True}, {"readOnlyHint": True}),
        (None, {"readOnlyHint": True, "openWorldHint": False}, {"readOnlyHint": False, "openWorldHint": True}),
        ({"destructiveHint": True}, {"destructiveHint": False}, {"destructiveHint": True}),
        ({"destructiveHint": False}, {"destructiveHint": False}, {"destructiveHint": False}),
        ({"idempotentHint": True}, {"idempotentHint": True}, {"idempotentHint": True}),
        ({"idempotentHint": "yes"}, {"idempotentHint": True}, {"idempotentHint": False}),  # not a boolean: no claim
        # the view's strict values and other keys pass as they are; a hint neither gives stays absent (strict)
        ({"openWorldHint": False}, {"openWorldHint": True, "title": "T"}, {"openWorldHint": True, "title": "T"}),
        ({"readOnlyHint": True}, {}, {}),
    ],
)
def test_no_weaker_hints(upstream: Any, view: dict[str, Any], expected: dict[str, Any]) -> None:
    shown = no_weaker_hints(upstream, {"name": "t", "annotations": view})
    assert shown == {"name": "t", "annotations": expected}


def test_the_catalog_applies_it_to_every_view() -> None:
    tool = {"name": "send", "annotations": {"destructiveHint": True}}
    catalog = Catalog([("u", "u", UpstreamListing(tools=[tool]))],
                      lambda _up, t: {**t, "annotations": {"readOnlyHint": False, "destructiveHint": False}})
    assert catalog.page("tools", None)["tools"] == [
        {"name": "u__send", "annotations": {"readOnlyHint": False, "destructiveHint": True}}
    ]


if __name__ == "__main__":
    sys.exit(serve_upstream_main(build_upstream, __doc__))
