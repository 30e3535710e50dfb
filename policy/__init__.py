"""Triplock's policy engine: the pure, deterministic decision on every tool call, resource read
and prompt get.

No I/O after loading, no asyncio, no network: `gateway/` calls it in-process on the hot path.

Public API::

    from policy import (Leg, Effect, Legs, ToolDefinition, ToolProfile, ToolCall, CallState, Decision,
                        CompiledPolicy, load_policy, load_preset, definition_hash)

    policy = load_policy("triplock-policy.yaml")   # or .toml; or load_preset("controlled");
                                                   # or CompiledPolicy.from_dict(d). Raises PolicyError.
    policy.revision                                # stable content hash, e.g. 'rev-3f2a...'
    policy.first_use_scope                         # 'tool' | 'principal_tool': how to compute tool_used_before
    policy.legs_scope, policy.legs_window_seconds  # 'session' | 'principal' (+ window) for session legs
    policy.upstream_mode(upstream)                 # 'enforce' | 'monitor'

    # once per tool at catalog refresh (cache it; a profile from an older revision is recompiled):
    profile = policy.profile("demo", ToolDefinition.from_mcp(tool_json))
    policy.visible(profile)                        # False: drop from tools/list (action control)
    profile.mcp_annotations                        # annotations to re-emit, from Triplock's view
    policy.trifecta_capable(visible_profiles)      # the tool set spans P, U and E

    # resources and prompts (always reads; unclassified ones count as P+U, never held by themselves):
    rprofile = policy.resource_profile("demo", "workspace://inbox/m1")     # resources/read, resources/subscribe
    pprofile = policy.prompt_profile("demo", prompt_json)                   # prompts/get (MCP Prompt object)
    rprofile.kind                                  # 'tool' | 'resource' | 'prompt'; `tool` holds the URI / name
    # decide() them like tools: ToolCall(..., tool=uri_or_prompt_name, arguments={} or the prompt's arguments)

    # per tools/call:
    decision = policy.decide(ToolCall(principal, agent, groups, session_id, upstream, tool, arguments),
                             profile,
                             CallState(session_legs, tool_used_before, pinned_hash, suspended, store_ok))
    decision.effect            # 'allow' | 'hold' | 'deny'  (what the policy says; record this)
    decision.enforced_effect   # what to do: == effect in enforce mode, 'allow' in monitor mode
    decision.legs_after        # session legs if the call goes through
    # after an allowed call: session legs = decision.legs_after | policy.inspect_result(profile, result, arguments)
    # (result: a tools/call, resources/read or prompts/get result, with the matching profile)
    policy.explain(call, profile, state, pinned_definition=None)   # rule trail as text (policy.explain.render)

Decisions are immutable `NamedTuple`s; combination is deny > hold > allow, and any error while
evaluating is a deny with rule id `error.fail_closed`. `policy.engine` documents the order.
"""

from policy.engine import CompiledPolicy
from policy.hashing import definition_hash
from policy.loader import PRESETS, Issue, PolicyError, load_policy, load_preset
from policy.models import (
    CallState,
    Decision,
    Effect,
    Leg,
    Legs,
    ProfileKind,
    ToolCall,
    ToolDefinition,
)
from policy.profile import ToolProfile

__all__ = [
    "PRESETS",
    "CallState",
    "CompiledPolicy",
    "Decision",
    "Effect",
    "Issue",
    "Leg",
    "Legs",
    "PolicyError",
    "ProfileKind",
    "ToolCall",
    "ToolDefinition",
    "ToolProfile",
    "definition_hash",
    "load_policy",
    "load_preset",
]
