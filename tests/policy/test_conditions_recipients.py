"""Recipient-bearing writes (issue 16, item 4): a calendar event or file share that names nobody sends
nothing out; an email with no recipient stays E; scheme-less URLs have a host."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Leg
from policy.conditions import url_host

from .conftest import call, state, tool

P, U, E = Leg.P, Leg.U, Leg.E
S: dict[str, Any] = {"type": "string"}
STRS: dict[str, Any] = {"type": "array", "items": S}
EVENT = {"title": S, "start_time": S, "description": S, "participants": STRS, "location": S}
SHARE = {"file_id": S, "email": S, "permission": {"type": "string", "enum": ["r", "rw"]}}
MAIL = {"recipients": STRS, "subject": S, "body": S}
PLAIN = CompiledPolicy.from_dict({})
ORG = CompiledPolicy.from_dict({"conditions": {"org_domains": ["example.com"], "url_allowlist": ["*.example.com"]}})


def decide(pol: CompiledPolicy, name: str, props: dict[str, Any], args: dict[str, Any], legs: str = "") -> Any:
    profile = pol.profile("suite", tool(name, props))
    return pol.decide(call("suite", name, args), profile, state(legs))


@pytest.mark.parametrize(
    "args",
    [
        {"title": "Focus time", "start_time": "2026-05-01 10:00"},
        {"title": "Focus time", "participants": []},
        {"title": "Focus time", "participants": ["", "  "]},
        {"title": "Focus time", "participants": None},
        {},
    ],
)
def test_a_calendar_event_with_no_participants_is_internal(args: dict[str, Any]) -> None:
    d = decide(PLAIN, "create_calendar_event", EVENT, args, legs="P+U")
    assert (d.effect, d.rule_ids, d.category, d.legs_after, d.trifecta) == (
        "hold",
        ("default.write",),
        "calendar_invite_internal",
        {P, U},
        False,
    )


@pytest.mark.parametrize(
    ("pol", "args", "category", "legs"),
    [
        (PLAIN, {"participants": ["eve@evil.test"]}, "calendar_invite_external", {E}),
        (PLAIN, {"participants": ["bob@example.com"]}, "calendar_invite_external", {E}),  # no org_domains
        (ORG, {"participants": ["bob@example.com"]}, "calendar_invite_internal", set()),
        (ORG, {"participants": ["bob@example.com", "eve@evil.test"]}, "calendar_invite_external", {E}),
        (PLAIN, {"title": "x", "guests_csv": "eve@evil.test"}, "calendar_invite_external", {E}),  # undeclared
        (ORG, {"title": "x", "location": "evil.test/meet"}, "calendar_invite_internal", set()),
    ],
)
def test_a_calendar_event_with_participants_follows_them(
    pol: CompiledPolicy, args: dict[str, Any], category: str, legs: set[Leg]
) -> None:
    d = decide(pol, "create_calendar_event", EVENT, args)
    assert (d.category, d.legs_after) == (category, legs)


def test_a_calendar_tool_that_declares_no_recipient_argument_stays_external() -> None:
    d = decide(PLAIN, "create_calendar_event", {"title": S}, {"title": "x"})
    assert (d.category, d.legs_after) == ("calendar_invite_external", {E})


@pytest.mark.parametrize(
    ("args", "category", "legs"),
    [
        ({"file_id": "f1"}, "drive_share_internal", set()),
        ({"file_id": "f1", "email": ""}, "drive_share_internal", set()),
        ({"file_id": "f1", "email": "eve@evil.test"}, "drive_share_external", {E}),
    ],
)
def test_a_file_share_follows_its_recipients(args: dict[str, Any], category: str, legs: set[Leg]) -> None:
    d = decide(PLAIN, "share_file", SHARE, args)
    assert (d.category, d.legs_after) == (category, legs)


def test_a_share_without_a_recipient_argument_may_make_a_public_link() -> None:
    d = decide(PLAIN, "share_file", {"file_id": S}, {"file_id": "f1"})
    assert (d.category, d.legs_after) == ("drive_share_external", {E})


@pytest.mark.parametrize("args", [{"subject": "hi", "body": "x"}, {"recipients": [], "body": "x"}])
def test_an_email_with_no_recipient_stays_e(args: dict[str, Any]) -> None:
    d = decide(PLAIN, "send_email", MAIL, args)
    assert (d.category, d.legs_after) == ("email_send", {E})
    assert d.rule_ids == ("approval_required:email_send", "default.write")


def test_the_explain_trail_says_why_the_event_is_internal() -> None:
    profile = PLAIN.profile("suite", tool("create_calendar_event", EVENT))
    out = profile.plan.conditions.evaluate({"title": "x"}, trail=True)
    assert (out.drop, out.category, out.notes) == (
        {E},
        "calendar_invite_internal",
        ("no recipient argument names anyone, and recipients are this tool's only way out: not E",),
    )


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("https://Docs.Example.com/x", "docs.example.com"),
        ("www.our-company.com", "www.our-company.com"),
        ("docs.example.com/page", "docs.example.com"),
        ("//host.example/x", "host.example"),
        ("localhost:8080/x", "localhost"),
        ("[::1]:8080/x", "::1"),
        ("bob@evil.test/x", "evil.test"),
        ("ftp://docs.example.com/", None),
        ("javascript:alert(1)", None),
        ("evil.test\\@docs.example.com", None),
        ("two words", None),
        ("", None),
    ],
)
def test_url_host(text: str, host: str | None) -> None:
    assert url_host(text) == host
