"""Seed packs 6.2 and 6.3 import and behave as the seed says."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Leg
from policy.importer import ImportProblem, pack_to_policy
from policy.jsonc import loads

from .conftest import FIXTURES, call, state, tool

PACK_62 = loads((FIXTURES / "hth-chatgpt-enterprise-6.02-action-control-readonly.jsonc").read_text())
PACK_63 = loads((FIXTURES / "hth-chatgpt-enterprise-6.03-approval-policy.jsonc").read_text())


def enabled(doc: dict[str, Any]) -> dict[str, Any]:
    """The same policy after an admin enables every app (6.2: 'When you enable an app ...')."""
    out = {**doc, "upstreams": {k: {**v, "enabled": True} for k, v in doc["upstreams"].items()}}
    out["default_upstream"] = {**doc["default_upstream"], "enabled": True}
    return out


def decide(policy: CompiledPolicy, upstream: str, name: str, legs: str = "", used: bool = True) -> Any:
    return policy.decide(call(upstream, name), policy.profile(upstream, tool(name)), state(legs, used=used))


def test_62_all_apps_disabled_by_default() -> None:
    policy = CompiledPolicy.from_dict(pack_to_policy([PACK_62]))
    for app in ("gmail", "slack", "github", "some_custom_server"):
        d = decide(policy, app, "search")
        assert d.effect == "deny" and "upstream.disabled" in d.rule_ids
        assert not policy.visible(policy.profile(app, tool("search")))


def test_62_enabled_apps_are_read_only() -> None:
    policy = CompiledPolicy.from_dict(enabled(pack_to_policy([PACK_62])))
    assert decide(policy, "gmail", "search_messages").effect == "allow"
    d = decide(policy, "gmail", "send_message")
    assert d.effect == "deny" and "action_control.read_only" in d.rule_ids
    assert decide(policy, "github", "merge_pull_request").effect == "deny"
    assert decide(policy, "salesforce", "get_account").effect == "allow"


def test_62_slack_custom_allows_search_and_read_channel_only() -> None:
    policy = CompiledPolicy.from_dict(enabled(pack_to_policy([PACK_62])))
    assert decide(policy, "slack", "search").effect == "allow"
    assert decide(policy, "slack", "read_channel").effect == "allow"
    for denied in ("post_to_channel", "dm_external", "post_to_dm"):
        d = decide(policy, "slack", denied)
        assert d.effect == "deny" and "action_control.denied" in d.rule_ids
    new = decide(policy, "slack", "list_users")  # a newly added action: deny by default
    assert new.effect == "deny" and "action_control.new_action" in new.rule_ids


def test_62_custom_mcp_servers_deny_every_new_action() -> None:
    policy = CompiledPolicy.from_dict(enabled(pack_to_policy([PACK_62])))
    d = decide(policy, "acme_mcp", "list_widgets")
    assert d.effect == "deny" and d.rule_ids == ("action_control.new_action",)


@pytest.mark.parametrize(
    ("upstream", "name"),
    [
        ("gmail", "send_message"),
        ("calendar", "create_event"),
        ("salesforce", "update_record"),
        ("sharepoint", "delete_file"),
        ("github", "merge_pull_request"),
        ("slack", "post_message"),
        ("payments", "transfer_funds"),
    ],
)
def test_63_required_categories_hold(upstream: str, name: str) -> None:
    doc = pack_to_policy([PACK_63])
    # the upstream is the catalog app only when the policy says so (`app:`), never by its name
    declared = {upstream: {"app": upstream}}
    policy = CompiledPolicy.from_dict({**doc, "defaults": {"write": "allow"}, "upstreams": declared})
    d = decide(policy, upstream, name)
    assert d.effect == "hold" and d.rule_ids[0].startswith("approval_required:")


def test_63_first_invocation_of_any_tool_holds() -> None:
    policy = CompiledPolicy.from_dict(pack_to_policy([PACK_63]))
    assert policy.model.first_use.enabled
    d = decide(policy, "github", "list_repos", used=False)
    assert d.effect == "hold" and d.first_use and "mcp_first_invocation_of_tool" in d.categories


@pytest.mark.parametrize(
    ("upstream", "name"),
    [("google_drive", "update_file"), ("notion", "create_page"), ("jira", "comment_on_issue")],
)
def test_63_logged_categories_are_allowed_and_logged(upstream: str, name: str) -> None:
    policy = CompiledPolicy.from_dict({**pack_to_policy([PACK_63]), "upstreams": {upstream: {"app": upstream}}})
    d = decide(policy, upstream, name)
    assert d.effect == "allow" and d.logged


def test_both_packs_merge() -> None:
    doc = pack_to_policy([PACK_62, PACK_63], name="hth")
    assert doc["name"] == "hth" and "slack" in doc["upstreams"] and "email_send" in doc["approval_required_actions"]
    # the pack names catalog apps; the import says so explicitly, since a name alone never makes an app
    assert (doc["upstreams"]["slack"]["app"], doc["upstreams"]["gmail"]["app"]) == ("slack", "gmail")
    assert "app" not in doc.get("default_upstream", {})
    policy = CompiledPolicy.from_dict(enabled(doc))
    assert decide(policy, "gmail", "read_message", legs="E").legs_after == {Leg.P, Leg.U, Leg.E}


def test_unknown_pack_shapes_are_refused() -> None:
    with pytest.raises(ImportProblem):
        pack_to_policy([{"roles": []}])
    with pytest.raises(ImportProblem, match="unknown keys"):
        pack_to_policy([{"apps": {"gmail": {"scopes": "all"}}}])
