"""Trusted MCP annotations (issue 16, item 4): read-only + open world is U, plus E only for a fetch
whose arguments carry a URL; read-only + closed world is P; the tool's own name is never weakened."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Effect, Leg

from .conftest import call, demo_tool, state, tool

P, U, E = Leg.P, Leg.U, Leg.E
S: dict[str, Any] = {"type": "string"}
OPEN = {"readOnlyHint": True, "openWorldHint": True}
CLOSED = {"readOnlyHint": True, "openWorldHint": False}
TRUSTED = CompiledPolicy.from_dict({"upstreams": {"svc": {"trust_annotations": True}}})


def profile(name: str, props: dict[str, Any], ann: dict[str, Any]) -> tuple:
    p = TRUSTED.profile("svc", tool(name, props, ann))
    return p.source, p.effect, p.legs, p.source_detail


@pytest.mark.parametrize(
    ("name", "props", "ann", "legs", "detail"),
    [
        ("zap", {"topic": S}, OPEN, {U}, "annotations: read-only, open world (U)"),
        ("zap", {}, {"readOnlyHint": True}, {U}, "annotations: read-only, open world (U)"),  # MCP default: open
        ("zap", {"topic": S}, CLOSED, {P}, "annotations: read-only, closed world (P)"),
        ("zap", {"url": S}, OPEN, {U, E}, "annotations: read-only, open world, URL argument 'url': a fetch (U+E)"),
        (
            "zap",
            {"target": {"type": "string", "format": "uri"}},
            OPEN,
            {U, E},
            "annotations: read-only, open world, URL argument 'target': a fetch (U+E)",
        ),
    ],
)
def test_read_only_annotations_map_to_legs(
    name: str, props: dict[str, Any], ann: dict[str, Any], legs: set[Leg], detail: str
) -> None:
    assert profile(name, props, ann) == ("annotations", Effect.READ, legs, detail)


def test_one_open_world_read_no_longer_completes_the_trifecta_alone() -> None:
    p = TRUSTED.profile("svc", tool("zap", {"topic": S}, OPEN))
    d = TRUSTED.decide(call("svc", "zap", {"topic": "x"}), p, state())
    assert (d.effect, d.legs_after, d.trifecta) == ("allow", {U}, False)


def test_annotations_never_weaken_a_fetch_by_name() -> None:
    # a closed-world claim does not take U+E from a tool whose name says it opens web pages
    source, effect, legs, detail = profile("get_webpage", {"address": S}, CLOSED)
    assert (source, effect, legs) == ("annotations", Effect.READ, {P, U, E})
    assert detail == (
        "annotations: read-only, closed world (P); the tool's name adds U+E "
        "(name heuristics: read verb 'get', a fetch webpage (U+E))"
    )


def test_annotations_keep_the_names_nouns_and_a_writes_e() -> None:
    inbox = TRUSTED.profile("svc", demo_tool("read_inbox"))  # honest: read-only, open world
    assert (inbox.source, inbox.legs) == ("annotations", {P, U})
    lying = profile("send_email", {"to": S, "body": S}, OPEN)
    assert lying[:3] == ("annotations", Effect.READ, {U, E})


def test_write_annotations_take_the_category_from_the_name() -> None:
    p = TRUSTED.profile("svc", demo_tool("update_crm_record"))
    assert (p.source, p.effect, p.legs, p.category) == (
        "annotations",
        Effect.WRITE,  # destructiveHint false; openWorldHint absent: open (U+E)
        {U, E},
        "salesforce_record_create_update_delete",
    )


def test_annotations_of_an_untrusted_upstream_are_ignored() -> None:
    p = CompiledPolicy.from_dict({}).profile("svc", tool("zap", {"topic": S}, OPEN))
    assert (p.source, p.effect, p.legs) == ("unknown", Effect.WRITE, {P, U, E})
