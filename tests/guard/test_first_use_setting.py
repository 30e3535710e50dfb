"""First use: one switch that says one thing, and the `controlled` preset never holds a read.

`first_use.enabled` is the only switch. Listing `mcp_first_invocation_of_tool` in
`approval_required_actions` while it is false is refused (and `triplock policy check` says so,
naming both keys and the fix); a file that switches it off and keeps the default list gets the
list without the category. `first_use.effects` chooses which tools are held on first use.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from policy import CallState, CompiledPolicy, PolicyError, ToolCall, ToolDefinition, load_policy, load_preset
from tests.support import PY, REPO

CONTRADICTION = (
    "first_use.enabled is false but approval_required_actions lists 'mcp_first_invocation_of_tool': "
    "first_use.enabled is the one switch for first-use holds; remove 'mcp_first_invocation_of_tool' from "
    "approval_required_actions, or set first_use.enabled: true"
)
TOOLS = {
    "get_doc": {"legs": ["P"], "effect": "read"},
    "rename": {"legs": ["E"], "effect": "write"},
    "wipe": {"legs": ["E"], "effect": "destructive"},
}


def decide(policy: CompiledPolicy, tool: str, used: bool, upstream: str = "svc") -> Any:
    profile = policy.profile(upstream, ToolDefinition(name=tool))
    call = ToolCall("alice", None, frozenset(), "s1", upstream, tool, {})
    return policy.decide(call, profile, CallState(frozenset(), used, None, frozenset(), True))


def make(**overrides: Any) -> CompiledPolicy:
    return CompiledPolicy.from_dict({"name": "t", "upstreams": {"svc": {"tools": TOOLS}}, **overrides})


def test_switching_first_use_off_while_listing_its_category_is_refused_naming_both_keys() -> None:
    with pytest.raises(ValueError, match="one switch") as refused:
        make(first_use={"enabled": False}, approval_required_actions=["email_send", "mcp_first_invocation_of_tool"])
    assert CONTRADICTION in str(refused.value)


def test_policy_check_reports_the_contradiction(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nfirst_use:\n  enabled: false\n"
                   "approval_required_actions: [email_send, mcp_first_invocation_of_tool]\n")
    with pytest.raises(PolicyError):
        load_policy(bad)
    checked = subprocess.run([PY, "-m", "gateway.cli", "policy", "check", str(bad)], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 1
    assert checked.stdout.strip() == "" and f"{bad}:1: (top level): Value error, {CONTRADICTION}" in checked.stderr


def test_switched_off_with_the_default_list_drops_the_category_and_holds_nothing_on_first_use() -> None:
    off = make(first_use={"enabled": False})
    assert "mcp_first_invocation_of_tool" not in off.model.approval_required_actions
    assert "email_send" in off.model.approval_required_actions  # the rest of seed 6.3 stays
    for tool in TOOLS:
        assert decide(off, tool, used=False).first_use is False


def test_on_by_default_for_every_effect_even_when_the_list_omits_the_category() -> None:
    on = make(approval_required_actions=["email_send"])
    assert [(decide(on, t, used=False).first_use, decide(on, t, used=False).rule_ids[-1]) for t in TOOLS] == [
        (True, "first_use")] * 3


def test_effects_choose_which_tools_are_held_on_first_use() -> None:
    writes = make(first_use={"effects": ["write", "destructive"]})
    assert [decide(writes, t, used=False).first_use for t in TOOLS] == [False, True, True]
    assert decide(writes, "get_doc", used=False).rule_ids == ("default.read",)
    with pytest.raises(ValueError, match="effects"):
        make(first_use={"effects": []})


def test_the_controlled_preset_never_holds_a_read_on_first_use_and_still_holds_writes() -> None:
    controlled = load_preset("controlled")
    read = decide(controlled, "read_inbox", used=False, upstream="demo")
    assert (read.effect, read.rule_ids, read.first_use) == ("allow", ("default.read",), False)
    fetch = decide(controlled, "fetch_url", used=False, upstream="demo")  # a read with an E leg: not first use
    assert fetch.first_use is False
    send = decide(controlled, "update_crm_record", used=False, upstream="demo")
    assert (send.effect, send.first_use, send.rule_ids[-1]) == ("hold", True, "first_use")
    unknown = decide(controlled, "frobnicate", used=False, upstream="elsewhere")  # unclassified: a write
    assert unknown.first_use is True
