"""The health signal of the store contract (`Store.health`, `ping`, `state_stamp`), on every adapter,
and real outages: Redis stopped and frozen, an SQLite file that no longer takes writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.store import StoreHealth, StoreUnavailable
from tests.guard.redis_proc import RedisProcess


async def eventually(check: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"never: {what}"
        await asyncio.sleep(0.02)  # poll interval; the condition is checked each round


# -- the contract, on every adapter ------------------------------------------------------------------

async def test_health_is_ok_and_the_probe_writes(store: Any) -> None:
    assert isinstance(store.health, StoreHealth)
    assert (store.health.ok, store.health.last_error) == (True, None)
    assert await store.ping() is True
    assert store.health.probe_due() is False  # the probe just ran


async def test_only_a_write_or_a_probe_closes_the_breaker(store: Any) -> None:
    store.health.failed("disk I/O error")
    await store.call_state("sess:1", "k", "u", "t")  # a read proves nothing about writes
    assert (store.health.ok, store.health.last_error) == (False, "disk I/O error")
    await store.add_legs("sess:1", frozenset({"P"}), None)
    assert (store.health.ok, store.health.last_error) == (True, None)
    store.health.failed("again")
    assert await store.ping() is True
    assert store.health.ok is True


async def test_state_stamp_holds_still_without_changes_and_moves_with_health(store: Any) -> None:
    await store.add_legs("sess:1", frozenset({"P"}), None)
    stamp = store.state_stamp()
    await store.call_state("sess:1", "k", "u", "t")
    assert store.state_stamp() == stamp
    store.health.failed("gone")
    assert store.state_stamp() != stamp


async def test_state_stamp_moves_when_another_instance_changes_legs_or_pins(make_store: Any) -> None:
    a, b = make_store(health_interval=3600), make_store(health_interval=3600)
    await a.start()
    await b.start()
    before = a.state_stamp()
    await b.add_legs("sess:1", frozenset({"U"}), None)
    await eventually(lambda: a.state_stamp() != before, "a saw b's legs")  # Redis: by pub/sub
    before = a.state_stamp()
    await b.set_pin("mail", "send", "sha256:bb", by="admin")
    await eventually(lambda: a.state_stamp() != before, "a saw b's pin")


# -- real outages ---------------------------------------------------------------------------------------

async def test_redis_stopped_is_noticed_without_a_call_and_recovers_by_itself() -> None:
    with RedisProcess() as redis:
        store = RedisStore(redis.url, prefix="h:", connect_timeout=0.5, socket_timeout=0.5, health_interval=0.1)
        await store.start()
        try:
            await store.add_legs("sess:1", frozenset({"P"}), None)
            redis.stop()
            await eventually(lambda: not store.health.ok, "the outage noticed (no call made)")
            with pytest.raises(StoreUnavailable):
                await store.call_state("sess:1", "k", "u", "t")
            redis.start()  # the same port, the same append-only file
            await eventually(lambda: store.health.ok, "the store back (its own probe)")
            assert (await store.call_state("sess:1", "k", "u", "t")).legs == {"P"}
        finally:
            await store.aclose()


async def test_redis_frozen_times_out_and_counts_as_an_outage() -> None:
    with RedisProcess() as redis:
        store = RedisStore(redis.url, prefix="h:", connect_timeout=0.5, socket_timeout=0.5, health_interval=3600)
        await store.start()
        try:
            redis.freeze()  # SIGSTOP: the connections stay open and nothing answers
            with pytest.raises(StoreUnavailable, match=r"[Tt]imeout|timed out"):
                await store.call_state("sess:1", "k", "u", "t")
            assert store.health.ok is False
            assert await store.ping() is False
            redis.thaw()
            assert await store.ping() is True
            assert store.health.ok is True
        finally:
            redis.thaw()
            await store.aclose()


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`chattr +i`: the file refuses writes even to root (a read-only bind or chmod would not, as root).

    Only the WAL is made immutable: SQLite appends every commit there first. The -shm file must
    stay writable: it is memory-mapped, and a write fault on an immutable mapping is a SIGBUS.
    """
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_sqlite_file_that_refuses_writes_is_down_until_a_write_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with SqliteStore(path, health_interval=3600) as store:
        await store.add_legs("sess:1", frozenset({"P"}), None)
        with immutable(tmp_path / "state.sqlite-wal"):
            with pytest.raises(StoreUnavailable, match="disk I/O error"):
                await store.add_legs("sess:1", frozenset({"U"}), None)
            assert store.health.ok is False
            assert (await store.call_state("sess:1", "k", "u", "t")).legs == {"P"}  # reads still work...
            assert store.health.ok is False  # ...and prove nothing
            assert await store.ping() is False  # the probe writes, so it fails too
        assert await store.ping() is True
        assert store.health.ok is True
        await store.add_legs("sess:1", frozenset({"U"}), None)
        assert (await store.call_state("sess:1", "k", "u", "t")).legs == {"P", "U"}
