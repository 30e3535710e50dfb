"""Approvals on Redis: the approval methods of `adapters.stores.redis_store.RedisStore`, as a mixin.

Every state change of an approval is one Lua script (`adapters.stores.redis_scripts`), so it is
atomic and publishes its wake-up in the same step. Lookups read the small index sets: `ap:bind:`
for one exact call (principal, upstream, tool, arguments hash: no session) and `ap:tool:` for the
`principal_tool` approvals of one principal's tool, then apply `PendingApproval.covers` to what
they hold.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from adapters.stores.redis_records import approval_fields, approval_from_fields
from adapters.stores.redis_scripts import ABANDON, CONSUME, CREATE, DECIDE, EXPIRE
from gateway.ports.records import (
    ApprovalScope,
    ApprovalState,
    DecideOutcome,
    DecideStatus,
    PendingApproval,
    binding_key,
    check_decision_scope,
)
from gateway.ports.store import DecisionWaiters, wait_for_decision

if TYPE_CHECKING:
    import redis.asyncio as aredis


class RedisApprovals:
    """The approval half of `gateway.ports.store.Store` for `RedisStore` (client, prefix, errors, waiters)."""

    prefix: str
    _client: aredis.Redis
    _waiters: DecisionWaiters

    if TYPE_CHECKING:
        @contextlib.contextmanager
        def _errors(self) -> Iterator[None]: ...

        def _k(self, *parts: str) -> str: ...

    def _register_approval_scripts(self) -> None:
        """Register the approval scripts on the client (the store's constructor calls this once)."""
        client = self._client
        self._create = client.register_script(CREATE)
        self._decide = client.register_script(DECIDE)
        self._consume = client.register_script(CONSUME)
        self._expire = client.register_script(EXPIRE)
        self._abandon = client.register_script(ABANDON)

    async def create_approval(self, approval: PendingApproval) -> None:
        flat = [x for kv in approval_fields(approval).items() for x in kv]
        args = [self.prefix, approval.id, repr(approval.created_at), repr(approval.expires_at), approval.state,
                approval.binding, *flat]
        with self._errors():
            created = await self._create(keys=[self._k("ap:", approval.id)], args=args)
        if not created:
            raise ValueError(f"approval {approval.id!r} already exists")

    async def get_approval(self, approval_id: str) -> PendingApproval | None:
        with self._errors():
            return approval_from_fields(await self._client.hgetall(self._k("ap:", approval_id)))

    async def _load_many(self, ids: list[str]) -> list[PendingApproval]:
        if not ids:
            return []
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hgetall(self._k("ap:", i))
                rows = await pipe.execute()
        return [a for a in map(approval_from_fields, rows) if a is not None]  # skip ids whose record vanished

    async def list_approvals(self, state: ApprovalState | None = None, upstream: str | None = None,
                             tool: str | None = None, principal: str | None = None,
                             limit: int = 100) -> list[PendingApproval]:
        index = self._k("ap:st:", state) if state else self._k("ap:all")
        out: list[PendingApproval] = []
        start, page = 0, max(limit, 100)
        while len(out) < limit:
            with self._errors():
                ids = [str(i) for i in await self._client.zrevrange(index, start, start + page - 1)]
            for a in await self._load_many(ids):
                if ((state is None or a.state == state) and (upstream is None or a.upstream == upstream)
                        and (tool is None or a.tool == tool) and (principal is None or a.principal == principal)):
                    out.append(a)
            if len(ids) < page:
                break
            start += page
        return out[:max(0, limit)]

    async def decide(self, approval_id: str, approve: bool, approver: str, reason: str,
                     now: float, scope: ApprovalScope = "once", scope_until: float | None = None) -> DecideOutcome:
        if approve:  # the script trusts its scope arguments: check them as decide_transition does
            scope = check_decision_scope(scope, scope_until, now)
        until = repr(float(scope_until)) if approve and scope == "principal_tool" and scope_until is not None else ""
        with self._errors():
            status, changed, fields = await self._decide(
                keys=[self._k("ap:", approval_id)],
                args=[self.prefix, approval_id, "1" if approve else "0", approver, reason, repr(float(now)),
                      scope if approve else "once", until])
        if changed:
            self._waiters.notify(approval_id)  # local waiters at once; others hear the script's PUBLISH
        result: DecideStatus = status
        return DecideOutcome(result, approval_from_fields(fields), changed=bool(changed))

    async def _indexed(self, *sets: str) -> list[PendingApproval]:
        """The approvals whose ids the given index sets hold, oldest first."""
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for key in sets:
                    pipe.smembers(key)
                members: list[Any] = await pipe.execute()
        ids = sorted({str(i) for found in members for i in found})
        return sorted(await self._load_many(ids), key=lambda a: a.id)

    async def find_approved(self, principal: str, session_id: str, upstream: str, tool: str, args_hash: str,
                            policy_revision: str, now: float) -> PendingApproval | None:
        found = await self._indexed(self._k("ap:bind:", binding_key(principal, upstream, tool, args_hash)),
                                    self._k("ap:tool:", binding_key(principal, upstream, tool)))
        usable = [a for a in found
                  if a.usable(policy_revision, now) and a.covers(principal, session_id, upstream, tool, args_hash)]
        usable.sort(key=lambda a: (a.scope == "principal_tool", a.id))  # the exact call's own approval first
        return usable[0] if usable else None

    async def consume(self, approval_id: str) -> bool:
        with self._errors():
            done = bool(await self._consume(keys=[self._k("ap:", approval_id)], args=[self.prefix, approval_id]))
        if done:
            self._waiters.notify(approval_id)
        return done

    async def find_pending(self, principal: str, session_id: str, upstream: str, tool: str,
                           args_hash: str) -> PendingApproval | None:
        now = time.time()
        for a in await self._indexed(self._k("ap:bind:", binding_key(principal, upstream, tool, args_hash))):
            if a.state == "pending" and a.expires_at > now:
                return a
        return None

    async def mark_abandoned(self, approval_id: str, at: float) -> PendingApproval | None:
        with self._errors():
            fields = await self._abandon(keys=[self._k("ap:", approval_id)], args=[repr(float(at))])
        return approval_from_fields(fields) if fields else None

    async def wait_decided(self, approval_id: str, timeout: float) -> PendingApproval | None:
        return await wait_for_decision(self._waiters, approval_id, timeout, self.get_approval)

    async def expire_due(self, now: float, batch: int = 500) -> list[PendingApproval]:
        expired: list[str] = []
        while True:
            with self._errors():
                # The script reads ap:due from its prefix; declaring it routes the script to that key's
                # node on a cluster (with no key, redis-py would send it to a random one).
                ids = await self._expire(keys=[self._k("ap:due")], args=[self.prefix, repr(float(now)), batch])
            expired.extend(ids)
            if len(ids) < batch:
                break
        for i in expired:
            self._waiters.notify(i)
        return await self._load_many(expired)


__all__ = ["RedisApprovals"]
