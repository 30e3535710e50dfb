"""The session-state part of the store contract (`call_state` with a principal's key, the trail,
`clear_state`), run against every adapter (memory, SQLite, Redis) through the `store` fixture."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.ports.store import SATURATED


async def test_call_state_reads_the_principals_legs_apart(store: Any) -> None:
    await store.add_legs("legs:session:s1", frozenset({"P"}), 3600)
    await store.add_legs("legs:principal:alice", frozenset({"U", "E"}), 3600)
    st = await store.call_state("legs:session:s1", "k", "u", "t", "legs:principal:alice")
    assert (st.legs, st.principal_legs) == ({"P"}, {"U", "E"})
    assert (await store.call_state("legs:session:s1", "k", "u", "t")).principal_legs == frozenset()


async def test_a_principals_legs_run_out_with_their_window(store: Any) -> None:
    await store.add_legs("legs:principal:bob", frozenset({"P"}), 0.2)
    assert (await store.call_state("legs:none", "k", "u", "t", "legs:principal:bob")).principal_legs == {"P"}
    deadline = time.monotonic() + 10
    while (await store.call_state("legs:none", "k", "u", "t", "legs:principal:bob")).principal_legs:
        assert time.monotonic() < deadline, "the leg never expired"
        await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round


async def test_trail_keeps_the_first_source_and_merges_keys(store: Any) -> None:
    await store.add_trail("legs:session:s1", {"leg:P": "mail__read", "value:host:evil.example": "mail__read"}, 60, 10)
    await store.add_trail("legs:session:s1", {"leg:P": "drive__get", "leg:U": "drive__get"}, 60, 10)
    await store.add_trail("legs:principal:alice", {"value:email:eve@evil.example": "web__fetch"}, 60, 10)
    trail = await store.get_trail(["legs:session:s1", "legs:principal:alice"])
    assert {item: source for item, (source, _at) in trail.items()} == {
        "leg:P": "mail__read",  # the first source wins
        "leg:U": "drive__get",
        "value:host:evil.example": "mail__read",
        "value:email:eve@evil.example": "web__fetch",
    }
    assert all(abs(at - time.time()) < 60 for _source, at in trail.values())
    assert await store.get_trail([]) == {}
    assert await store.get_trail(["legs:session:other"]) == {}


async def test_trail_past_its_limit_says_it_is_saturated(store: Any) -> None:
    await store.add_trail("k", {f"value:number:{i}": "t" for i in range(5)}, 60, 3)
    trail = await store.get_trail(["k"])
    assert len([item for item in trail if item.startswith("value:")]) == 3
    assert SATURATED in trail
    await store.add_trail("k", {"value:number:0": "t2"}, 60, 3)  # known items are not new
    assert trail.keys() == (await store.get_trail(["k"])).keys()


async def test_trail_expires_with_its_window(store: Any) -> None:
    await store.add_trail("short", {"leg:P": "t"}, 0.2, 10)
    deadline = time.monotonic() + 10
    while await store.get_trail(["short"]):
        assert time.monotonic() < deadline, "the trail never expired"
        await asyncio.sleep(0.05)  # poll interval; the condition is re-checked each round


async def test_clear_state_forgets_legs_and_trail_of_the_keys_only(store: Any) -> None:
    for key in ("legs:principal:alice", "legs:principal:bob"):
        await store.add_legs(key, frozenset({"P", "U"}), 3600)
        await store.add_trail(key, {"leg:P": "t"}, 3600, 10)
    assert await store.clear_state(["legs:principal:alice"]) > 0
    assert (await store.call_state("legs:none", "k", "u", "t", "legs:principal:alice")).principal_legs == frozenset()
    assert await store.get_trail(["legs:principal:alice"]) == {}
    assert (await store.call_state("legs:none", "k", "u", "t", "legs:principal:bob")).principal_legs == {"P", "U"}
    assert await store.get_trail(["legs:principal:bob"]) != {}
    assert await store.clear_state(["legs:principal:nobody"]) == 0


async def test_another_processs_clear_moves_the_state_stamp(make_store: Callable[..., Any]) -> None:
    a, b = make_store(), make_store()
    await a.start()
    await b.start()
    await a.add_legs("legs:principal:carol", frozenset({"P"}), 3600)
    before = b.state_stamp()
    await a.clear_state(["legs:principal:carol"])
    deadline = time.monotonic() + 5
    while b.state_stamp() == before:  # SQLite: the data version; Redis: a change notice by pub/sub
        assert time.monotonic() < deadline, "the other process never heard of the clear"
        await asyncio.sleep(0.01)  # poll interval; the condition is re-checked each round
