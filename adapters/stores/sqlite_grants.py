"""Upstream sign-ins and grants on SQLite: the `gateway.ports.grants.GrantStore` half of `SqliteStore`.

One table holds all three kinds (``signin:``, ``grant:``, ``refresh:`` keys): a JSON record, a
version for compare-and-set, an optional expiry. Read-then-write runs in ``BEGIN IMMEDIATE``
(`transaction`), so it is atomic across processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.stores.sqlite_schema import transaction
from gateway.ports.grants import StoredGrant

T = TypeVar("T")

GRANTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS upstream_oauth (
    key TEXT PRIMARY KEY, record TEXT NOT NULL, version INTEGER NOT NULL, expires_at REAL) WITHOUT ROWID;
"""

_LIVE = "key = ? AND (expires_at IS NULL OR expires_at > ?)"


class SqliteGrants:
    """Pending sign-ins, grants and refresh claims for `SqliteStore` (uses its worker thread, ``_run``)."""

    if TYPE_CHECKING:
        async def _run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def save_signin(self, state: str, record: dict[str, Any], ttl_seconds: float) -> None:
        text = json.dumps(record)
        await self._run(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO upstream_oauth (key, record, version, expires_at) VALUES (?, ?, 1, ?)",
            ("signin:" + state, text, time.time() + ttl_seconds)))

    async def take_signin(self, state: str) -> dict[str, Any] | None:
        def q(conn: sqlite3.Connection) -> str | None:
            with transaction(conn):
                row = conn.execute(f"SELECT record FROM upstream_oauth WHERE {_LIVE}",
                                   ("signin:" + state, time.time())).fetchone()
                conn.execute("DELETE FROM upstream_oauth WHERE key = ?", ("signin:" + state,))
            return row[0] if row else None

        text = await self._run(q)
        return json.loads(text) if text else None

    async def load_grant(self, upstream: str) -> StoredGrant | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT record, version FROM upstream_oauth WHERE key = ?", ("grant:" + upstream,)).fetchone())
        record = json.loads(row[0]) if row else None  # JSON null: dropped (its version is kept, see drop_grant)
        return StoredGrant(record, int(row[1])) if isinstance(record, dict) else None

    async def save_grant(self, upstream: str, record: dict[str, Any],
                         expect_version: int | None = None) -> StoredGrant | None:
        text = json.dumps(record)

        def q(conn: sqlite3.Connection) -> int | None:
            with transaction(conn):
                row = conn.execute("SELECT version FROM upstream_oauth WHERE key = ?",
                                   ("grant:" + upstream,)).fetchone()
                current = int(row[0]) if row else 0
                if expect_version is not None and current != expect_version:
                    return None
                conn.execute("INSERT OR REPLACE INTO upstream_oauth (key, record, version, expires_at)"
                             " VALUES (?, ?, ?, NULL)", ("grant:" + upstream, text, current + 1))
                return current + 1

        version = await self._run(q)
        return None if version is None else StoredGrant(dict(record), version)

    async def drop_grant(self, upstream: str) -> None:
        # The row stays with its version and a null record, so a writer holding the dropped grant's version
        # loses its compare-and-set and a new sign-in gets a version no stale writer can hold.
        await self._run(lambda conn: conn.execute(
            "UPDATE upstream_oauth SET record = 'null', version = version + 1 WHERE key = ?", ("grant:" + upstream,)))

    async def claim_refresh(self, upstream: str, holder: str, ttl_seconds: float) -> bool:
        def q(conn: sqlite3.Connection) -> bool:
            now = time.time()
            with transaction(conn):
                row = conn.execute(f"SELECT record FROM upstream_oauth WHERE {_LIVE}",
                                   ("refresh:" + upstream, now)).fetchone()
                if row and row[0] != holder:
                    return False
                conn.execute("INSERT OR REPLACE INTO upstream_oauth (key, record, version, expires_at)"
                             " VALUES (?, ?, 1, ?)", ("refresh:" + upstream, holder, now + ttl_seconds))
                return True

        return await self._run(q)

    async def release_refresh(self, upstream: str, holder: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM upstream_oauth WHERE key = ? AND record = ?",
                                                  ("refresh:" + upstream, holder)))
