"""Fail closed: an unreachable or unwritable store raises StoreUnavailable from every method."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.records import PendingApproval
from gateway.ports.store import StoreUnavailable
from tests.redis_server import redis_server


def new_approval() -> PendingApproval:
    return PendingApproval.new(principal="agent:a", session_id="s1", upstream="mail", tool="send",
                               arguments={"to": "x"}, policy_revision="rev-1")


def every_call(store: Any, approval_id: str = "01ABC") -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of every async method of the Store interface except ping (which answers False)."""
    now = time.time()
    return {
        "start": store.start,
        "call_state": lambda: store.call_state("s", "k", "u", "t"),
        "add_legs": lambda: store.add_legs("s", frozenset({"P"}), None),
        "mark_used": lambda: store.mark_used("k"),
        "set_pin": lambda: store.set_pin("u", "t", "sha256:x", by="admin"),
        "get_pins": store.get_pins,
        "suspend": lambda: store.suspend("agent:x", by="admin", reason="r"),
        "resume": lambda: store.resume("agent:x", by="admin"),
        "create_approval": lambda: store.create_approval(new_approval()),
        "get_approval": lambda: store.get_approval(approval_id),
        "list_approvals": store.list_approvals,
        "decide": lambda: store.decide(approval_id, True, "human:h", "ok", now),
        "find_approved": lambda: store.find_approved("a", "s", "u", "t", "h", "rev-1", now),
        "consume": lambda: store.consume(approval_id),
        "find_pending": lambda: store.find_pending("a", "s", "u", "t", "h"),
        "wait_decided": lambda: store.wait_decided(approval_id, 1.0),
        "expire_due": lambda: store.expire_due(now),
    }


async def assert_all_unavailable(store: Any) -> None:
    for name, call in every_call(store).items():
        with pytest.raises(StoreUnavailable):
            await call()
            pytest.fail(f"{name} did not raise StoreUnavailable")
    assert await store.ping() is False


async def test_sqlite_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    store = SqliteStore(blocker / "state.sqlite")
    try:
        await assert_all_unavailable(store)
    finally:
        await store.aclose()


async def test_sqlite_locked_database_refuses_writes_and_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with SqliteStore(path, busy_timeout=0.2) as store:
        held = new_approval()
        await store.create_approval(held)
        await store.add_legs("s", frozenset({"P"}), None)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock for too long
        try:
            writes = {k: v for k, v in every_call(store, held.id).items()
                      if k in ("add_legs", "mark_used", "set_pin", "suspend", "resume", "create_approval", "decide",
                               "consume", "expire_due")}
            for name, call in writes.items():
                with pytest.raises(StoreUnavailable, match="locked"):
                    await call()
                    pytest.fail(f"{name} wrote through a lock")
            assert (await store.call_state("s", "k", "u", "t")).legs == {"P"}  # WAL readers are not blocked
            assert (await store.get_approval(held.id)) == held
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await store.decide(held.id, True, "human:h", "ok", time.time())).status == "approved"


async def test_sqlite_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.sqlite")
    await store.start()
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.call_state("s", "k", "u", "t")


async def test_redis_dead_port() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    try:
        await assert_all_unavailable(store)
    finally:
        await store.aclose()


async def test_redis_refusing_server_is_tried_once_per_call() -> None:
    """Failing closed is one attempt per call, not a retry storm: a loopback listener that hangs
    up on every connection counts the store's attempts (the store is not started, so no pub/sub
    listener reconnects in the background)."""
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    calls = {k: v for k, v in every_call(store).items() if k != "start"}
    try:
        for name, call in calls.items():
            before = attempts
            with pytest.raises(StoreUnavailable):
                await call()
                pytest.fail(f"{name} did not raise StoreUnavailable")
            assert attempts - before == 1, f"{name} connected {attempts - before} times"
    finally:
        await store.aclose()
        server.close()
        await server.wait_closed()


async def test_redis_server_gone_mid_life() -> None:
    with redis_server() as url:
        store = RedisStore(url, prefix="gone:", connect_timeout=0.5)
        await store.start()
        await store.add_legs("s", frozenset({"P"}), None)
    # the with-block stopped that server: the same store now fails closed
    try:
        await assert_all_unavailable(store)
    finally:
        with contextlib.suppress(StoreUnavailable):
            await store.aclose()
