"""What the gateway remembers about a session and its principal: legs, where they came from, and the
values that arrived in untrusted content.

Two keys per call (``MemoryKeys``): the MCP session's (kept ``legs.session_ttl_seconds`` after its
last change, dropped when the session ends) and the principal's (a sliding window of
``legs.window_seconds``), so reading private data in one session and sending it out from another,
or from a sessionless request, is still one trifecta. A sessionless (2026-07-28) request has only
the principal's key. ``legs.scope`` may narrow this to one of the two.

Under each key the store keeps the legs (``Store.add_legs``: the hot path reads them, cached by
``CallStateCache``) and the trail (``Store.add_trail``): ``leg:P`` -> the call that first
contributed P, ``value:host:evil.example`` -> the call whose untrusted result carried it. The trail
is read only for calls that act on the world (a write, or E): they are the ones provenance and the
trifecta's reason concern, and they ask the store anyway (see ``pipeline``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from gateway.guard.state_cache import CallStateCache
from gateway.ports.store import SATURATED, CallStateRecord, Store, StoreUnavailable
from policy import CompiledPolicy, Leg
from policy.models import EMPTY_MAP

_LEG_ITEM = "leg:"
_VALUE_ITEM = "value:"


class MemoryKeys(NamedTuple):
    """The store keys one call's legs and trail live under (None: not kept at that level)."""

    session: str | None
    principal: str | None

    @property
    def legs(self) -> str:
        """The session's key for the hot path (a key nothing is written to when there is none)."""
        return self.session or "legs:none"

    def all(self) -> list[str]:
        return [k for k in (self.session, self.principal) if k is not None]


class Recall(NamedTuple):
    """The trail of one call's keys, as the policy reads it (see ``policy.CallState``)."""

    tainted: Mapping[str, str] = EMPTY_MAP
    leg_sources: Mapping[str, str] = EMPTY_MAP
    saturated: bool = False


def session_key(session_id: str) -> str:
    """The store key of an MCP session's legs and trail."""
    return f"legs:session:{session_id}"


def principal_key(principal: str) -> str:
    """The store key of a principal's windowed legs and trail."""
    return f"legs:principal:{principal}"


def lacks(keys: MemoryKeys, st: CallStateRecord, legs: frozenset[Leg]) -> bool:
    """Whether a key the call's legs go to does not hold them all yet (``st``: what the keys hold)."""
    return (keys.session is not None and not legs <= st.legs) or (
        keys.principal is not None and not legs <= st.principal_legs
    )


def with_legs(st: CallStateRecord, legs: frozenset[Leg]) -> CallStateRecord:
    """``st`` once ``legs`` were written to both keys."""
    text = frozenset(str(x) for x in legs)
    return CallStateRecord(st.legs | text, st.tool_used_before, st.pinned_hash, st.principal_legs | text)


def _when(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


class SessionMemory:
    """Reads and writes the legs and trail of sessions and principals; see the module docstring."""

    def __init__(self, store: Store, cache: CallStateCache) -> None:
        self.store = store
        self.cache = cache

    @staticmethod
    def keys(policy: CompiledPolicy, principal: str, session_id: str | None) -> MemoryKeys:
        """The keys of a call from ``principal`` in ``session_id`` (None: a sessionless request)."""
        scope = policy.legs_scope
        session = session_key(session_id) if session_id is not None and scope != "principal" else None
        windowed = principal_key(principal) if scope != "session" or session is None else None
        return MemoryKeys(session, windowed)

    async def recall(self, keys: MemoryKeys) -> Recall:
        """The trail under ``keys``: values from untrusted content, first sources of legs, saturation."""
        items = await self.store.get_trail(keys.all())
        if not items:
            return Recall()
        tainted: dict[str, str] = {}
        sources: dict[str, str] = {}
        for item, (source, at) in items.items():
            if item.startswith(_VALUE_ITEM):
                tainted[item[len(_VALUE_ITEM) :]] = f"{source} at {_when(at)}"
            elif item.startswith(_LEG_ITEM):
                sources[item[len(_LEG_ITEM) :]] = f"{source} at {_when(at)}"
        return Recall(tainted, sources, SATURATED in items)

    async def remember_legs(
        self, policy: CompiledPolicy, keys: MemoryKeys, have: CallStateRecord, legs: frozenset[Leg], source: str
    ) -> None:
        """Add ``legs`` where each key lacks them, with ``source`` as the first contributor.
        Raises StoreUnavailable (memory keeps them for this process's next decisions)."""
        wanted = frozenset(str(x) for x in legs)
        writes: list[Awaitable[None]] = []
        for key, known, ttl in self._levels(policy, keys, have):
            missing = wanted - known
            if missing:
                writes.append(self.cache.add_legs(key, wanted, ttl))
                trail = {f"{_LEG_ITEM}{leg}": source for leg in sorted(missing)}
                writes.append(self.store.add_trail(key, trail, ttl, policy.memory_limit))
        if writes:
            await _all(writes)

    async def remember_values(
        self, policy: CompiledPolicy, keys: MemoryKeys, values: Iterable[str], saturated: bool, source: str
    ) -> None:
        """Remember value keys that arrived in untrusted content from ``source`` (and that the result
        held more than was looked at). Raises StoreUnavailable."""
        items = {f"{_VALUE_ITEM}{value}": source for value in values}
        if saturated:
            items[SATURATED] = source
        if not items:
            return
        limit = policy.memory_limit
        await _all([self.store.add_trail(key, items, ttl, limit) for key, _known, ttl in self._levels(policy, keys)])

    def note_legs(self, policy: CompiledPolicy, keys: MemoryKeys, legs: frozenset[Leg]) -> None:
        """The store refused a write: keep the legs in this process's memory, written when it is back."""
        text = frozenset(str(x) for x in legs)
        for key, _known, ttl in self._levels(policy, keys):
            self.cache.note_legs(key, text, ttl)

    async def forget_session(self, session_id: str) -> None:
        """A session ended: its own legs and trail go (the principal's window stays)."""
        key = session_key(session_id)
        self.cache.forget([key])
        await self.store.clear_state([key])

    async def clear(self, principal: str | None = None, session_id: str | None = None) -> int:
        """An operator clears a principal's window, a session's memory, or both; other processes
        notice through the store's state stamp."""
        keys = [k for k in (principal and principal_key(principal), session_id and session_key(session_id)) if k]
        self.cache.forget(keys)
        return await self.store.clear_state(keys)

    async def show(self, principal: str | None, session_id: str | None) -> dict[str, Any]:
        """What is kept for a principal and/or a session: legs per key and the trail (the state API)."""
        keys = MemoryKeys(
            session_key(session_id) if session_id else None, principal_key(principal) if principal else None
        )
        record = await self.store.call_state(keys.legs, "-", "-", "-", keys.principal)
        return {
            "principal": principal,
            "session": session_id,
            "legs": {
                **({"session": "".join(sorted(record.legs))} if keys.session else {}),
                **({"principal": "".join(sorted(record.principal_legs))} if keys.principal else {}),
            },
            "trail": await self._trail(keys.all()),
        }

    async def history(self, session_id: str, principal: str) -> list[dict[str, Any]]:
        """The console's "what this session did before": where each leg came from, and the untrusted
        values that arrived, oldest first (``SessionHistory`` of the approvals console), for the
        session and the principal's window together: the session may have ended since the hold,
        and the window is what the trifecta counted too."""
        keys = [principal_key(principal)]
        if not session_id.startswith("principal:"):  # a sessionless call's approval names its principal
            keys.insert(0, session_key(session_id))
        return await self._trail(keys)

    async def _trail(self, keys: list[str]) -> list[dict[str, Any]]:
        items = await self.store.get_trail(keys)
        rows: list[tuple[float, dict[str, Any]]] = []
        for item, (source, at) in items.items():
            entry: dict[str, Any] = {"when": _when(at), "tool": source}
            if item.startswith(_LEG_ITEM):
                entry["legs"] = item[len(_LEG_ITEM) :]
                entry["detail"] = f"first brought {_LEG_NAMES.get(entry['legs'], entry['legs'])} into the session"
            elif item.startswith(_VALUE_ITEM):
                kind, _, value = item[len(_VALUE_ITEM) :].partition(":")
                entry["detail"] = f"returned untrusted content carrying the {kind} {value}"
            elif item == SATURATED:
                entry["detail"] = "returned more untrusted values than Triplock keeps"
            else:
                continue
            rows.append((at, entry))
        return [entry for _at, entry in sorted(rows, key=lambda r: r[0])]

    def _levels(
        self, policy: CompiledPolicy, keys: MemoryKeys, have: CallStateRecord | None = None
    ) -> list[tuple[str, frozenset[str], float]]:
        out: list[tuple[str, frozenset[str], float]] = []
        if keys.session is not None:
            out.append((keys.session, have.legs if have else frozenset(), float(policy.legs_session_ttl_seconds)))
        if keys.principal is not None:
            known = have.principal_legs if have else frozenset()
            out.append((keys.principal, known, float(policy.legs_window_seconds)))
        return out


_LEG_NAMES = {"P": "private data (P)", "U": "untrusted input (U)", "E": "an external send (E)"}


async def _all(writes: Sequence[Awaitable[None]]) -> None:
    """Run the writes together, shielded (the upstream may already have acted); the first
    StoreUnavailable is raised once all have finished."""
    results = await asyncio.shield(asyncio.gather(*writes, return_exceptions=True))
    for result in results:
        if isinstance(result, StoreUnavailable):
            raise result
        if isinstance(result, BaseException):
            raise result


__all__ = ["MemoryKeys", "Recall", "SessionMemory", "lacks", "principal_key", "session_key", "with_legs"]
