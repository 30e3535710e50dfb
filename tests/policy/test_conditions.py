"""Argument-aware conditions: recipients, URL hosts, never-read paths, amounts."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Effect, Leg
from policy.conditions import normalise_path

from .conftest import call, state, tool

P, U, E = Leg.P, Leg.U, Leg.E
DOC: dict[str, Any] = {
    "conditions": {
        "org_domains": ["example.com"],
        "url_allowlist": ["docs.python.org", "*.example.com"],
        "deny_read_paths": ["**/.env", "**/.ssh/**", "**/.aws/credentials", "/etc/shadow"],
        "amounts": [{"args": ["amount"], "over": 1000, "category": "financial_transaction_any"}],
    },
    "upstreams": {
        "svc": {
            "tools": {
                "send_mail": {"legs": ["E"], "effect": "write", "category": "email_send"},
                "notify": {"legs": ["E"], "effect": "write", "conditions": {"recipient_args": ["whom"]}},
                "fetch": {"legs": ["U", "E"], "effect": "read"},
                "read_file": {"legs": ["P"], "effect": "read"},
                "get_balance": {"legs": ["P"], "effect": "read"},
            }
        }
    },
}
POLICY = CompiledPolicy.from_dict(DOC)


def run(name: str, args: dict[str, Any], props: list[str] | None = None, legs: str = "") -> Any:
    profile = POLICY.profile("svc", tool(name, {key: {} for key in (props if props is not None else args)}))
    return POLICY.decide(call("svc", name, args), profile, state(legs))


@pytest.mark.parametrize(
    ("to", "external"),
    [
        ("bob@example.com", False),
        ("Bob <bob@eu.example.com>", False),
        (["a@example.com", {"email": "b@example.com"}], False),
        ("bob@example.com.evil.test", True),
        ("bob@evil.test", True),
        ("bob@example.com, eve@evil.test", True),
        ("not an address", True),
        (42, True),
        ("eve@evil.test@example.com", False),  # the domain is what follows the last '@'
    ],
)
def test_recipient_domains(to: Any, external: bool) -> None:
    d = run("send_mail", {"to": to})
    assert (E in d.legs_after) is external
    assert d.category == ("email_send" if external else "email_send_internal")


def test_no_recipient_argument_keeps_e() -> None:
    assert E in run("send_mail", {"subject": "hi"}, props=["to", "subject"]).legs_after


def test_global_recipient_relaxation_needs_the_argument_declared() -> None:
    # the tool's schema does not declare 'to': an undeclared argument proves nothing
    assert E in run("send_mail", {"to": "bob@example.com"}, props=["body"]).legs_after


def test_tool_level_recipient_args_apply_without_schema() -> None:
    assert E not in run("notify", {"whom": "ops@example.com"}, props=[]).legs_after


@pytest.mark.parametrize(
    ("url", "dropped"),
    [
        ("https://docs.python.org/3/", True),
        ("https://wiki.example.com/x", True),
        ("https://example.com/", False),  # '*.example.com' is subdomains only
        ("https://docs.python.org.evil.test/", False),
        ("https://docs.python.org@evil.test/", False),  # userinfo trick: host is evil.test
        ("ftp://docs.python.org/", False),
        # scheme-less URLs are matched against the allowlist too
        ("docs.python.org/x", True),
        ("//docs.python.org/x", True),
        ("wiki.example.com", True),
        ("WWW.Example.com/page?q=1", True),
        ("evil.test/collect?d=1", False),
        ("docs.python.org@evil.test/x", False),  # userinfo trick without a scheme
        ("evil.test\\@docs.python.org/", False),  # browsers read '\\' as '/': the host is evil.test
        ("https://evil.test\\@docs.python.org/", False),
        ("javascript:alert(1)", False),
        ("docs.python.org x", False),
    ],
)
def test_url_allowlist_drops_u_and_e(url: str, dropped: bool) -> None:
    d = run("fetch", {"url": url})
    assert (d.legs_after == frozenset()) is dropped
    if not dropped:
        assert d.legs_after == {U, E}


@pytest.mark.parametrize(
    "path",
    [
        "/srv/app/.env",
        ".env",
        "C:\\Users\\me\\.ssh\\id_rsa",
        "~/.ssh/config",
        "/home/u/.aws/credentials",
        "/tmp/../etc/shadow",
        "file:///home/u/.ENV",
        "/srv/%2eenv/../.env",
    ],
)
def test_never_read_paths_deny(path: str) -> None:
    d = run("read_file", {"path": path})
    assert d.effect == "deny" and "condition.path_deny" in d.rule_ids


def test_path_in_an_unnamed_argument_is_still_checked() -> None:
    assert run("read_file", {"q": "/home/u/.ssh/id_ed25519"}).effect == "deny"


@pytest.mark.parametrize("path", ["/srv/app/env", "/srv/app/.env.d/readme", "notes about .env files"])
def test_ordinary_paths_pass(path: str) -> None:
    assert run("read_file", {"path": path}).effect == "allow"


@pytest.mark.parametrize(
    ("amount", "raised"),
    [(10, False), (1000, False), (1000.01, True), ("$2,500", True), ("lots", True), (-5000, True), (True, False)],
)
def test_amount_threshold_raises_category(amount: Any, raised: bool) -> None:
    d = run("get_balance", {"amount": amount})
    assert (d.category == "financial_transaction_any") is raised
    assert (d.effect == "hold") is raised
    if raised:
        assert E in d.legs_after


def test_amount_on_read_only_upstream_is_denied() -> None:
    doc = {**DOC, "upstreams": {"svc": {**DOC["upstreams"]["svc"], "action_control": "read_only"}}}
    pol = CompiledPolicy.from_dict(doc)
    p = pol.profile("svc", tool("get_balance"))
    assert pol.decide(call("svc", "get_balance", {"amount": 5000}), p, state()).effect == "deny"
    assert p.effect is Effect.READ


def test_normalise_path() -> None:
    assert normalise_path("C:\\A\\..\\B\\.ENV") == "c:/b/.env"
