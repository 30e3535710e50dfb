"""A write-through cache in front of the store for the per-call state (legs, first use, pins).

Why: a store round trip costs 150-400 µs (the SQLite worker-thread hop, a Redis
script), more than the rest of the allowed path together. What may be cached
without weakening a decision:

- session legs when legs are scoped per MCP session: a session lives in one
  gateway process, and this process writes them through, so its copy is exact;
- first use, positively only: once used, a tool stays used; "not yet used" is
  always re-read, so another process's first use is never missed for long and a
  miss can only cause an extra hold (the safe direction);
- pins: set through this cache or loaded from the store; an admin re-pin goes
  through :meth:`set_pin`, and :meth:`forget_pins` drops them all on reload.

Legs scoped per principal are shared across processes and are never cached.
"""

from __future__ import annotations

from gateway.ports.store import CallStateRecord, Store

_MAX_ENTRIES = 100_000  # bounded: a flood of sessions cannot grow memory without limit


class CallStateCache:
    """Serves ``call_state`` from memory when every part of it is known; else one store trip."""

    def __init__(self, store: Store, *, cache_legs: bool) -> None:
        self.store = store
        self.cache_legs = cache_legs
        self._legs: dict[str, frozenset[str]] = {}
        self._used: set[str] = set()
        self._pins: dict[tuple[str, str], str] = {}

    async def call_state(self, legs_key: str, first_use_key: str, upstream: str, tool: str) -> CallStateRecord:
        """The state one decision needs; zero store round trips on a warm session."""
        legs = self._legs.get(legs_key) if self.cache_legs else None
        pin = self._pins.get((upstream, tool))
        if legs is not None and first_use_key in self._used and pin is not None:
            return CallStateRecord(legs, True, pin)
        record = await self.store.call_state(legs_key, first_use_key, upstream, tool)
        if self.cache_legs:
            self._remember_legs(legs_key, record.legs)
        if record.tool_used_before:
            self._remember_used(first_use_key)
        if record.pinned_hash is not None:
            self._pins[(upstream, tool)] = record.pinned_hash
        return record

    async def add_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None) -> None:
        await self.store.add_legs(legs_key, legs, ttl_seconds)
        if self.cache_legs:
            self._remember_legs(legs_key, self._legs.get(legs_key, frozenset()) | legs)

    async def mark_used(self, first_use_key: str) -> None:
        await self.store.mark_used(first_use_key)
        self._remember_used(first_use_key)

    async def set_pin(self, upstream: str, tool: str, definition_hash: str, by: str) -> None:
        await self.store.set_pin(upstream, tool, definition_hash, by)
        self._pins[(upstream, tool)] = definition_hash

    def forget_session(self, legs_key: str) -> None:
        """Drop a closed session's legs from memory (they stay in the store)."""
        self._legs.pop(legs_key, None)

    def forget_pins(self) -> None:
        self._pins.clear()

    def _remember_legs(self, key: str, legs: frozenset[str]) -> None:
        if len(self._legs) >= _MAX_ENTRIES and key not in self._legs:
            self._legs.pop(next(iter(self._legs)))
        self._legs[key] = legs

    def _remember_used(self, key: str) -> None:
        if len(self._used) < _MAX_ENTRIES:
            self._used.add(key)
