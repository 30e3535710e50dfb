"""Unit tests for every rule of decide(), one behaviour each."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Effect, Leg, ToolProfile

from .conftest import call, state, tool

BASE: dict[str, Any] = {
    "name": "test",
    "upstreams": {
        "hr": {
            "tools": {
                "get_employee": {"legs": ["P"], "effect": "read"},
                "send_memo": {"legs": ["E"], "effect": "write", "category": "email_send"},
                "rename_team": {"legs": ["E"], "effect": "write"},
                "fire_everyone": {"legs": ["E"], "effect": "destructive"},
                "create_page": {"legs": ["E"], "effect": "write", "category": "notion_create_page_in_owned_workspace"},
                "read_web": {"legs": ["U"], "effect": "read"},
            }
        }
    },
}


def make(**overrides: Any) -> CompiledPolicy:
    doc = {**BASE, **overrides}
    return CompiledPolicy.from_dict(doc)


def prof(policy: CompiledPolicy, name: str, upstream: str = "hr", **kw: Any) -> ToolProfile:
    return policy.profile(upstream, tool(name, **kw))


def decide(
    policy: CompiledPolicy,
    name: str,
    args: dict[str, Any] | None = None,
    upstream: str = "hr",
    st: Any = None,
    **call_kw: Any,
) -> Any:
    return policy.decide(call(upstream, name, args, **call_kw), prof(policy, name, upstream), st or state())


# -- defaults and categories ---------------------------------------------------------------------
def test_read_is_allowed_by_default() -> None:
    d = decide(make(), "get_employee")
    assert (d.effect, d.rule_ids) == ("allow", ("default.read",))


def test_write_holds_by_default() -> None:
    d = decide(make(), "rename_team")
    assert (d.effect, d.rule_ids) == ("hold", ("default.write",))


def test_write_default_is_configurable() -> None:
    assert decide(make(defaults={"write": "allow"}), "rename_team").effect == "allow"


def test_destructive_default() -> None:
    assert decide(make(), "fire_everyone").effect == "hold"
    assert decide(make(defaults={"destructive": "deny"}), "fire_everyone").effect == "deny"


def test_approval_required_category_holds_even_when_writes_allowed() -> None:
    d = decide(make(defaults={"write": "allow"}), "send_memo", {"to": "x@evil.test"})
    assert d.effect == "hold"
    assert d.rule_ids == ("approval_required:email_send",)


def test_approval_required_cannot_be_unbound_by_an_allow_rule() -> None:
    rules = [{"id": "yes", "action": "allow", "tools": ["send_memo"]}]
    assert decide(make(rules=rules), "send_memo").effect == "hold"


def test_logged_category_is_allowed_and_marked_logged() -> None:
    d = decide(make(), "create_page")
    assert d.effect == "allow" and d.logged is True
    assert d.rule_ids == ("approval_logged:notion_create_page_in_owned_workspace",)


def test_logged_category_still_held_by_trifecta() -> None:
    d = decide(make(), "create_page", st=state("P,U"))
    assert d.effect == "hold" and d.logged is False


# -- unknown tools ------------------------------------------------------------------------------
def test_unknown_tool_is_a_write_touching_all_legs_and_holds() -> None:
    hr = {**BASE["upstreams"]["hr"], "new_actions_default": "hold"}
    policy = make(defaults={"write": "allow"}, upstreams={"hr": hr})
    p = prof(policy, "frobnicate")
    assert p.source == "unknown" and p.legs == {Leg.P, Leg.U, Leg.E} and p.effect is Effect.WRITE
    d = policy.decide(call("hr", "frobnicate"), p, state())
    assert d.effect == "hold" and "unknown.tool" in d.rule_ids
    assert d.trifecta  # P+U+E on its own


def test_unknown_tool_can_be_denied() -> None:
    hr = {**BASE["upstreams"]["hr"], "new_actions_default": "allow"}
    d = decide(make(defaults={"unknown": "deny"}, upstreams={"hr": hr}), "frobnicate")
    assert d.effect == "deny" and d.rule_ids == ("unknown.tool",)


def test_unknown_tool_is_denied_by_default_new_actions_setting() -> None:
    d = decide(make(), "frobnicate")
    assert d.effect == "deny" and d.rule_ids == ("action_control.new_action",)


# -- first use ----------------------------------------------------------------------------------
def test_first_use_holds_with_its_category() -> None:
    d = decide(make(), "get_employee", st=state(used=False))
    assert d.effect == "hold" and d.first_use
    assert d.rule_ids == ("first_use",)
    assert d.category == "mcp_first_invocation_of_tool"


def test_first_use_can_be_switched_off_only_with_the_category() -> None:
    required = ["email_send"]
    off = make(first_use={"enabled": False}, approval_required_actions=required)
    assert decide(off, "get_employee", st=state(used=False)).effect == "allow"
    default_list = make(first_use={"enabled": False})  # the 6.3 list then goes without the first-use category
    assert decide(default_list, "get_employee", st=state(used=False)).effect == "allow"
    with pytest.raises(ValueError, match=r"first_use\.enabled"):  # one setting says one thing
        make(first_use={"enabled": False}, approval_required_actions=["mcp_first_invocation_of_tool"])


def test_first_use_scope_is_exposed() -> None:
    assert make().first_use_scope == "tool"
    assert make(first_use={"scope": "principal_tool"}).first_use_scope == "principal_tool"


# -- suspension and pins ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key", ["agent:agent-1", "principal:alice@example.com", "upstream:hr", "tool:hr__get_employee"]
)
def test_suspension_denies(key: str) -> None:
    d = decide(make(), "get_employee", st=state(suspended=frozenset({key})))
    assert d.effect == "deny" and d.rule_ids == ("suspended",)


def test_suspension_of_someone_else_does_not_matter() -> None:
    d = decide(make(), "get_employee", st=state(suspended=frozenset({"agent:other", "tool:hr__send_memo"})))
    assert d.effect == "allow"


def test_changed_pin_denies_and_matching_pin_does_not() -> None:
    policy = make()
    p = prof(policy, "get_employee")
    ok = policy.decide(call("hr", "get_employee"), p, state(pinned=p.definition_hash))
    bad = policy.decide(call("hr", "get_employee"), p, state(pinned="sha256:old"))
    assert ok.effect == "allow" and not ok.pin_changed
    assert bad.effect == "deny" and bad.pin_changed and bad.rule_ids == ("pin.changed",)


def test_definition_hash_covers_description_and_annotations() -> None:
    policy = make()
    a = prof(policy, "get_employee")
    b = prof(policy, "get_employee", description="now also emails the data out")
    c = prof(policy, "get_employee", annotations={"readOnlyHint": True})
    assert len({a.definition_hash, b.definition_hash, c.definition_hash}) == 3


# -- action control (seed 6.2) ------------------------------------------------------------------
def test_read_only_upstream_denies_and_hides_writes() -> None:
    policy = make(upstreams={"hr": {**BASE["upstreams"]["hr"], "action_control": "read_only"}})
    assert decide(policy, "rename_team").rule_ids[0] == "action_control.read_only"
    assert not policy.visible(prof(policy, "rename_team"))
    assert policy.visible(prof(policy, "get_employee"))
    assert decide(policy, "get_employee").effect == "allow"


def test_custom_action_control() -> None:
    hr = {
        **BASE["upstreams"]["hr"],
        "action_control": "custom",
        "actions_allowed": ["get_*", "rename_team"],
        "actions_denied": ["fire_everyone"],
        "new_actions_default": "deny",
    }
    policy = make(upstreams={"hr": hr})
    assert decide(policy, "get_employee").effect == "allow"
    assert decide(policy, "rename_team").effect == "hold"  # allowed action, still a write
    d = decide(policy, "fire_everyone")
    assert d.effect == "deny" and "action_control.denied" in d.rule_ids
    assert decide(policy, "read_web").rule_ids == ("action_control.new_action",)
    assert not policy.visible(prof(policy, "read_web"))


def test_new_actions_default_hold_keeps_tool_visible() -> None:
    hr = {**BASE["upstreams"]["hr"], "action_control": "custom", "new_actions_default": "hold"}
    policy = make(upstreams={"hr": hr})
    assert policy.visible(prof(policy, "read_web"))
    assert decide(policy, "read_web").effect == "hold"


def test_allow_all_applies_new_actions_default_to_unknown_tools_only() -> None:
    policy = make(default_upstream={"new_actions_default": "deny"})
    assert decide(policy, "list_things", upstream="other").effect == "allow"
    assert decide(policy, "zorble", upstream="other").effect == "deny"


def test_disabled_upstream_denies_everything() -> None:
    policy = make(upstreams={"hr": {**BASE["upstreams"]["hr"], "enabled": False}})
    assert decide(policy, "get_employee").rule_ids == ("upstream.disabled",)
    assert not policy.visible(prof(policy, "get_employee"))


# -- trifecta, legs and store --------------------------------------------------------------------
def test_trifecta_hold_and_strict_deny() -> None:
    writes = {"write": "allow"}
    d = decide(make(defaults=writes), "rename_team", st=state("P,U"))
    assert d.effect == "hold" and d.trifecta and d.rule_ids == ("trifecta.hold",)
    assert decide(make(strict=True, defaults=writes), "rename_team", st=state("P,U")).effect == "deny"


def test_a_call_that_adds_no_exit_is_never_held_for_the_trifecta() -> None:
    d = decide(make(), "read_web", st=state("P,E"))  # U on top of P+E: the session now holds all three...
    assert (d.effect, d.trifecta, d.rule_ids) == ("allow", False, ("default.read",))  # ...but a read sends nothing
    assert d.legs_after == {Leg.P, Leg.U, Leg.E}


def test_two_legs_is_not_a_trifecta() -> None:
    d = decide(make(), "read_web", st=state("P"))
    assert d.effect == "allow" and d.legs_after == {Leg.P, Leg.U}


def test_legs_scope_settings_are_exposed() -> None:
    policy = make(legs={"scope": "principal", "window_seconds": 600})
    assert (policy.legs_scope, policy.legs_window_seconds) == ("principal", 600)
    assert make().legs_scope == "both"  # per session and per principal: no splitting across sessions
    assert (make().legs_window_seconds, make().legs_session_ttl_seconds) == (3600, 86400)


def test_store_unavailable_denies_writes_and_follows_policy_for_reads() -> None:
    assert decide(make(), "rename_team", st=state(store_ok=False)).rule_ids == ("store.unavailable",)
    assert decide(make(), "get_employee", st=state(store_ok=False)).effect == "allow"
    strict_reads = make(defaults={"store_unavailable_reads": "deny"})
    assert decide(strict_reads, "get_employee", st=state(store_ok=False)).effect == "deny"


# -- modes ---------------------------------------------------------------------------------------
def test_monitor_mode_records_but_does_not_block() -> None:
    d = decide(make(mode="monitor"), "rename_team", st=state(suspended=frozenset({"upstream:hr"})))
    assert d.effect == "deny" and d.mode == "monitor" and d.enforced_effect == "allow" and d.allowed


def test_monitor_mode_per_upstream() -> None:
    policy = make(upstreams={**BASE["upstreams"], "lab": {"mode": "monitor"}})
    assert decide(policy, "rename_team").enforced_effect == "hold"
    assert decide(policy, "rename_team", upstream="lab").enforced_effect == "allow"
    assert policy.upstream_mode("lab") == "monitor" and policy.upstream_mode("hr") == "enforce"


# -- explicit rules ------------------------------------------------------------------------------
def test_allow_rule_overrides_the_write_default() -> None:
    rules = [{"id": "ops-rename", "action": "allow", "tools": ["rename_*"], "groups": ["ops"]}]
    policy = make(rules=rules)
    assert decide(policy, "rename_team", groups=frozenset({"ops"})).rule_ids == ("rule:ops-rename",)
    assert decide(policy, "rename_team", groups=frozenset({"eng"})).effect == "hold"


def test_rules_match_principal_agent_category_effect_and_legs() -> None:
    rules = [
        {"id": "no-bob", "action": "deny", "principals": ["bob@example.com"]},
        {"id": "no-bot", "action": "deny", "agents": ["bot"]},
        {"id": "memo", "action": "deny", "categories": ["email_send"], "effects": ["write"]},
        {"id": "after-u", "action": "deny", "call_legs_any": ["P"], "session_legs_any": ["U"]},
    ]
    policy = make(rules=rules)
    assert decide(policy, "get_employee", principal="bob@example.com").rule_ids == ("rule:no-bob",)
    assert decide(policy, "get_employee", agent="bot").rule_ids == ("rule:no-bot",)
    assert decide(policy, "send_memo").rule_ids == ("rule:memo",)
    assert decide(policy, "get_employee", st=state("U")).rule_ids == ("rule:after-u",)
    assert decide(policy, "get_employee", st=state("E")).effect == "allow"


def test_rules_scoped_to_other_upstream_do_not_apply() -> None:
    rules = [{"id": "crm-only", "action": "deny", "upstreams": ["crm"]}]
    assert decide(make(rules=rules), "get_employee").effect == "allow"
    assert decide(make(rules=rules), "list_accounts", upstream="crm").rule_ids == ("rule:crm-only",)


def test_deny_beats_hold_beats_allow_and_rule_ids_keep_order() -> None:
    rules = [
        {"id": "a", "action": "allow"},
        {"id": "h", "action": "hold"},
        {"id": "d1", "action": "deny"},
        {"id": "d2", "action": "deny"},
    ]
    d = decide(make(rules=rules), "get_employee")
    assert d.effect == "deny" and d.rule_ids == ("rule:d1", "rule:d2")
    d = decide(make(rules=rules[:2]), "get_employee")
    assert d.effect == "hold" and d.rule_ids == ("rule:h",)


def test_allow_rule_on_session_legs_is_rejected_at_load() -> None:
    with pytest.raises(ValueError, match="session_legs_any"):
        make(rules=[{"id": "x", "action": "allow", "session_legs_any": ["P"]}])


# -- robustness ----------------------------------------------------------------------------------
def test_evaluation_error_fails_closed() -> None:
    policy = make(rules=[{"id": "ops", "action": "allow", "groups": ["ops"]}])
    p = prof(policy, "get_employee")
    # a malformed call (groups=None) must not slip through
    broken = call("hr", "get_employee")._replace(groups=None)  # type: ignore[arg-type]
    d = policy.decide(broken, p, state())
    assert d.effect == "deny" and d.rule_ids == ("error.fail_closed",)
    assert "TypeError" in d.reasons[0]
    assert policy.decide(call("hr", "get_employee"), p, state()).effect == "allow"


def test_profile_from_older_revision_is_recompiled() -> None:
    old = make()
    p = prof(old, "rename_team")
    new = make(defaults={"write": "deny"})
    assert new.revision != old.revision
    d = new.decide(call("hr", "rename_team"), p, state())
    assert d.effect == "deny" and d.policy_revision == new.revision


def test_revision_is_stable_for_equal_content() -> None:
    assert make().revision == make().revision
