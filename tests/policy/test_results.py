"""Result inspection: secrets add P, untrusted sources add U."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Leg

from .conftest import tool

P, U = Leg.P, Leg.U
POLICY = CompiledPolicy.from_dict(
    {
        "conditions": {"url_allowlist": ["*.example.com"]},
        "upstreams": {
            "svc": {
                "tools": {"get_doc": {"legs": ["P"], "effect": "read"}, "fetch": {"legs": ["U", "E"], "effect": "read"}}
            }
        },
    }
)
DOC = POLICY.profile("svc", tool("get_doc"))
FETCH = POLICY.profile("svc", tool("fetch", {"url": {}}))


def text(s: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": s}]}


@pytest.mark.parametrize(
    "secret",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "ghp_" + "a" * 36,
        "github_pat_" + "B" * 30,
        "xoxb-1234567890-abcdefghij",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_secrets_add_p(secret: str) -> None:
    assert POLICY.inspect_result(FETCH, text(f"config: {secret} end")) >= {P}
    assert POLICY.inspect_result(DOC, {"structuredContent": {"nested": [{"v": secret}]}}) == {P}


def test_plain_text_adds_nothing() -> None:
    assert POLICY.inspect_result(DOC, text("the quarterly numbers are fine; AKIA is a prefix")) == frozenset()


def test_untrusted_tool_adds_u_unless_arguments_show_allowlisted_url() -> None:
    assert POLICY.inspect_result(FETCH, text("hello")) == {U}
    assert POLICY.inspect_result(FETCH, text("hello"), {"url": "https://wiki.example.com/a"}) == frozenset()
    assert POLICY.inspect_result(FETCH, text("hello"), {"url": "https://evil.test/a"}) == {U}


def test_resource_links_outside_allowlist_add_u() -> None:
    inside = {"content": [{"type": "resource_link", "uri": "https://docs.example.com/a", "name": "a"}]}
    outside = {"content": [{"type": "resource_link", "uri": "https://evil.test/a", "name": "a"}]}
    embedded = {"content": [{"type": "resource", "resource": {"uri": "https://evil.test/b", "text": "x"}}]}
    local = {"content": [{"type": "resource_link", "uri": "file:///tmp/a", "name": "a"}]}
    assert POLICY.inspect_result(DOC, inside) == frozenset()
    assert POLICY.inspect_result(DOC, outside) == {U}
    assert POLICY.inspect_result(DOC, embedded) == {U}
    assert POLICY.inspect_result(DOC, local) == frozenset()


def test_hostile_nesting_does_not_crash() -> None:
    deep: Any = "AKIAIOSFODNN7EXAMPLE"
    for _ in range(500):
        deep = [deep]
    assert POLICY.inspect_result(DOC, {"structuredContent": deep}) == frozenset()


def test_legs_the_session_already_has_are_not_looked_for_again() -> None:
    secret = text("key AKIAIOSFODNN7EXAMPLE end")
    # Without `known` both legs are found; with it, only what is new comes back.
    assert POLICY.inspect_result(FETCH, secret) == {P, U}
    assert POLICY.inspect_result(FETCH, secret, known=frozenset({P})) == {U}
    assert POLICY.inspect_result(FETCH, secret, known=frozenset({U})) == {P}
    assert POLICY.inspect_result(FETCH, secret, known=frozenset({P, U})) == frozenset()
