"""The per-principal token bucket and session cap, in-process with a clock the test turns."""

from __future__ import annotations

import pytest

from gateway.mcp.rate_limit import RateLimiter, retry_after
from gateway.mcp.sessions import SessionLimitExceeded, SessionRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == 0.5  # one token takes 1/rate seconds
    assert retry_after(0.5) == "1" and retry_after(2.01) == "3"
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("b") == 0.0  # every principal has its own bucket
    clock.now += 100
    assert [limiter.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]  # refilled to the burst, not beyond


def test_idle_buckets_are_evicted_so_the_table_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 10, clock=clock, sweep_seconds=60)
    for i in range(1000):
        limiter.take(f"p{i}")
    assert len(limiter) == 1000
    clock.now += 61  # all of them refilled (after 1 s) long ago: they are as good as absent
    limiter.take("busy")
    assert len(limiter) == 1  # swept when the next new principal came
    for i in range(1000):
        limiter.take(f"q{i}")
        clock.now += 0.01
    clock.now += 50.5  # past the next sweep; q0..q4xx idle over 1 s, the last ones too
    limiter.take("late")
    assert len(limiter) == 1


async def test_session_cap_counts_live_sessions_only() -> None:
    registry = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True, max_per_principal=2)
    first = await registry.create("2025-11-25", {}, {}, "alice")
    await registry.create("2025-11-25", {}, {}, "alice")
    with pytest.raises(SessionLimitExceeded) as refused:
        await registry.create("2025-11-25", {}, {}, "alice")
    assert refused.value.limit == 2
    await registry.create("2025-11-25", {}, {}, "bob")  # per principal
    assert await registry.close(first.id)
    third = await registry.create("2025-11-25", {}, {}, "alice")  # a closed session no longer counts
    with pytest.raises(SessionLimitExceeded):
        await registry.create("2025-11-25", {}, {}, "alice")
    assert await registry.expire_idle(now=third.last_seen + 61) == 3  # idle ones expire as before
    await registry.create("2025-11-25", {}, {}, "alice")
    await registry.create("2025-11-25", {}, {}, "alice")
    uncapped = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True)
    for _ in range(5):
        await uncapped.create("2025-11-25", {}, {}, "alice")
    assert len(uncapped) == 5
