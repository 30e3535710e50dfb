"""Groups → roles → what each principal may see, call, approve and administer."""

from __future__ import annotations

import pytest

from gateway.config import AuthConfig, RoleConfig
from gateway.identity.principal import LOCAL_DEV, Principal
from gateway.identity.roles import ACTIONS, AccessPolicy

TOOLS = [("demo", "read_inbox"), ("demo", "send_email"), ("github", "push"), ("github", "delete_repo")]


def who(*groups: str) -> Principal:
    return Principal(id="p", groups=frozenset(groups))


# Default split of control 6.1 plus approver and auditor: what each role may call and do.
EXPECTED = {
    "agents-run": (set(TOOLS), set()),
    "agents-build": (set(TOOLS), {"explain_policy"}),
    "agents-admin": (set(TOOLS), {"suspend", "resume", "list_suspensions", "pin", "reload_policy",
                                  "explain_policy", "list_approvals", "read_audit", "manage_keys", "show_state",
                                  "clear_state", "connect_upstream"}),
    "approver": (set(), {"list_approvals"}),
    "auditor": (set(), {"read_audit", "list_suspensions", "list_approvals", "explain_policy", "show_state"}),
}


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_each_default_role_calls_and_acts_exactly_as_specified(role: str) -> None:
    access = AccessPolicy()
    calls, actions = EXPECTED[role]
    p = who(role)
    assert {t for t in TOOLS if access.may_call(p, *t)} == calls
    assert {a for a in ACTIONS if access.may(p, a)} == actions
    assert access.may_approve(p, "email_send") is (role == "approver")


def test_unknown_groups_get_nothing() -> None:
    access = AccessPolicy()
    p = who("marketing")
    assert not any(access.may_call(p, *t) for t in TOOLS)
    assert not any(access.may(p, a) for a in ACTIONS)
    assert not access.may_approve(p, None)


def test_group_mapping_and_patterns_from_config() -> None:
    auth = AuthConfig(
        groups={"eng-agents": ("agents-run",), "sec-oncall": ("approver", "auditor")},
        roles={
            "agents-run": RoleConfig(call=("demo:*", "github:*", "!github:delete_*")),
            "agents-build": RoleConfig(call=("*",)),
            "approver": RoleConfig(approve=("email_*", "github_push_merge_release")),
            "auditor": RoleConfig(actions=("read_audit",)),
        },
    )
    access = AccessPolicy.from_config(auth)
    runner = who("eng-agents")
    assert {t for t in TOOLS if access.may_call(runner, *t)} == set(TOOLS) - {("github", "delete_repo")}
    # An exclusion narrows only its own role: a builder still gets the tool.
    assert access.may_call(who("eng-agents", "agents-build"), "github", "delete_repo")
    oncall = who("sec-oncall")
    assert access.may_approve(oncall, "email_send")
    assert access.may_approve(oncall, "github_push_merge_release")
    assert not access.may_approve(oncall, "mcp_first_invocation_of_tool")
    assert access.may(oncall, "read_audit") and not access.may(oncall, "suspend")
    assert access.may_use_upstream(runner, "github") and not access.may_use_upstream(runner, "slack")


def test_principal_roles_count_and_local_dev_sees_everything() -> None:
    access = AccessPolicy()
    assert access.may_call(LOCAL_DEV, "demo", "send_email")
    assert access.may(LOCAL_DEV, "suspend")


def test_misconfiguration_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="unknown actions"):
        AccessPolicy({"x": RoleConfig(actions=("delete_everything",))})
    with pytest.raises(ValueError, match="unknown roles"):
        AccessPolicy(None, {"g": ("superuser",)})
    with pytest.raises(ValueError, match="unknown action"):
        AccessPolicy().may(who("agents-admin"), "format_disk")
