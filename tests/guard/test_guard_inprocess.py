"""The guarded path in process (see guard_kit): legs learnt from every way a call can end, fail
closed on warm sessions, and legs another process added seen by the next decision.

Real stores, a real policy, real approvals; the upstream is the only stub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.memory_store import MemoryStore
from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from tests.guard.guard_kit import FlakyStore, StubUpstream, call, guarded_path, policy_file, refusal
from tests.redis_server import redis_server

STORE_DOWN = "Denied by policy: the state store is unreachable: failing closed"


@pytest.fixture
async def memory() -> AsyncIterator[MemoryStore]:
    store = MemoryStore(health_interval=3600)
    await store.start()
    yield store
    await store.aclose()


async def legs(store: Any, principal: str = "alice") -> frozenset[str]:
    """The legs the store holds for ``principal`` (stateless calls: its window)."""
    record = await store.call_state("legs:none", "-", "ws", "-", f"legs:principal:{principal}")
    return frozenset(record.principal_legs)


# -- legs from every ending ---------------------------------------------------------------------

async def test_error_result_content_adds_legs(tmp_path: Path, memory: MemoryStore) -> None:
    upstream = StubUpstream()
    guard = guarded_path(memory, policy_file(tmp_path), upstream)
    upstream.mode = "is_error"
    result = await call(guard, "alice", "noop")
    assert result["isError"] is True and refusal(result) is None  # the upstream's own error, passed on
    assert await legs(memory) == {"U"}  # its link to an outside page is untrusted input


@pytest.mark.parametrize("mode", ["rpc_error", "failure"])
async def test_upstream_errors_count_the_calls_own_legs(tmp_path: Path, memory: MemoryStore, mode: str) -> None:
    upstream = StubUpstream()
    guard = guarded_path(memory, policy_file(tmp_path), upstream)
    upstream.mode = mode
    await call(guard, "alice", "read_mail")
    assert upstream.reached == ["read_mail"]
    assert await legs(memory) == {"P", "U"}  # the upstream may have acted: its legs count


async def test_cancelled_call_counts_its_legs(tmp_path: Path, memory: MemoryStore) -> None:
    upstream = StubUpstream()
    guard = guarded_path(memory, policy_file(tmp_path), upstream)
    upstream.mode = "hang"
    task = asyncio.create_task(call(guard, "alice", "fetch", {"url": "https://evil.example/"}))
    await upstream.arrived.wait()
    task.cancel()  # the client cancelled, or the gateway's deadline passed, while the upstream worked
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await legs(memory) == {"U", "E"}
    upstream.mode = "ok"
    assert refusal(await call(guard, "alice", "search")) is None  # P: a read adds no exit, never the trifecta
    held = await call(guard, "alice", "fetch", {"url": "https://evil.example/"})  # an exit on top of P+U
    assert "triplock/approval" in (held.get("_meta") or {}), held


# -- fail closed on a warm session ----------------------------------------------------------------

async def test_warm_session_refuses_e_legs_while_the_store_is_down(tmp_path: Path, memory: MemoryStore) -> None:
    upstream = StubUpstream()
    store = FlakyStore(memory)
    guard = guarded_path(store, policy_file(tmp_path), upstream)
    for tool in ("fetch", "fetch", "noop", "noop"):  # warm: legs, first use and pins cached
        assert refusal(await call(guard, "alice", tool)) is None
    store.down = True
    assert refusal(await call(guard, "alice", "fetch")) == STORE_DOWN
    assert refusal(await call(guard, "alice", "send")) == STORE_DOWN
    assert refusal(await call(guard, "alice", "noop")) is None  # reads: store_unavailable_reads = allow
    store.down = False
    assert refusal(await call(guard, "alice", "fetch")) is None  # back: the next call probes and runs
    assert upstream.reached == ["fetch", "fetch", "noop", "noop", "noop", "fetch"]


async def test_warm_read_refused_after_the_probe_notices_when_reads_fail_closed(
        tmp_path: Path, memory: MemoryStore) -> None:
    upstream = StubUpstream()
    store = FlakyStore(memory)
    guard = guarded_path(store, policy_file(tmp_path, reads_when_store_down="deny"), upstream)
    for _ in range(2):
        assert refusal(await call(guard, "alice", "search")) is None
    store.down = True
    assert await store.ping() is False  # what the adapter's periodic probe does
    assert refusal(await call(guard, "alice", "search")) == STORE_DOWN
    store.down = False
    assert refusal(await call(guard, "alice", "search")) is None
    assert upstream.reached == ["search", "search", "search"]


async def test_a_failed_leg_write_opens_the_breaker_and_is_counted(tmp_path: Path, memory: MemoryStore) -> None:
    upstream = StubUpstream()
    store = FlakyStore(memory)
    failures: list[str] = []
    guard = guarded_path(store, policy_file(tmp_path), upstream)
    guard.state.on_write_failed = lambda: failures.append("write")
    store.read_only = True  # the store still answers reads, and refuses every write
    # A read whose legs cannot be recorded still runs (reads follow store_unavailable_reads)...
    assert refusal(await call(guard, "alice", "search")) is None
    assert failures == ["write"] and store.health.ok is False
    # ...but with the breaker open, no E leg runs, though call_state itself would still succeed.
    assert refusal(await call(guard, "alice", "fetch")) == STORE_DOWN
    assert await legs(store.inner) == frozenset()
    store.read_only = False
    # Back (the probe wrote: the breaker closed). search's P, kept in memory, is written now...
    assert refusal(await call(guard, "alice", "noop")) is None
    assert await legs(store.inner) == {"P"}
    # ...and counts: fetch (U+E) on top of it completes the trifecta, held.
    assert "triplock/approval" in (await call(guard, "alice", "fetch")).get("_meta", {})
    assert upstream.reached == ["search", "noop"]


async def test_e_leg_refused_when_its_own_legs_cannot_be_recorded(tmp_path: Path, memory: MemoryStore) -> None:
    upstream = StubUpstream()
    store = FlakyStore(memory)
    guard = guarded_path(store, policy_file(tmp_path), upstream)
    store.read_only = True
    assert refusal(await call(guard, "alice", "fetch")) == STORE_DOWN
    assert upstream.reached == []  # never sent: its legs could not be recorded first


# -- two processes, one store -----------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """Two store instances on one backend: what two gateway processes see."""
    if request.param == "sqlite":
        yield (SqliteStore(tmp_path / "state.sqlite", health_interval=3600),
               SqliteStore(tmp_path / "state.sqlite", health_interval=3600))
    else:
        with redis_server() as url:
            yield (RedisStore(url, prefix="two:", health_interval=3600),
                   RedisStore(url, prefix="two:", health_interval=3600))


async def test_legs_another_process_added_reach_the_next_decision(tmp_path: Path, shared: tuple[Any, Any]) -> None:
    a_store, b_store = shared
    await a_store.start()
    await b_store.start()
    try:
        upstream = StubUpstream()
        policy = policy_file(tmp_path)
        a, b = guarded_path(a_store, policy, upstream), guarded_path(b_store, policy, upstream)
        for principal, tool in (("bob", "search"), ("bob", "search"), ("alice", "noop"), ("alice", "noop")):
            # process B is warm: alice's legs (none yet), search's first use and pin, all in its cache
            assert refusal(await call(b, principal, tool)) is None
        b_stamp = b_store.state_stamp()
        assert refusal(await call(a, "alice", "fetch")) is None  # process A: the session gains U+E
        # Redis tells B by pub/sub; the notice is sent before A's write returns (SQLite needs none)
        deadline = time.monotonic() + 5
        while b_store.state_stamp() == b_stamp:
            assert time.monotonic() < deadline, "B never heard of A's change"
            await asyncio.sleep(0.01)  # poll interval; the condition is checked each round
        seen: list[Any] = []
        b.observers.append(_Decisions(seen))
        assert refusal(await call(b, "alice", "search")) is None  # a read: served from B's cache if it could
        assert seen[-1].legs_before == {"U", "E"}  # ...but B's cache knew A had changed the legs
        held = await call(b, "alice", "fetch")  # an exit on top of P+U+E: the trifecta
        assert "triplock/approval" in (held.get("_meta") or {}), held
        assert upstream.reached == ["search", "search", "noop", "noop", "fetch", "search"]
    finally:
        await a_store.aclose()
        await b_store.aclose()


class _Decisions:
    """An observer that keeps each decision the guard took."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def decided(self, record: Any) -> None:
        self.seen.append(record.decision)

    def finished(self, record: Any) -> None:
        pass
