"""A write-through cache in front of the store for the per-call state (legs, first use, pins).

Why: a store round trip costs 130-170 µs of CPU (the SQLite worker-thread hop, a Redis
script), more than the rest of the allowed path together. What may be answered from memory
without weakening a decision:

- nothing while the store is down: the store's health (``Store.health``, a breaker its
  adapter keeps from its own operations and a periodic probe) is consulted first, and a down
  store makes ``call_state`` raise StoreUnavailable, so the policy fails closed for writes,
  E legs and holds even on a warm session;
- session legs (when legs are scoped per MCP session) and pins, only while the store's
  ``state_stamp()`` is the one read before they were: it changes whenever another process
  (or this one's own writes) may have changed them, so legs another process added are never
  missed (sessions move between workers and replicas). Cached legs are merged with what is
  read and written, never overwritten: legs of a session only grow;
- first use, positively only: once used, a tool stays used; "not yet used" is always re-read;
- and never for a ``fresh`` request (calls with an E leg or a write: the calls a down store
  must refuse go to the store every time, so a store that just died is noticed at once).

Legs of a principal expire with their window (a sliding window in the store), so they are also
cached for at most ``PRINCIPAL_LEGS_MAX_AGE`` seconds: a leg that ran out is forgotten within a
second, and a busy principal costs one store trip per second, not one per call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable

from gateway.ports.store import CallStateRecord, Store, StoreUnavailable

_MAX_ENTRIES = 100_000  # bounded: a flood of sessions cannot grow memory without limit
_NEVER = object()  # the stamp of legs known only from this process's writes: never valid alone
PRINCIPAL_LEGS_MAX_AGE = 1.0  # seconds a principal's (expiring) legs are served from memory


class CallStateCache:
    """Serves ``call_state`` from memory when every part of it is known and current; else one store trip."""

    def __init__(self, store: Store, *, cache_legs: bool, on_write_failed: Callable[[], None] | None = None) -> None:
        self.store = store
        self.cache_legs = cache_legs
        self.on_write_failed = on_write_failed
        self._legs: dict[str, tuple[frozenset[str], Hashable]] = {}
        self._principal_legs: dict[str, tuple[frozenset[str], Hashable, float]] = {}
        # legs this process learnt that the store may lack (a write failed, or is in flight), with their ttl
        self._unwritten: dict[str, tuple[frozenset[str], float | None]] = {}
        self._used: set[str] = set()
        self._pins: dict[tuple[str, str], tuple[str, Hashable]] = {}

    async def call_state(
        self,
        legs_key: str,
        first_use_key: str,
        upstream: str,
        tool: str,
        fresh: bool = False,
        principal_key: str | None = None,
    ) -> CallStateRecord:
        """The state one decision needs; zero store round trips on a warm session while nothing changed.

        ``legs_key`` is the session's legs (kept while the session lives); ``principal_key``, when
        given, the principal's windowed legs, returned apart in ``principal_legs``.
        Raises StoreUnavailable while the store is down (one probe at most per probe interval).
        """
        store = self.store
        health = store.health
        if not health.ok and (not health.probe_due() or not await store.ping()):
            raise StoreUnavailable(f"the state store is down: {health.last_error}")
        stamp = store.state_stamp()  # read before the store: a change after it shows as a new stamp
        cached = self._legs.get(legs_key) if self.cache_legs else None
        if not fresh and first_use_key in self._used:
            pin = self._pins.get((upstream, tool))
            if cached is not None and cached[1] == stamp and pin is not None and pin[1] == stamp:
                if principal_key is None:
                    return CallStateRecord(cached[0], True, pin[0])
                windowed = self._principal_legs.get(principal_key)
                age = time.monotonic() - windowed[2] if windowed is not None else PRINCIPAL_LEGS_MAX_AGE
                if windowed is not None and windowed[1] == stamp and age < PRINCIPAL_LEGS_MAX_AGE:
                    return CallStateRecord(cached[0], True, pin[0], windowed[0])
        try:
            record = await store.call_state(legs_key, first_use_key, upstream, tool, principal_key)
        except StoreUnavailable as exc:
            health.failed(str(exc))  # whatever the adapter did: this process saw the store fail
            raise
        if self._unwritten:
            record = await self._write_unwritten(record, legs_key, principal_key)
        if principal_key is not None:
            if len(self._principal_legs) >= _MAX_ENTRIES and principal_key not in self._principal_legs:
                self._principal_legs.pop(next(iter(self._principal_legs)))
            self._principal_legs[principal_key] = (record.principal_legs, stamp, time.monotonic())
        if self.cache_legs:
            self._remember_legs(legs_key, record.legs, stamp)
        if record.tool_used_before:
            self._remember_used(first_use_key)
        if record.pinned_hash is not None:
            self._pins[(upstream, tool)] = (record.pinned_hash, stamp)
        return record

    async def _write_unwritten(
        self, record: CallStateRecord, legs_key: str, principal_key: str | None
    ) -> CallStateRecord:
        """Legs this process learnt that the store lacks (a write failed, or is in flight): count them,
        and write them (again) so other processes learn them too."""
        legs, windowed = record.legs, record.principal_legs
        for key, known in ((legs_key, legs), (principal_key, windowed)):
            pending = self._unwritten.get(key) if key is not None else None
            if key is None or pending is None or pending[0] <= known:
                continue
            await self.add_legs(key, pending[0] - known, pending[1])
            if key == legs_key:
                legs = legs | pending[0]
            else:
                windowed = windowed | pending[0]
        return CallStateRecord(legs, record.tool_used_before, record.pinned_hash, windowed)

    async def add_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None) -> None:
        """Record legs: merged into memory first (this process's next decisions see them even if the
        write fails), then written; a failed write opens the store's breaker and raises."""
        self.note_legs(legs_key, legs, ttl_seconds)
        await self._write(self.store.add_legs(legs_key, legs, ttl_seconds))
        pending = self._unwritten.get(legs_key)
        if pending is not None:
            rest = pending[0] - legs
            if rest:
                self._unwritten[legs_key] = (rest, pending[1])
            else:
                del self._unwritten[legs_key]

    def note_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None = None) -> None:
        """Merge legs into memory only (a union, never a replacement): this process's next decisions
        see them at once, whichever session of the principal they come from, and the next read of
        the key writes them if the store still lacks them."""
        pending = self._unwritten.get(legs_key)
        if pending is not None or len(self._unwritten) < _MAX_ENTRIES:
            self._unwritten[legs_key] = ((pending[0] if pending else frozenset()) | legs, ttl_seconds)
        windowed = self._principal_legs.get(legs_key)
        if windowed is not None:
            self._principal_legs[legs_key] = (windowed[0] | legs, windowed[1], windowed[2])
            return
        if self.cache_legs:
            cached = self._legs.get(legs_key)
            if cached is None:
                self._remember_legs(legs_key, legs, _NEVER)
            else:
                self._remember_legs(legs_key, cached[0] | legs, cached[1])

    async def mark_used(self, first_use_key: str) -> None:
        await self._write(self.store.mark_used(first_use_key))
        self._remember_used(first_use_key)

    async def set_pin(self, upstream: str, tool: str, definition_hash: str, by: str) -> None:
        await self._write(self.store.set_pin(upstream, tool, definition_hash, by))
        self._pins[(upstream, tool)] = (definition_hash, _NEVER)  # re-read once: our write moved the stamp

    def forget(self, keys: list[str]) -> None:
        """Drop what is cached under these legs keys (an operator cleared them, or the session ended)."""
        for key in keys:
            self._legs.pop(key, None)
            self._principal_legs.pop(key, None)
            self._unwritten.pop(key, None)

    def forget_pins(self) -> None:
        self._pins.clear()

    async def _write(self, write: Awaitable[None]) -> None:
        try:
            await write
        except StoreUnavailable as exc:
            self.store.health.failed(str(exc))
            if self.on_write_failed is not None:
                self.on_write_failed()
            raise

    def _remember_legs(self, key: str, legs: frozenset[str], stamp: Hashable) -> None:
        if len(self._legs) >= _MAX_ENTRIES and key not in self._legs:
            self._legs.pop(next(iter(self._legs)))
        self._legs[key] = (legs, stamp)

    def _remember_used(self, key: str) -> None:
        if len(self._used) < _MAX_ENTRIES:
            self._used.add(key)
