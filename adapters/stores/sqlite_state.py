"""The session state of `SqliteStore` apart from approvals: the hot-path read, and the session's
memory (the trail: the call that first contributed each leg, values from untrusted content).

A mixin so `sqlite_store.py` stays about plumbing and approvals; it relies on the store's worker
thread (`_run`) and its health breaker.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from adapters.stores.sqlite_schema import transaction
from gateway.ports.records import CallStateRecord
from gateway.ports.store import SATURATED, StoreHealth

T = TypeVar("T")

TRAIL_SCHEMA = """
CREATE TABLE IF NOT EXISTS trail (
    key TEXT NOT NULL, item TEXT NOT NULL, source TEXT NOT NULL, at REAL NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (key, item)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trail_expiry ON trail (expires_at);
"""

# The hot path as one statement: live legs of the session and of the principal, first use, pin.
CALL_STATE_SQL = """
SELECT (SELECT group_concat(leg, '') FROM legs
         WHERE legs_key = ? AND (expires_at IS NULL OR expires_at > ?)),
       EXISTS (SELECT 1 FROM first_use WHERE key = ?),
       (SELECT hash FROM pins WHERE upstream = ? AND tool = ?),
       (SELECT group_concat(leg, '') FROM legs
         WHERE legs_key = ? AND (expires_at IS NULL OR expires_at > ?))
"""

_SWEEP_EVERY = 256  # trail writes between two sweeps of expired rows of every key


class SqliteStateMixin:
    """`call_state`, `add_trail`, `get_trail` and `clear_state` of the SQLite store."""

    health: StoreHealth
    _trail_writes = 0

    def _run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        raise NotImplementedError  # the store's worker-thread hop

    async def call_state(self, legs_key: str, first_use_key: str, upstream: str, tool: str,
                         principal_legs_key: str | None = None) -> CallStateRecord:
        def q(conn: sqlite3.Connection) -> CallStateRecord:
            now = time.time()
            legs, used, pin, principal = conn.execute(
                CALL_STATE_SQL, (legs_key, now, first_use_key, upstream, tool, principal_legs_key or "", now)
            ).fetchone()
            self._reload_suspensions(conn)  # cheap pragma; a reload only if another process committed
            return CallStateRecord(frozenset(legs or ""), bool(used), pin, frozenset(principal or ""))
        return await self._run(q)

    def _reload_suspensions(self, conn: sqlite3.Connection) -> None:
        raise NotImplementedError

    async def add_trail(self, key: str, items: Mapping[str, str], ttl_seconds: float, limit: int) -> None:
        if not items:
            return
        self._trail_writes += 1
        sweep = self._trail_writes % _SWEEP_EVERY == 0

        def q(conn: sqlite3.Connection) -> None:
            now = time.time()
            expires = now + ttl_seconds
            with transaction(conn):
                if sweep:
                    conn.execute("DELETE FROM trail WHERE expires_at <= ?", (now,))
                else:
                    conn.execute("DELETE FROM trail WHERE key = ? AND expires_at <= ?", (key, now))
                (count,) = conn.execute("SELECT count(*) FROM trail WHERE key = ?", (key,)).fetchone()
                for item, source in items.items():
                    if count >= limit:
                        conn.execute("INSERT OR IGNORE INTO trail VALUES (?, ?, ?, ?, ?)",
                                     (key, SATURATED, source, now, expires))
                        break
                    count += conn.execute("INSERT OR IGNORE INTO trail VALUES (?, ?, ?, ?, ?)",
                                          (key, item, source, now, expires)).rowcount
                conn.execute("UPDATE trail SET expires_at = ? WHERE key = ?", (expires, key))
        await self._run(q)
        self.health.recovered()

    async def get_trail(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))

        def q(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
            return conn.execute(
                f"SELECT item, source, at FROM trail WHERE key IN ({marks}) AND expires_at > ? ORDER BY at",
                (*keys, time.time())).fetchall()
        out: dict[str, tuple[str, float]] = {}
        for item, source, at in await self._run(q):
            out.setdefault(item, (source, at))
        return out

    async def clear_state(self, keys: Sequence[str]) -> int:
        def q(conn: sqlite3.Connection) -> int:
            cleared = 0
            with transaction(conn):
                for key in keys:
                    legs = conn.execute("DELETE FROM legs WHERE legs_key = ?", (key,)).rowcount
                    trail = conn.execute("DELETE FROM trail WHERE key = ?", (key,)).rowcount
                    cleared += 1 if legs or trail else 0
            return cleared
        cleared = await self._run(q)
        self.health.invalidate()  # this process's caches re-read (other processes see the data version move)
        return cleared
