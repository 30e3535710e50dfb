"""Idle sessions expire (clients rarely send DELETE); sessions are bound to their principal."""

from __future__ import annotations

import time

from adapters.stores.memory_store import MemoryStore
from gateway.mcp.sessions import SessionRegistry


async def test_idle_sessions_expire_and_busy_ones_stay() -> None:
    reg = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True)
    idle = await reg.create("2025-11-25", {}, {}, "alice")
    busy = await reg.create("2025-11-25", {}, {}, "alice")
    fresh = await reg.create("2025-11-25", {}, {}, "alice")
    now = time.monotonic()
    idle.last_seen = busy.last_seen = now - 120
    busy.in_flight["x"] = None  # type: ignore[assignment]
    assert await reg.expire_idle(now) == 1
    assert await reg.get(idle.id, "alice") is None
    assert await reg.get(busy.id, "alice") is busy and await reg.get(fresh.id, "alice") is fresh


async def test_another_principal_cannot_use_a_session() -> None:
    reg = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True)
    s = await reg.create("2025-11-25", {}, {}, "alice")
    assert await reg.get(s.id, "mallory") is None


async def test_sessions_survive_a_restart_through_the_store() -> None:
    async with MemoryStore() as store:
        first = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True, store=store)
        s = await first.create("2025-06-18", {"name": "codex"}, {"elicitation": {}}, "alice")
        second = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True, store=store)  # a new process
        restored = await second.get(s.id, "alice")
        assert restored is not None and restored.client_info == {"name": "codex"}
        assert restored.protocol_version == "2025-06-18" and restored.capabilities == {"elicitation": {}}
        assert await second.get(s.id, "mallory") is None
        await second.close(s.id)
        assert (
            await SessionRegistry(60.0, owns_upstream_sessions=lambda _: True, store=store).get(s.id, "alice") is None
        )


async def test_a_session_that_ends_is_let_go_of_at_once_but_not_at_shutdown() -> None:
    reg = SessionRegistry(60.0, owns_upstream_sessions=lambda _: True)
    ended: list[str] = []
    reg.on_ended = lambda s: ended.append(s.id)
    deleted = await reg.create("2025-11-25", {}, {}, "alice")
    idle = await reg.create("2025-11-25", {}, {}, "alice")
    kept = await reg.create("2025-11-25", {}, {}, "alice")
    assert await reg.close(deleted.id) is True
    idle.last_seen = time.monotonic() - 120
    assert await reg.expire_idle() == 1
    await reg.aclose()  # a graceful shutdown keeps sessions for the next process: nothing ends
    assert ended == [deleted.id, idle.id]
    assert kept.id not in ended
