"""Approvals on SQLite: the approval methods of `adapters.stores.sqlite_store.SqliteStore`, as a mixin.

The `approvals` table keeps the queried fields as columns and the whole record as JSON, written
together. Fields added since the table was created (`scope`, `scope_until`, `abandoned_at`) live
in the JSON only: lookups select by the columns every database has (principal, upstream, tool,
args hash, state, policy revision, expiry, all indexed) and apply `PendingApproval.covers` to
the few rows that match, so an existing database needs no ALTER TABLE and keeps working.

Every state change reads and writes inside `BEGIN IMMEDIATE`, so `decide` is a compare-and-set and
`consume` single use, across processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.stores.sqlite_schema import transaction
from gateway.ports.records import (
    ApprovalScope,
    ApprovalState,
    DecideOutcome,
    PendingApproval,
    decide_transition,
)
from gateway.ports.store import DecisionWaiters, wait_for_decision

T = TypeVar("T")

_COLUMNS = "id, state, principal, session_id, upstream, tool, args_hash, policy_revision, expires_at, record"


def _record_json(a: PendingApproval) -> str:
    return json.dumps(a.to_dict(), separators=(",", ":"))


def _row_values(a: PendingApproval) -> tuple[Any, ...]:
    return (a.id, a.state, a.principal, a.session_id, a.upstream, a.tool, a.args_hash, a.policy_revision,
            a.expires_at, _record_json(a))


def _load(record: str) -> PendingApproval:
    return PendingApproval.from_dict(json.loads(record))


def _write(conn: sqlite3.Connection, a: PendingApproval) -> None:
    conn.execute("UPDATE approvals SET state=?, expires_at=?, record=? WHERE id=?",
                 (a.state, a.expires_at, _record_json(a), a.id))


class SqliteApprovals:
    """The approval half of `gateway.ports.store.Store` for `SqliteStore` (which supplies `_run`)."""

    _waiters: DecisionWaiters
    _recheck_every: float | None

    if TYPE_CHECKING:
        async def _run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def create_approval(self, approval: PendingApproval) -> None:
        def q(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO approvals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             _row_values(approval))
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"approval {approval.id!r} already exists") from exc
        await self._run(q)

    async def get_approval(self, approval_id: str) -> PendingApproval | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT record FROM approvals WHERE id = ?", (approval_id,)).fetchone())
        return None if row is None else _load(row[0])

    async def list_approvals(self, state: ApprovalState | None = None, upstream: str | None = None,
                             tool: str | None = None, principal: str | None = None,
                             limit: int = 100) -> list[PendingApproval]:
        where, params = [], []
        for column, value in (("state", state), ("upstream", upstream), ("tool", tool), ("principal", principal)):
            if value is not None:
                where.append(f"{column} = ?")  # column names are the fixed literals above
                params.append(value)
        sql = "SELECT record FROM approvals" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(sql, (*params, max(0, int(limit)))).fetchall())
        return [_load(r[0]) for r in rows]

    async def decide(self, approval_id: str, approve: bool, approver: str, reason: str,
                     now: float, scope: ApprovalScope = "once", scope_until: float | None = None) -> DecideOutcome:
        def q(conn: sqlite3.Connection) -> DecideOutcome:
            with transaction(conn):
                row = conn.execute("SELECT record FROM approvals WHERE id = ?", (approval_id,)).fetchone()
                outcome = decide_transition(None if row is None else _load(row[0]), approve, approver, reason, now,
                                            scope, scope_until)
                if outcome.changed and outcome.approval is not None:
                    _write(conn, outcome.approval)
            return outcome
        outcome = await self._run(q)
        if outcome.changed:
            self._waiters.notify(approval_id)
        return outcome

    async def find_approved(self, principal: str, session_id: str, upstream: str, tool: str, args_hash: str,
                            policy_revision: str, now: float) -> PendingApproval | None:
        # Every approved approval of this principal's tool under this revision: a handful at most
        # (each is either used once or lapses), so `covers` is applied here rather than in SQL.
        rows = await self._run(lambda conn: conn.execute(
            "SELECT record FROM approvals WHERE principal = ? AND upstream = ? AND tool = ? AND state = 'approved' "
            "AND policy_revision = ? AND expires_at > ? ORDER BY id",
            (principal, upstream, tool, policy_revision, now)).fetchall())
        usable = [a for a in map(_load, (r[0] for r in rows))
                  if a.usable(policy_revision, now) and a.covers(principal, session_id, upstream, tool, args_hash)]
        usable.sort(key=lambda a: (a.scope == "principal_tool", a.id))  # the exact call's own approval first
        return usable[0] if usable else None

    async def consume(self, approval_id: str) -> bool:
        def q(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                row = conn.execute("SELECT record FROM approvals WHERE id = ? AND state = 'approved'",
                                   (approval_id,)).fetchone()
                if row is None:
                    return False
                _write(conn, replace(_load(row[0]), state="executed"))
                return True
        done = await self._run(q)
        if done:
            self._waiters.notify(approval_id)
        return done

    async def find_pending(self, principal: str, session_id: str, upstream: str, tool: str,
                           args_hash: str) -> PendingApproval | None:
        row = await self._run(lambda conn: conn.execute(
            "SELECT record FROM approvals WHERE principal = ? AND upstream = ? AND tool = ? AND args_hash = ? "
            "AND state = 'pending' AND expires_at > ? ORDER BY id LIMIT 1",
            (principal, upstream, tool, args_hash, time.time())).fetchone())
        return None if row is None else _load(row[0])

    async def mark_abandoned(self, approval_id: str, at: float) -> PendingApproval | None:
        def q(conn: sqlite3.Connection) -> PendingApproval | None:
            with transaction(conn):
                row = conn.execute("SELECT record FROM approvals WHERE id = ? AND state = 'pending'",
                                   (approval_id,)).fetchone()
                current = None if row is None else _load(row[0])
                if current is None or current.abandoned_at is not None:
                    return None
                stamped = replace(current, abandoned_at=at)
                _write(conn, stamped)
                return stamped
        return await self._run(q)

    async def wait_decided(self, approval_id: str, timeout: float) -> PendingApproval | None:
        return await wait_for_decision(self._waiters, approval_id, timeout, self.get_approval, self._recheck_every)

    async def expire_due(self, now: float) -> list[PendingApproval]:
        def q(conn: sqlite3.Connection) -> list[PendingApproval]:
            out = []
            with transaction(conn):
                for state in ("pending", "approved"):
                    rows = conn.execute("SELECT record FROM approvals WHERE state = ? AND expires_at <= ?",
                                        (state, now)).fetchall()
                    for (record,) in rows:
                        current = _load(record)
                        # a lapsed approval keeps who approved it and when; a pending one is stamped now
                        lapsed = replace(current, state="expired",
                                         decided_at=now if current.state == "pending" else current.decided_at)
                        _write(conn, lapsed)
                        out.append(lapsed)
                # garbage-collect legs that ran out, so abandoned sessions do not accumulate
                conn.execute("DELETE FROM legs WHERE expires_at <= ?", (now,))
            return out
        expired = await self._run(q)
        for a in expired:
            self._waiters.notify(a.id)
        return expired


__all__ = ["SqliteApprovals"]
