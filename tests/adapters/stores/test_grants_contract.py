"""The upstream sign-in part of the store contract (`gateway.ports.grants.GrantStore`): pending sign-ins
are single use and expire, grants are compare-and-set by version, one refresh claim at a time. Run
against every adapter (memory, SQLite, Redis, Redis Cluster) through the `store` fixture; the
cross-process cases through `make_store` (a second gateway process on the same backend)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def test_a_pending_sign_in_is_taken_once(store: Any) -> None:
    await store.save_signin("state-1", {"upstream": "crm", "by": "alice"}, 60)
    assert await store.take_signin("state-1") == {"upstream": "crm", "by": "alice"}
    assert await store.take_signin("state-1") is None  # a replayed callback finds nothing
    assert await store.take_signin("never-saved") is None


async def test_a_pending_sign_in_expires(store: Any) -> None:
    await store.save_signin("state-2", {"upstream": "crm"}, 0.2)
    deadline = time.monotonic() + 10
    while await store.take_signin("state-2") is not None:  # taking it before expiry would remove it too
        await store.save_signin("state-2", {"upstream": "crm"}, 0.2)
        assert time.monotonic() < deadline, "the pending sign-in never expired"
        await asyncio.sleep(0.3)  # longer than its lifetime: the next take must find nothing
    assert await store.take_signin("state-2") is None


async def test_grants_are_versioned_and_compare_and_set(store: Any) -> None:
    assert await store.load_grant("crm") is None
    first = await store.save_grant("crm", {"access_token": "a1", "refresh_token": "r1"})
    assert (first.record, first.version) == ({"access_token": "a1", "refresh_token": "r1"}, 1)
    second = await store.save_grant("crm", {"access_token": "a2", "refresh_token": "r2"}, expect_version=1)
    assert second.version == 2
    assert await store.save_grant("crm", {"access_token": "lost"}, expect_version=1) is None  # a stale writer
    loaded = await store.load_grant("crm")
    assert (loaded.record, loaded.version) == ({"access_token": "a2", "refresh_token": "r2"}, 2)
    assert (await store.save_grant("crm", {"access_token": "new sign-in"})).version == 3  # unconditional
    await store.drop_grant("crm")
    assert await store.load_grant("crm") is None
    # A dropped grant keeps its version: a writer still holding version 3 cannot bring it back, and
    # the next sign-in continues the count (a stale refresher never overwrites a new sign-in).
    assert await store.save_grant("crm", {"access_token": "stale"}, expect_version=3) is None
    assert await store.load_grant("crm") is None
    assert (await store.save_grant("crm", {"access_token": "signed in again"})).version == 5
    assert await store.load_grant("other") is None


async def test_one_refresh_claim_at_a_time(store: Any) -> None:
    assert await store.claim_refresh("crm", "replica-a", 30) is True
    assert await store.claim_refresh("crm", "replica-b", 30) is False
    assert await store.claim_refresh("crm", "replica-a", 30) is True  # the holder renews its own
    await store.release_refresh("crm", "replica-b")  # not the holder: nothing happens
    assert await store.claim_refresh("crm", "replica-b", 30) is False
    await store.release_refresh("crm", "replica-a")
    assert await store.claim_refresh("crm", "replica-b", 30) is True
    assert await store.claim_refresh("other", "replica-a", 30) is True  # claims are per upstream


async def test_a_lapsed_claim_can_be_taken_over(store: Any) -> None:
    assert await store.claim_refresh("crm", "crashed", 0.2) is True
    deadline = time.monotonic() + 10
    while not await store.claim_refresh("crm", "replica-b", 30):
        assert time.monotonic() < deadline, "the lapsed claim was never released"
        await asyncio.sleep(0.05)  # poll interval; the claim is re-tried each round


async def test_another_process_sees_the_grant_and_loses_a_stale_write(make_store: Callable[..., Any]) -> None:
    one, two = make_store(), make_store()
    await one.start()
    await two.start()
    await one.save_grant("crm", {"refresh_token": "r1"})
    seen = await two.load_grant("crm")
    assert seen.record == {"refresh_token": "r1"}
    assert (await one.save_grant("crm", {"refresh_token": "r2"}, expect_version=seen.version)).version == 2
    assert await two.save_grant("crm", {"refresh_token": "r2-from-two"}, expect_version=seen.version) is None
    assert (await two.load_grant("crm")).record == {"refresh_token": "r2"}
    await one.save_signin("st", {"upstream": "crm"}, 60)
    assert await two.take_signin("st") == {"upstream": "crm"}  # any replica can finish a sign-in
    assert await one.take_signin("st") is None
