"""The embedded default store: one local SQLite file in WAL mode, no server needed.

Why the stdlib `sqlite3` on one dedicated worker thread (and not aiosqlite): aiosqlite is the
same design (a thread per connection) plus a dependency we do not otherwise need. One thread
owning the one connection means operations from this process are serialised without locks;
`BEGIN IMMEDIATE` serialises writers across processes sharing the file, which is what makes
`decide` a compare-and-set even with two gateways on one file. Each method is one hop to the
thread, so `call_state` is one round trip (one SQL statement, in fact).

Durability: WAL with synchronous=NORMAL survives a crash of the process (kill -9): a commit is in
the WAL, in the OS's hands, before the call returns. Pass synchronous="FULL" to also survive
power loss, at the cost of an fsync per commit.

Other processes on the same file: there are no notifications in SQLite, so `wait_decided`
re-reads the row every `recheck_every` seconds besides waking at once on local decisions, and
the suspension cache reloads when `PRAGMA data_version` says another connection committed.

Health: a failed operation opens `health` (the breaker of `gateway.ports.store.StoreHealth`);
`ping()` writes one row, so a file that still reads but no longer takes writes counts as down,
and a task probes every `health_interval` seconds. `state_stamp()` is `PRAGMA data_version` on
a second connection kept on the event loop's thread (a few µs, no hop to the worker thread):
it changes whenever any other connection, in this process or another, committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from adapters.stores.sqlite_approvals import SqliteApprovals
from adapters.stores.sqlite_grants import GRANTS_SCHEMA, SqliteGrants
from adapters.stores.sqlite_schema import SCHEMA, UPSERT_LEG_SQL, transaction
from adapters.stores.sqlite_state import TRAIL_SCHEMA, SqliteStateMixin
from gateway.ports.records import (
    PinRecord,
    check_legs,
)
from gateway.ports.store import (
    DecisionWaiters,
    StoreContext,
    StoreHealth,
    StoreUnavailable,
)

T = TypeVar("T")


class SqliteStore(SqliteStateMixin, SqliteApprovals, SqliteGrants, StoreContext):
    """`gateway.ports.store.Store` on one SQLite file (or ':memory:', see `adapters.stores.memory_store`)."""

    shared = True  # other processes may open the same file (see state_stamp)

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0,
                 synchronous: Literal["NORMAL", "FULL"] = "NORMAL", recheck_every: float | None = 1.0,
                 health_interval: float = 1.0) -> None:
        self.path = str(path)
        self.health = StoreHealth(health_interval)
        self._stamp_conn: sqlite3.Connection | None = None  # event-loop thread only: PRAGMA data_version
        self._stamp_cursor: sqlite3.Cursor | None = None  # reused: a fresh cursor per call costs more
        self._stamp: int | None = None  # this event-loop turn's data version (see state_stamp)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._recheck_every = recheck_every
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._data_version = -1  # worker thread only
        self._suspended: frozenset[str] = frozenset()
        self._waiters = DecisionWaiters()
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Worker thread: open (or reopen, after a failed start) the connection and the schema."""
        if self._conn is not None:
            return self._conn
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.executescript(SCHEMA)
            conn.executescript(TRAIL_SCHEMA)
            conn.executescript(GRANTS_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._reload_suspensions(conn)
        return conn

    def _reload_suspensions(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            rows = conn.execute("SELECT target FROM suspensions").fetchall()
            self._suspended = frozenset(r[0] for r in rows)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._open(), *args)
        except sqlite3.Error as exc:
            error = f"SQLite store {self.path!r} unavailable: {exc}"
            self.health.failed(error)  # a plain attribute write: safe from the worker thread
            raise StoreUnavailable(error) from exc

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on the worker thread; driver errors become StoreUnavailable."""
        if self._closed:
            self.health.failed(f"SQLite store {self.path!r} is closed")
            raise StoreUnavailable(f"SQLite store {self.path!r} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triplock-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)

    async def start(self) -> None:
        if not self._closed:
            self.health.start_watch(self.ping)  # before the first use: a failed start keeps probing
        await self._run(lambda conn: None)
        if self.shared and self._stamp_conn is None:
            try:
                self._stamp_conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout)
                self._stamp_cursor = self._stamp_conn.cursor()
            except sqlite3.Error as exc:
                self.health.failed(f"SQLite store {self.path!r} unavailable: {exc}")
                raise StoreUnavailable(f"SQLite store {self.path!r} unavailable: {exc}") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True  # first: calls racing with the close get StoreUnavailable, not a dead executor
        self.health.stop_watch()
        if self._stamp_conn is not None:
            self._stamp_conn.close()
            self._stamp_conn = self._stamp_cursor = None
        executor = self._executor
        if executor is not None:
            def close(conn: sqlite3.Connection | None) -> None:
                if conn is not None:
                    conn.close()
            await asyncio.get_running_loop().run_in_executor(executor, close, self._conn)
            self._conn = None
            executor.shutdown(wait=True)
        self._waiters.notify_all()  # waiters re-read and get StoreUnavailable instead of hanging

    async def ping(self) -> bool:
        self.health.last_probe = time.monotonic()
        try:
            await self._run(lambda conn: conn.execute(
                "INSERT OR REPLACE INTO health (k, at) VALUES ('probe', ?)", (time.time(),)))
        except StoreUnavailable:
            return False
        self.health.recovered()
        return True

    def state_stamp(self) -> Hashable:
        # One int (cheaper to build and compare than a tuple): the health generation above the data version.
        # The version is read once per event-loop turn (~3 µs a read): the calls decided in one turn share
        # it, as they would share a read that happened just before the first of them.
        version = self._stamp
        if version is None:
            cursor = self._stamp_cursor
            if cursor is None:
                return self.health.generation << 48
            try:
                version = cursor.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                self.health.failed(f"SQLite store {self.path!r} unavailable: {exc}")
                return self.health.generation << 48
            self._stamp = version
            asyncio.get_running_loop().call_soon(self._forget_stamp)
        return self.health.generation << 48 | version

    def _forget_stamp(self) -> None:
        self._stamp = None

    # -- hot path and session state -------------------------------------------------------------

    # call_state, add_trail, get_trail, clear_state: SqliteStateMixin (adapters/stores/sqlite_state.py)

    def suspended(self) -> frozenset[str]:
        return self._suspended

    async def add_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None) -> None:
        wanted = check_legs(legs)
        if not wanted:
            return

        def q(conn: sqlite3.Connection) -> None:
            now = time.time()
            expires = None if ttl_seconds is None else now + ttl_seconds
            with transaction(conn):
                conn.execute("DELETE FROM legs WHERE legs_key = ? AND expires_at <= ?", (legs_key, now))
                conn.executemany(UPSERT_LEG_SQL, [(legs_key, leg, expires) for leg in sorted(wanted)])
        await self._run(q)
        self.health.recovered()

    async def mark_used(self, first_use_key: str) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO first_use (key, at) VALUES (?, ?)", (first_use_key, time.time())))
        self.health.recovered()

    async def save_session(self, session_id: str, record: Mapping[str, Any], ttl_seconds: float) -> None:
        text = json.dumps(dict(record), separators=(",", ":"))
        await self._run(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO sessions (id, record, expires_at) VALUES (?, ?, ?)",
            (session_id, text, time.time() + ttl_seconds)))

    async def load_session(self, session_id: str) -> dict[str, Any] | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT record FROM sessions WHERE id = ? AND expires_at > ?", (session_id, time.time())).fetchone())
        return None if row is None else dict(json.loads(row[0]))

    async def drop_session(self, session_id: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)))

    async def drop_legs(self, legs_key: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM legs WHERE legs_key = ?", (legs_key,)))

    async def set_pin(self, upstream: str, tool: str, definition_hash: str, by: str) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO pins (upstream, tool, hash, pinned_by, at) VALUES (?, ?, ?, ?, ?)",
            (upstream, tool, definition_hash, by, time.time())))
        self.health.recovered()

    async def get_pins(self) -> dict[tuple[str, str], str]:
        rows = await self._run(lambda conn: conn.execute("SELECT upstream, tool, hash FROM pins").fetchall())
        return {(u, t): h for u, t, h in rows}

    async def list_pins(self) -> list[PinRecord]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT upstream, tool, hash, pinned_by, at FROM pins ORDER BY upstream, tool").fetchall())
        return [PinRecord(u, t, h, by, at) for u, t, h, by, at in rows]

    async def save_definitions(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        rows = [(h, json.dumps(dict(d), separators=(",", ":"), sort_keys=True)) for h, d in definitions.items()]
        if rows:
            await self._run(lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO definitions (hash, definition) VALUES (?, ?)", rows))

    async def get_definition(self, definition_hash: str) -> dict[str, Any] | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT definition FROM definitions WHERE hash = ?", (definition_hash,)).fetchone())
        return None if row is None else dict(json.loads(row[0]))

    async def suspend(self, target_id: str, by: str, reason: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO suspensions (target, suspended_by, reason, at) VALUES (?, ?, ?, ?)",
                         (target_id, by, reason, time.time()))
            self._suspended = self._suspended | {target_id}
        await self._run(q)

    async def resume(self, target_id: str, by: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM suspensions WHERE target = ?", (target_id,))
            self._suspended = self._suspended - {target_id}
        await self._run(q)

    # -- approvals: SqliteApprovals (adapters/stores/sqlite_approvals.py) --------------------------
