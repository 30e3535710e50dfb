"""SQLite: a database written before approval scopes keeps working (no ALTER TABLE needed)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.records import args_hash
from tests.adapters.stores.test_contract import ARGS, approval


async def test_a_database_from_before_scopes_keeps_working(tmp_path: Path) -> None:
    """SQLite: the old table and index, a record without scope fields; the new code reads and decides it."""
    path = tmp_path / "old.sqlite"
    old = approval(time.time(), session="session-A")
    record = {k: v for k, v in old.to_dict().items() if k not in ("scope", "scope_until", "abandoned_at")}
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE approvals (
                id TEXT PRIMARY KEY, state TEXT NOT NULL, principal TEXT NOT NULL, session_id TEXT NOT NULL,
                upstream TEXT NOT NULL, tool TEXT NOT NULL, args_hash TEXT NOT NULL, policy_revision TEXT NOT NULL,
                expires_at REAL NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
            CREATE INDEX approvals_binding ON approvals (principal, session_id, upstream, tool, args_hash, state);
        """)
        conn.execute("INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (old.id, old.state, old.principal, old.session_id, old.upstream, old.tool, old.args_hash,
                      old.policy_revision, old.expires_at, json.dumps(record)))
    async with SqliteStore(path) as store:
        assert await store.get_approval(old.id) == old  # read as scope 'once'
        from_b = ("agent:a", "session-B", "mail", "send_email", args_hash(ARGS))
        assert (await store.find_pending(*from_b)).id == old.id
        await store.decide(old.id, True, "human:h", "ok", time.time(), scope="session")
        assert (await store.find_approved("agent:a", "session-A", *from_b[2:], "rev-1", time.time())).id == old.id
    with sqlite3.connect(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'approvals' "
                                              "AND type = 'index' AND sql IS NOT NULL")}
    assert indexes == {"approvals_call", "approvals_due", "approvals_state"}
