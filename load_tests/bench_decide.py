"""Benchmark `CompiledPolicy.decide()` for policies of 100, 1,000 and 10,000 tool entries with
500 rules, and show that its cost does not grow with the number of tools, without and with the
session's memory (value provenance: 128 untrusted values; the trifecta's sources).

    .venv/bin/python load_tests/bench_decide.py [--calls 200000]

Each policy spreads its tool entries over 50 upstreams (exact names plus a few globs per
upstream) and has 500 rules: per-upstream rules by principal, group, category and tool glob,
plus global ones. Calls cycle over a sample of profiles: the allow path (a read), the hold path
(a write with recipient conditions completing the trifecta) and a rule-heavy path. Timings
are per call with `perf_counter_ns`, after a warm-up; no assertions (figures for the notes).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy import CallState, CompiledPolicy, Leg, ToolCall, ToolDefinition, ToolProfile

UPSTREAMS = 50
RULES = 500


def build_policy(tools: int, rules: int = RULES) -> CompiledPolicy:
    """A synthetic policy with `tools` tool entries and `rules` rules."""
    per = max(1, tools // UPSTREAMS)
    upstreams: dict[str, Any] = {}
    for u in range(UPSTREAMS):
        entries: dict[str, Any] = {}
        for t in range(per):
            if t % 3 == 0:
                entries[f"read_{t}"] = {"legs": ["P", "U"], "effect": "read"}
            elif t % 3 == 1:
                entries[f"send_{t}"] = {"legs": ["E"], "effect": "write", "category": "email_send",
                                        "conditions": {"recipient_args": ["to", "cc"]}}
            else:
                entries[f"update_{t}"] = {"legs": ["E"], "effect": "write", "category": f"cat_{t % 40}"}
        entries["legacy_*"] = {"legs": ["P"], "effect": "read"}
        upstreams[f"up{u}"] = {"tools": entries, "conditions": {"org_domains": [f"corp{u}.example"]}}
    rule_list: list[dict[str, Any]] = []
    for r in range(rules):
        kind = r % 5
        base: dict[str, Any] = {"id": f"r{r}", "upstreams": [f"up{r % UPSTREAMS}"]}
        if kind == 0:
            rule_list.append({**base, "action": "deny", "principals": [f"intruder{r}@x.test"]})
        elif kind == 1:
            rule_list.append({**base, "action": "allow", "groups": [f"team{r}"], "tools": ["update_*"]})
        elif kind == 2:
            rule_list.append({**base, "action": "hold", "categories": [f"cat_{r % 40}"], "session_legs_any": ["U"]})
        elif kind == 3:
            rule_list.append({**base, "action": "deny", "tools": [f"send_{r}"], "agents": ["rogue"]})
        else:
            rule_list.append({"id": f"g{r}", "action": "hold", "effects": ["destructive"], "principals": [f"p{r}"]})
    return CompiledPolicy.from_dict({
        "name": f"bench-{tools}",
        "conditions": {
            "deny_read_paths": ["**/.env", "**/.ssh/**", "**/.aws/credentials", "**/*.pem"],
            "amounts": [{"args": ["amount"], "over": 100}],
        },
        "upstreams": upstreams,
        "rules": rule_list,
    })


def sample_profiles(policy: CompiledPolicy, tools: int, count: int = 300) -> list[tuple[ToolCall, ToolProfile]]:
    """Profiles and calls spread over the whole tool table."""
    rng = random.Random(7)
    per = max(1, tools // UPSTREAMS)
    out = []
    for _ in range(count):
        u, t = rng.randrange(UPSTREAMS), rng.randrange(per)
        name = ("read_", "send_", "update_")[t % 3] + str(t)
        props = {"to": {}, "subject": {}, "body": {}} if name.startswith("send_") else {"id": {}}
        profile = policy.profile(f"up{u}", ToolDefinition(name, "bench tool", {"type": "object", "properties": props}))
        args: dict[str, Any] = {"id": "42"}
        if name.startswith("send_"):
            args = {"to": rng.choice(["a@evil.test", f"b@corp{u}.example"]), "subject": "s", "body": "b"}
        call = ToolCall("alice@example.com", "agent-1", frozenset({"team1", "eng"}), "s1", f"up{u}", name, args)
        out.append((call, profile))
    return out


# With provenance on: the session's memory holds 128 values from untrusted content (one of them the
# address half of the send_ calls go to) and where each leg came from, as the gateway passes it to
# every call that acts on the world.
MEMORY = {f"email:user{i}@evil.test": f"up1__read_{i} at 10:00:00 UTC" for i in range(127)}
MEMORY["email:a@evil.test"] = "up1__read_0 at 10:00:00 UTC"
SOURCES = {"P": "up1__read_0 at 10:00:00 UTC", "U": "up1__read_3 at 10:01:00 UTC"}


def states_for(provenance: bool) -> list[CallState]:
    """The three session states calls cycle over (fresh, P+U, U and a suspension elsewhere)."""
    memory = {"tainted": MEMORY, "leg_sources": SOURCES} if provenance else {}
    return [
        CallState(frozenset(), True, None, **memory),
        CallState(frozenset({Leg.P, Leg.U}), True, None, **memory),
        CallState(frozenset({Leg.U}), True, None, frozenset({"agent:other"}), **memory),
    ]


def measure(
    policy: CompiledPolicy, pairs: list[tuple[ToolCall, ToolProfile]], calls: int, provenance: bool = False
) -> list[int]:
    """Per-call nanoseconds for `calls` decisions cycling over `pairs`."""
    states = states_for(provenance)
    for i in range(20_000):  # warm-up
        call, profile = pairs[i % len(pairs)]
        policy.decide(call, profile, states[i % 3])
    timings = [0] * calls
    decide = policy.decide
    clock = time.perf_counter_ns
    n = len(pairs)
    gc.disable()
    try:
        for i in range(calls):
            call, profile = pairs[i % n]
            state = states[i % 3]
            t0 = clock()
            decide(call, profile, state)
            timings[i] = clock() - t0
    finally:
        gc.enable()
    return timings


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    clock_overhead = statistics.median(
        [-(time.perf_counter_ns() - time.perf_counter_ns()) for _ in range(10_000)]
    )
    print(f"python {sys.version.split()[0]}, {args.calls} calls per size, {RULES} rules; "
          f"timer overhead ~{clock_overhead:.0f} ns (included)")
    print(f"{'tools':>7} {'memory':>11} {'load ms':>9} {'median µs':>10} {'p99 µs':>8} {'mean µs':>8}")
    medians: dict[int, float] = {}
    for size in (100, 1_000, 10_000):
        t0 = time.perf_counter()
        policy = build_policy(size)
        load_ms = (time.perf_counter() - t0) * 1000
        pairs = sample_profiles(policy, size)
        for provenance in (False, True):
            timings = sorted(measure(policy, pairs, args.calls, provenance))
            median = timings[len(timings) // 2] / 1000
            p99 = timings[int(len(timings) * 0.99)] / 1000
            if not provenance:
                medians[size] = median
            label = "provenance" if provenance else "none"
            print(f"{size:>7} {label:>11} {load_ms:>9.1f} {median:>10.2f} {p99:>8.2f} "
                  f"{statistics.fmean(timings) / 1000:>8.2f}")
    print(f"median ratio 1,000/100 = {medians[1_000] / medians[100]:.2f}, "
          f"10,000/1,000 = {medians[10_000] / medians[1_000]:.2f}, 10,000/100 = {medians[10_000] / medians[100]:.2f}")


if __name__ == "__main__":
    main()
