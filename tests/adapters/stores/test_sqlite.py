"""SQLite-only behaviour: another process on the same file, and the file's own settings."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.records import PendingApproval


def new_approval() -> PendingApproval:
    return PendingApproval.new(principal="agent:a", session_id="s1", upstream="mail", tool="send",
                               arguments={"to": "x"}, policy_revision="rev-1")


async def test_decision_by_another_instance_is_seen_by_the_recheck(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with SqliteStore(path, recheck_every=0.1) as a_store, SqliteStore(path) as b_store:
        held = new_approval()
        await a_store.create_approval(held)
        waiter = asyncio.create_task(a_store.wait_decided(held.id, 30))
        await asyncio.sleep(0)
        await b_store.decide(held.id, True, "human:h", "ok", time.time())
        # b_store's decision wakes only b_store's own waiters, and a_store's wait runs until 30 s:
        # an approval back before the 10 s guard can only come from a_store's re-check reading it.
        got = await asyncio.wait_for(waiter, 10)
        assert got is not None and (got.id, got.state, got.decided_by) == (held.id, "approved", "human:h")


async def test_suspension_by_another_instance_applies_after_its_next_call_state(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with SqliteStore(path) as a_store, SqliteStore(path) as b_store:
        await b_store.suspend("agent:x", by="admin", reason="r")
        await a_store.call_state("s", "k", "u", "t")  # the hot path notices the other writer
        assert a_store.suspended() == {"agent:x"}
        await b_store.resume("agent:x", by="admin")
        await a_store.call_state("s", "k", "u", "t")
        assert a_store.suspended() == frozenset()


async def test_file_is_wal_and_synchronous_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with SqliteStore(path, synchronous="FULL") as store:
        await store.mark_used("k")
        assert await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_expire_due_collects_expired_legs(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.sqlite") as store:
        await store.add_legs("abandoned", frozenset({"P", "U"}), 5)
        await store.add_legs("kept", frozenset({"P"}), None)
        await store.expire_due(time.time() + 10)
        rows = await store._run(lambda c: c.execute("SELECT legs_key, leg FROM legs").fetchall())
        assert rows == [("kept", "P")]
