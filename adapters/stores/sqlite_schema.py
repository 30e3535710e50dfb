"""The SQL behind `adapters.stores.sqlite_store.SqliteStore`: its schema, the hot-path statements and
the write transaction every read-then-write uses."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so read-then-write is atomic."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")



SCHEMA = """
CREATE TABLE IF NOT EXISTS legs (
    legs_key TEXT NOT NULL, leg TEXT NOT NULL, expires_at REAL,  -- NULL: never expires
    PRIMARY KEY (legs_key, leg)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS legs_expiry ON legs (expires_at);
CREATE TABLE IF NOT EXISTS first_use (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (
    upstream TEXT NOT NULL, tool TEXT NOT NULL, hash TEXT NOT NULL, pinned_by TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (upstream, tool)) WITHOUT ROWID;
-- tool definitions by pin hash (content-addressed): what a pin approved, for the diff
CREATE TABLE IF NOT EXISTS definitions (hash TEXT PRIMARY KEY, definition TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suspensions (
    target TEXT PRIMARY KEY, suspended_by TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL) WITHOUT ROWID;
-- approvals: the queried fields as columns, the whole record as JSON (always written together).
-- Fields added later (scope, scope_until, abandoned_at) are in the JSON only, so databases made
-- before them work unchanged; lookups bind principal, upstream and tool (the session is no part
-- of an approval's binding any more: the old index that led with it is replaced).
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, principal TEXT NOT NULL, session_id TEXT NOT NULL,
    upstream TEXT NOT NULL, tool TEXT NOT NULL, args_hash TEXT NOT NULL, policy_revision TEXT NOT NULL,
    expires_at REAL NOT NULL, record TEXT NOT NULL) WITHOUT ROWID;
DROP INDEX IF EXISTS approvals_binding;
CREATE INDEX IF NOT EXISTS approvals_call ON approvals (principal, upstream, tool, state, args_hash);
CREATE INDEX IF NOT EXISTS approvals_due ON approvals (state, expires_at);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, id);
-- one row the health probe rewrites: proof that the file still takes writes
CREATE TABLE IF NOT EXISTS health (k TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
"""

UPSERT_LEG_SQL = """
INSERT INTO legs (legs_key, leg, expires_at) VALUES (?, ?, ?)
ON CONFLICT (legs_key, leg) DO UPDATE SET expires_at =
    CASE WHEN excluded.expires_at IS NULL OR legs.expires_at IS NULL THEN NULL
         ELSE max(legs.expires_at, excluded.expires_at) END
"""  # a leg's lifetime only grows: the stricter reading when the window changes

__all__ = ["SCHEMA", "UPSERT_LEG_SQL", "transaction"]
