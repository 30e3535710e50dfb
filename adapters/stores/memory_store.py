"""In-process store for tests and development: the SQLite adapter on a private ':memory:' database.

A thin variant on purpose: the same SQL, the same compare-and-set, the same contract tests, so
a test that passes against this store says something about production. Nothing survives the
process, and nothing is shared with another process, so `wait_decided` needs no re-check timer.
"""

from __future__ import annotations

from adapters.stores.sqlite_store import SqliteStore


class MemoryStore(SqliteStore):
    """`gateway.ports.store.Store` held in this process's memory only."""

    shared = False  # no other process can change it: state_stamp moves only with this store's health

    def __init__(self, *, health_interval: float = 1.0) -> None:
        # one worker thread owns the one connection, so the ':memory:' database is a single one
        super().__init__(":memory:", recheck_every=None, health_interval=health_interval)
