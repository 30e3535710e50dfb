"""Resources and prompts in the policy: classification, kind-aware rules, decisions, results, explain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from policy import CompiledPolicy, Leg, ToolProfile, load_preset
from policy.explain import render

from .conftest import call, demo_profiles, state, tool

P, U, E = Leg.P, Leg.U, Leg.E
SCHEMA_FILE = Path(__file__).parents[2] / "policy" / "schema.json"

BASE: dict[str, Any] = {
    "name": "rp",
    "first_use": {"enabled": True},
    "conditions": {"url_allowlist": ["*.example.com"], "deny_read_paths": ["**/.ssh/**", "**/.env"]},
    "upstreams": {
        "svc": {
            "tools": {"get_doc": {"legs": ["P"], "effect": "read", "category": "doc_read"}},
            "resources": {
                "svc://docs/*": {"legs": ["U"], "category": "glob_first"},
                "svc://docs/readme": {"legs": [], "category": "exact"},  # exact wins though listed after
                "svc://tagged/*": {"category": "tagged"},  # category only: legs fall back to P+U
                "svc://**": {"legs": ["P"], "category": "glob_second"},
            },
            "prompts": {
                "summarise": {"legs": ["P"], "category": "prompt_exact"},
                "sum*": {"legs": ["U"], "category": "prompt_glob"},
            },
        }
    },
}


def make(**overrides: Any) -> CompiledPolicy:
    return CompiledPolicy.from_dict({**BASE, **overrides})


def prompt(name: str, *args: str) -> dict[str, Any]:
    return {"name": name, "description": f"the {name} prompt", "arguments": [{"name": a} for a in args]}


def decide(policy: CompiledPolicy, profile: ToolProfile, args: dict[str, Any] | None = None, **st: Any) -> Any:
    return policy.decide(call(profile.upstream, profile.tool, args or {}), profile, state(**st))


# -- classification --------------------------------------------------------------------------------
def test_exact_uri_beats_a_glob_listed_before_it() -> None:
    r = make().resource_profile("svc", "svc://docs/readme")
    assert (r.kind, r.legs, r.category, r.source) == ("resource", frozenset(), "exact", "policy")
    assert r.plan.entry_where == "upstreams.svc.resources['svc://docs/readme']"


def test_globs_are_tried_in_file_order() -> None:
    # both 'svc://docs/*' and 'svc://**' match: the first in the file wins
    r = make().resource_profile("svc", "svc://docs/other")
    assert (r.legs, r.category) == ({U}, "glob_first")
    assert r.plan.entry_where == "upstreams.svc.resources['svc://docs/*']"


def test_star_stays_in_a_segment_and_double_star_crosses() -> None:
    r = make().resource_profile("svc", "svc://docs/a/b")  # '*' does not cross '/': falls to 'svc://**'
    assert r.category == "glob_second"
    other = make(upstreams={"svc": {"resources": {"x://a?b=[1]": {"legs": ["P"]}, "x://q*": {"legs": ["U"]}}}})
    # '?' and '[' are literal in URI patterns: an exact URI with a query string stays exact
    assert other.resource_profile("svc", "x://a?b=[1]").legs == {P}
    assert other.resource_profile("svc", "x://aXb=1").source == "unknown"
    assert other.resource_profile("svc", "x://q/deeper").source == "unknown"


def test_prompt_exact_name_beats_glob_and_glob_matches_others() -> None:
    policy = make()
    exact = policy.prompt_profile("svc", prompt("summarise"))
    globbed = policy.prompt_profile("svc", prompt("summary", "topic"))
    assert (exact.kind, exact.legs, exact.category) == ("prompt", {P}, "prompt_exact")
    assert (globbed.legs, globbed.category) == ({U}, "prompt_glob")
    assert globbed.plan.entry_where == "upstreams.svc.prompts['sum*']"
    assert globbed.definition.argument_names() == {"topic"}


def test_unclassified_resource_and_prompt_fail_closed_to_p_and_u() -> None:
    policy = make()
    for profile in (policy.resource_profile("svc", "other://x"), policy.prompt_profile("svc", prompt("draft"))):
        assert profile.legs == {P, U}
        assert profile.effect.value == "read"
        assert profile.source == "unknown"
        assert "unknown.tool" not in {f[1] for f in profile.plan.static}


def test_category_only_entry_keeps_the_fail_closed_legs() -> None:
    r = make().resource_profile("svc", "svc://tagged/1")
    assert (r.legs, r.category, r.source) == ({P, U}, "tagged", "unknown")
    assert "category from upstreams.svc.resources['svc://tagged/*']" in r.source_detail


def test_catalog_app_legs_classify_unlisted_resources() -> None:
    # only a declared `app:` makes an upstream a catalog app, never its name
    policy = make(upstreams={**BASE["upstreams"], "github": {"app": "github"}, "mail": {"app": "gmail"}})
    assert policy.resource_profile("github", "repo://a/b").legs == {P}  # github: P (+E, not for a read)
    gmail = policy.resource_profile("mail", "mail://1")
    assert (gmail.legs, gmail.source) == ({P, U}, "catalog")
    named = make().resource_profile("gmail", "mail://1")  # named like an app, not declared one
    assert (named.legs, named.source) == ({P, U}, "unknown")


def test_prompt_without_a_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="name"):
        make().prompt_profile("svc", {"description": "nameless"})


# -- decisions ---------------------------------------------------------------------------------------
def test_unclassified_resource_read_is_allowed_under_controlled_with_first_use_on() -> None:
    policy = load_preset("controlled")
    r = policy.resource_profile("elsewhere", "file:///srv/report.txt")
    d = decide(policy, r, used=False, pinned="sha256:something-else")
    assert d.effect == "allow"
    assert d.rule_ids == ("default.read",)
    assert (d.first_use, d.pin_changed) == (False, False)
    assert d.legs_after == {P, U}
    # a write tool nobody used yet is held: first_use is a tool-only plan flag (the preset spares reads)
    assert decide(policy, demo_profiles(policy)["send_email"], used=False).first_use is True
    assert decide(policy, demo_profiles(policy)["search_drive"], used=False).first_use is False


@pytest.mark.parametrize("preset", ["controlled", "open"])
def test_inbox_resource_then_external_send_is_the_trifecta(preset: str) -> None:
    policy = load_preset(preset)
    inbox = policy.resource_profile("demo", "workspace://inbox/m1")
    assert (inbox.legs, inbox.category) == ({P, U}, "email_read")
    read = decide(policy, inbox)
    assert read.effect == "allow" and read.legs_after == {P, U}
    send = demo_profiles(policy)["send_email"]
    d = policy.decide(
        call("demo", "send_email", {"to": "attacker@evil.test", "subject": "s", "body": "b"}),
        send,
        state(read.legs_after),
    )
    assert d.effect == "hold" and d.trifecta and "trifecta.hold" in d.rule_ids


def test_unclassified_resource_then_external_send_is_the_trifecta() -> None:
    policy = load_preset("controlled")
    read = decide(policy, policy.resource_profile("demo", "workspace://unlisted"))
    send = demo_profiles(policy)["post_to_chat"]
    d = policy.decide(call("demo", "post_to_chat", {"channel": "x", "text": "y"}), send, state(read.legs_after))
    assert d.trifecta is True and d.effect == "hold"


def test_tools_rule_does_not_hit_resources_and_kindless_rule_hits_all() -> None:
    rules = [
        {"id": "no-readme-tool", "action": "deny", "tools": ["svc://docs/readme", "get_*"]},
        {"id": "hold-exact", "action": "hold", "categories": ["exact"]},
    ]
    policy = make(rules=rules)
    d = decide(policy, policy.resource_profile("svc", "svc://docs/readme"))
    assert (d.effect, d.rule_ids) == ("hold", ("rule:hold-exact",))
    t = decide(policy, policy.profile("svc", tool("get_doc")))
    assert t.effect == "deny" and t.rule_ids == ("rule:no-readme-tool",)


def test_resource_and_prompt_rules_hit_only_their_kind() -> None:
    rules = [
        {"id": "deny-docs", "action": "deny", "resources": ["svc://docs/**"]},
        {"id": "deny-sum-prompts", "action": "deny", "prompts": ["sum*"]},
        {"id": "hold-both", "action": "hold", "tools": ["get_doc"], "prompts": ["draft"]},
    ]
    policy = make(rules=rules)
    assert decide(policy, policy.resource_profile("svc", "svc://docs/a/b")).rule_ids == ("rule:deny-docs",)
    assert decide(policy, policy.prompt_profile("svc", prompt("summary"))).rule_ids == ("rule:deny-sum-prompts",)
    # a tool named like the prompt glob is not matched by the prompt rule
    listed = policy.profile("svc", tool("summary_list"))
    assert [r.rule_id for r in listed.plan.rules] == []
    assert decide(policy, listed).effect == "allow"
    assert decide(policy, policy.prompt_profile("svc", prompt("draft"))).rule_ids == ("rule:hold-both",)
    assert decide(policy, policy.profile("svc", tool("get_doc"))).rule_ids[0] == "rule:hold-both"
    assert decide(policy, policy.resource_profile("svc", "svc://draft")).effect == "allow"


def test_disabled_upstream_denies_and_hides_resources_and_prompts() -> None:
    policy = make(upstreams={"svc": {"enabled": False}})
    for profile in (policy.resource_profile("svc", "svc://x"), policy.prompt_profile("svc", prompt("p"))):
        assert not policy.visible(profile)
        d = decide(policy, profile)
        assert (d.effect, d.rule_ids) == ("deny", ("upstream.disabled",))


def test_read_only_and_custom_action_control_let_resources_and_prompts_through() -> None:
    policy = make(
        upstreams={"a": {"action_control": "read_only"}, "b": {"action_control": "custom", "actions_allowed": ["x"]}}
    )
    for up in ("a", "b"):
        for profile in (policy.resource_profile(up, f"{up}://r"), policy.prompt_profile(up, prompt("p"))):
            assert policy.visible(profile)
            assert decide(policy, profile).effect == "allow"


def test_never_read_paths_deny_resource_uris_and_prompt_arguments() -> None:
    policy = make()
    key = policy.resource_profile("svc", "file:///home/u/.ssh/id_rsa")
    assert not policy.visible(key)
    assert decide(policy, key).rule_ids == ("condition.path_deny",)
    p = policy.prompt_profile("svc", prompt("explain_file", "path"))
    assert decide(policy, p, {"path": "/srv/app/.env"}).effect == "deny"
    assert decide(policy, p, {"path": "/srv/app/main.py"}).effect == "allow"


def test_prompt_arguments_never_relax_legs() -> None:
    # an allowlisted URL argument drops U for a U tool; for a prompt it proves nothing
    policy = make()
    p = policy.prompt_profile("svc", prompt("summary", "url"))
    assert decide(policy, p, {"url": "https://docs.example.com/a"}).legs_after == {U}


def test_suspension_keys_for_resources_and_prompts() -> None:
    policy = make()
    r = policy.resource_profile("svc", "svc://docs/readme")
    p = policy.prompt_profile("svc", prompt("summarise"))
    assert r.plan.suspend_tool == "resource:svc__svc://docs/readme"
    assert p.plan.suspend_tool == "prompt:svc__summarise"
    assert decide(policy, r, suspended=frozenset({"resource:svc__svc://docs/readme"})).effect == "deny"
    assert decide(policy, p, suspended=frozenset({"prompt:svc__summarise"})).effect == "deny"
    assert decide(policy, p, suspended=frozenset({"tool:svc__summarise"})).effect == "allow"


def test_profiles_from_an_older_revision_are_recompiled_as_their_kind() -> None:
    old, new = make(), make(upstreams={"svc": {"resources": {"svc://**": {"legs": ["E"]}}}})
    stale = old.resource_profile("svc", "svc://docs/readme")
    d = decide(new, stale)
    assert d.legs_after == {E} and d.first_use is False
    stale_prompt = old.prompt_profile("svc", prompt("summarise", "topic"))
    assert decide(new, stale_prompt, {"topic": "x"}).legs_after == {P, U}  # new has no prompt entries


# -- results -----------------------------------------------------------------------------------------
AWS = "AKIAIOSFODNN7EXAMPLE"


def test_resource_contents_with_a_secret_add_p() -> None:
    policy = make()
    r = policy.resource_profile("svc", "svc://docs/readme")  # legs: none
    text = {"contents": [{"uri": "svc://docs/readme", "mimeType": "text/plain", "text": f"key {AWS} end"}]}
    assert policy.inspect_result(r, text) == {P}
    blob = {"contents": [{"uri": "svc://docs/readme", "blob": "aGVsbG8="}]}
    assert policy.inspect_result(r, blob) == frozenset()


def test_resource_contents_from_a_remote_host_add_u_unless_allowlisted() -> None:
    policy = make()
    r = policy.resource_profile("svc", "svc://docs/readme")
    outside = {"contents": [{"uri": "https://evil.test/page", "text": "hi"}]}
    inside = {"contents": [{"uri": "https://wiki.example.com/page", "text": "hi"}]}
    assert policy.inspect_result(r, outside) == {U}
    assert policy.inspect_result(r, inside) == frozenset()


def test_u_resource_adds_u_whatever_it_returns() -> None:
    policy = make()
    r = policy.resource_profile("svc", "svc://docs/other")  # legs: U
    assert policy.inspect_result(r, {"contents": [{"uri": "svc://docs/other", "text": "hi"}]}) == {U}


def test_prompt_messages_with_secrets_and_remote_resources() -> None:
    policy = make()
    p = policy.prompt_profile("svc", prompt("summarise"))  # legs: P, so only the result can add U
    secret = {"messages": [{"role": "user", "content": {"type": "text", "text": f"use {AWS}"}}]}
    link = {"messages": [{"role": "user", "content": {"type": "resource_link", "uri": "https://evil.test/a"}}]}
    embedded = {
        "messages": [{"role": "assistant", "content": {"type": "resource", "resource": {"uri": "http://evil.test/b"}}}]
    }
    inside = {"messages": [{"role": "user", "content": {"type": "resource_link", "uri": "https://a.example.com/"}}]}
    plain = {"description": "d", "messages": [{"role": "user", "content": {"type": "text", "text": "hello"}}]}
    assert policy.inspect_result(p, secret) == {P}
    assert policy.inspect_result(p, link) == {U}
    assert policy.inspect_result(p, embedded) == {U}
    assert policy.inspect_result(p, inside) == frozenset()
    assert policy.inspect_result(p, plain) == frozenset()
    u_prompt = policy.prompt_profile("svc", prompt("summary"))  # legs: U
    assert policy.inspect_result(u_prompt, plain) == {U}


# -- explain and schema ------------------------------------------------------------------------------
def test_explain_names_the_kind_and_the_entry() -> None:
    policy = make()
    r = policy.resource_profile("svc", "svc://docs/other")
    out = policy.explain(call("svc", r.tool, {}), r, state())
    assert out.startswith("resource  svc://docs/other  (upstream 'svc')")
    assert "entry     upstreams.svc.resources['svc://docs/*']" in out
    p = policy.prompt_profile("svc", prompt("draft"))
    out = render(policy, call("svc", "draft", {}), p, state())
    assert out.startswith("prompt    svc__draft")
    assert "entry     none: no prompt entry" in out and "decided by: unknown" in out
    t = policy.profile("svc", tool("get_doc"))
    assert policy.explain(call("svc", "get_doc"), t, state()).startswith("tool      svc__get_doc")


def test_schema_file_describes_resources_prompts_and_rule_kinds() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    upstream = schema["$defs"]["UpstreamPolicy"]["properties"]
    assert {"resources", "prompts"} <= set(upstream)
    assert {"resources", "prompts"} <= set(schema["$defs"]["Rule"]["properties"])
    jsonschema.validate(BASE | {"rules": [{"id": "r", "action": "deny", "resources": ["svc://**"]}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"upstreams": {"svc": {"resources": {"x://a": {"effect": "write"}}}}}, schema)
