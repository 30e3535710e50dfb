"""Property tests (hypothesis) of the decision's invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from policy import CallState, CompiledPolicy, Leg, ToolCall, ToolDefinition, load_preset

from .conftest import DEMO_TOOLS, demo_tool

POLICIES = [load_preset(n) for n in ("lockdown", "controlled", "open")] + [
    CompiledPolicy.from_dict(
        {
            "defaults": {"write": "allow", "destructive": "allow"},
            "first_use": {"enabled": False},
            "approval_required_actions": [],
            "default_upstream": {"new_actions_default": "allow"},
            "rules": [
                {"id": "allow-all", "action": "allow"},
                {"id": "hold-after-u", "action": "hold", "session_legs_any": ["U"], "call_legs_any": ["E"]},
            ],
        }
    )
]
legs_st = st.frozensets(st.sampled_from(list(Leg)))
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.emails(),
    st.sampled_from(["/home/u/.ssh/id_rsa", "https://evil.test/x", "https://a.example.com/", "bob@example.com"]),
)
args_st = st.dictionaries(
    st.sampled_from(["to", "url", "path", "amount", "body", "query", "x"]),
    st.one_of(json_scalar, st.lists(json_scalar, max_size=3)),
    max_size=4,
)
name_st = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
known_st = st.sampled_from(sorted(DEMO_TOOLS))
upstream_st = st.sampled_from(["demo", "gmail", "github", "acme", "slack"])
policy_st = st.sampled_from(POLICIES)
state_st = st.builds(
    CallState,
    session_legs=legs_st,
    tool_used_before=st.booleans(),
    pinned_hash=st.none(),
    suspended=st.frozensets(st.sampled_from(["agent:a1", "principal:p1", "upstream:demo", "tool:demo__send_email"])),
    store_ok=st.booleans(),
)


def mkcall(upstream: str, tool: str, args: dict[str, Any]) -> ToolCall:
    return ToolCall("p1", "a1", frozenset({"g"}), "s", upstream, tool, args)


@settings(max_examples=300, deadline=None)
@given(policy_st, known_st, args_st, state_st)
def test_same_input_same_decision(policy: CompiledPolicy, name: str, args: dict, state: CallState) -> None:
    profile = policy.profile("demo", demo_tool(name))
    again = policy.profile("demo", demo_tool(name))
    first = policy.decide(mkcall("demo", name, args), profile, state)
    assert policy.decide(mkcall("demo", name, args), profile, state) == first
    assert policy.decide(mkcall("demo", name, args), again, state) == first


RANK = {"allow": 0, "hold": 1, "deny": 2}


@settings(max_examples=400, deadline=None)
@given(policy_st, upstream_st, st.one_of(known_st, name_st), args_st, state_st, st.sampled_from(list(Leg)))
def test_more_legs_never_more_allowed(
    policy: CompiledPolicy, upstream: str, name: str, args: dict, state: CallState, extra: Leg
) -> None:
    profile = policy.profile(upstream, demo_tool(name) if name in DEMO_TOOLS else ToolDefinition(name))
    before = policy.decide(mkcall(upstream, name, args), profile, state)
    more = state._replace(session_legs=state.session_legs | {extra})
    after = policy.decide(mkcall(upstream, name, args), profile, more)
    assert RANK[after.effect] >= RANK[before.effect]


@settings(max_examples=300, deadline=None)
@given(policy_st, upstream_st, name_st, args_st, state_st)
def test_unknown_tools_are_never_allowed(
    policy: CompiledPolicy, upstream: str, name: str, args: dict, state: CallState
) -> None:
    profile = policy.profile(upstream, ToolDefinition("zz" + name + "_qq9"))
    if profile.source != "unknown":
        return
    decision = policy.decide(mkcall(upstream, profile.tool, args), profile, state)
    assert decision.effect != "allow"


@settings(max_examples=300, deadline=None)
@given(policy_st, upstream_st, st.one_of(known_st, name_st), args_st, state_st, st.text(max_size=20))
def test_changed_pin_is_never_allowed(
    policy: CompiledPolicy, upstream: str, name: str, args: dict, state: CallState, new_description: str
) -> None:
    original = demo_tool(name) if name in DEMO_TOOLS else ToolDefinition(name)
    pinned = policy.profile(upstream, original).definition_hash
    changed = ToolDefinition(
        original.name,
        original.description + "!" + new_description,
        original.input_schema,
        original.output_schema,
        original.annotations,
    )
    profile = policy.profile(upstream, changed)
    decision = policy.decide(mkcall(upstream, name, args), profile, state._replace(pinned_hash=pinned))
    assert decision.effect == "deny" and decision.pin_changed


uri_st = st.one_of(
    st.sampled_from(["workspace://inbox/m1", "workspace://drive/index", "file:///home/u/.ssh/id_rsa", "x://y"]),
    st.text(min_size=1, max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(policy_st, upstream_st, uri_st, name_st, args_st, state_st, st.sampled_from(list(Leg)))
def test_resources_and_prompts_are_reads_never_first_use_and_monotone(
    policy: CompiledPolicy, upstream: str, uri: str, name: str, args: dict, state: CallState, extra: Leg
) -> None:
    profiles = [
        (policy.resource_profile(upstream, uri), {}),
        (policy.prompt_profile(upstream, {"name": name, "arguments": [{"name": k} for k in args]}), args),
    ]
    for profile, arguments in profiles:
        assert profile.effect.value == "read"
        assert profile.source != "unknown" or profile.legs == {Leg.P, Leg.U}  # unclassified: fail closed
        used = state._replace(tool_used_before=False, pinned_hash="sha256:other")
        before = policy.decide(mkcall(upstream, profile.tool, arguments), profile, used)
        assert not before.first_use and not before.pin_changed
        assert "unknown.tool" not in before.rule_ids
        after = policy.decide(
            mkcall(upstream, profile.tool, arguments), profile, used._replace(session_legs=state.session_legs | {extra})
        )
        assert RANK[after.effect] >= RANK[before.effect]
