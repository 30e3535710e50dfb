"""Redis-only behaviour: cross-process wake-ups and suspensions over pub/sub, key layout, reconnects."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest
import redis.asyncio as aredis

from adapters.stores.redis_store import RedisStore
from gateway.ports.records import PendingApproval
from gateway.ports.store import DEFAULT_PREFIX


def new_approval() -> PendingApproval:
    return PendingApproval.new(principal="agent:a", session_id="s1", upstream="mail", tool="send",
                               arguments={"to": "x"}, policy_revision="rev-1")


@pytest.fixture
def kind() -> str:
    return "redis"


@pytest.fixture
async def pair(make_store: Any) -> tuple[RedisStore, RedisStore]:
    """Two stores on one Redis and prefix: two gateway processes, as far as the store can tell."""
    a, b = make_store(), make_store()
    await a.start()
    await b.start()
    return a, b


async def test_decision_on_one_instance_wakes_a_wait_on_another(pair: tuple[RedisStore, RedisStore]) -> None:
    a_store, b_store = pair
    held = new_approval()
    await a_store.create_approval(held)
    waiter = asyncio.create_task(a_store.wait_decided(held.id, 30))
    await asyncio.sleep(0)
    assert (await b_store.decide(held.id, True, "human:h", "ok", time.time())).status == "approved"
    # The Redis adapter has no re-check timer at all and the wait runs until 30 s: an approval back
    # before the 10 s guard can only come from b_store's pub/sub message waking a_store's waiter.
    got = await asyncio.wait_for(waiter, 10)
    assert got is not None and (got.id, got.state, got.decided_by) == (held.id, "approved", "human:h")


async def test_suspension_reaches_another_instance_over_pub_sub(pair: tuple[RedisStore, RedisStore]) -> None:
    a_store, b_store = pair
    # b_store makes no call of its own below: only its pub/sub listener can change what it holds.
    # The deadlines only stop a hang; how fast it propagates is a benchmark's business, not a test's.
    await a_store.suspend("upstream:mail", by="admin", reason="incident")
    deadline = time.monotonic() + 10.0
    while "upstream:mail" not in b_store.suspended():
        assert time.monotonic() < deadline, "the suspension never reached the other instance"
        await asyncio.sleep(0.01)
    assert b_store.suspended() == {"upstream:mail"}
    await b_store.resume("upstream:mail", by="admin")
    deadline = time.monotonic() + 10.0
    while "upstream:mail" in a_store.suspended():
        assert time.monotonic() < deadline, "the resume never reached the other instance"
        await asyncio.sleep(0.01)
    assert a_store.suspended() == frozenset()


async def test_suspensions_are_loaded_at_start(make_store: Any) -> None:
    first = make_store()
    await first.start()
    await first.suspend("principal:bob", by="admin", reason="left the company")
    later = make_store()
    await later.start()
    assert later.suspended() == {"principal:bob"}


async def test_waiter_survives_a_dropped_pubsub_connection(pair: tuple[RedisStore, RedisStore],
                                                           redis_url: str) -> None:
    a_store, b_store = pair
    held = new_approval()
    await a_store.create_approval(held)
    waiter = asyncio.create_task(a_store.wait_decided(held.id, 30))
    await asyncio.sleep(0)
    admin = aredis.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 2  # both instances' listeners
    finally:
        await admin.aclose()
    await b_store.decide(held.id, False, "human:h", "no", time.time())
    got = await asyncio.wait_for(waiter, 10)  # the message may be lost; the resubscribe re-check is not
    assert got is not None and got.state == "denied"
    await asyncio.wait_for(a_store.listening.wait(), 10)


async def test_every_key_is_under_the_prefix(make_store: Any, redis_url: str) -> None:
    store = make_store()
    await store.start()
    held = new_approval()
    await store.create_approval(held)
    await store.decide(held.id, True, "human:h", "ok", time.time())
    await store.add_legs("sess:1", frozenset({"P"}), 60)
    await store.add_legs("sess:2", frozenset({"U"}), None)
    await store.mark_used("k")
    await store.set_pin("u", "t", "sha256:x", by="admin")
    await store.suspend("agent:x", by="admin", reason="r")
    admin = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k async for k in admin.scan_iter(match=store.prefix + "*")]
        assert len(keys) >= 8
        assert 0 < await admin.ttl(store.prefix + "legs:sess:1") <= 60  # a windowed leg's key expires
        assert await admin.ttl(store.prefix + "legs:sess:2") == -1  # a session-long leg's does not
    finally:
        await admin.aclose()
    assert inspect.signature(RedisStore).parameters["prefix"].default == DEFAULT_PREFIX == "triplock:"
