"""The session state of `RedisStore` apart from approvals: the hot-path read, and the session's
memory (the trail: the call that first contributed each leg, values from untrusted content).

Key layout (under the store's prefix): ``legs:<legs key>`` a hash leg -> expiry (see
`redis_scripts.ADD_LEGS`); ``trail:<key>`` a hash item -> JSON ``[source, unix time]`` whose
whole key expires ``ttl`` after its last write (a sliding window).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.ports.records import CallStateRecord
from gateway.ports.store import SATURATED, StoreHealth

# KEYS: legs hash, used flag, pins hash, principal legs hash; ARGV[1] the pin field
CALL_STATE = """
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2]), redis.call('HGET', KEYS[3], ARGV[1]),
        redis.call('HGETALL', KEYS[4])}
"""

# KEYS[1] trail hash; ARGV limit, ttl ms, saturated marker, then item, value pairs. First source wins.
ADD_TRAIL = """
local key, limit = KEYS[1], tonumber(ARGV[1])
local n = redis.call('HLEN', key)
for i = 4, #ARGV, 2 do
  if redis.call('HEXISTS', key, ARGV[i]) == 0 then
    if n >= limit then redis.call('HSETNX', key, ARGV[3], ARGV[i + 1]); break end
    redis.call('HSET', key, ARGV[i], ARGV[i + 1]); n = n + 1
  end
end
redis.call('PEXPIRE', key, ARGV[2])
return n
"""

# KEYS: the keys to delete; ARGV events channel, change message. Tells other processes' caches.
CLEAR = """
local n = redis.call('DEL', unpack(KEYS))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
"""


def _live(flat: list[str], now: float) -> frozenset[str]:
    return frozenset(leg for leg, exp in zip(flat[::2], flat[1::2], strict=True) if exp == "inf" or float(exp) > now)


class RedisStateMixin:
    """`call_state`, `add_trail`, `get_trail` and `clear_state` of the Redis store."""

    health: StoreHealth
    _client: Any
    _channel: str
    _instance: str

    def _k(self, *parts: str) -> str:
        raise NotImplementedError

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _scripts(self) -> dict[str, Any]:
        scripts: dict[str, Any] | None = getattr(self, "_state_scripts", None)
        if scripts is None:
            register = self._client.register_script
            scripts = {"call_state": register(CALL_STATE), "add_trail": register(ADD_TRAIL), "clear": register(CLEAR)}
            self._state_scripts = scripts
        return scripts

    async def call_state(self, legs_key: str, first_use_key: str, upstream: str, tool: str,
                         principal_legs_key: str | None = None) -> CallStateRecord:
        with self._errors():
            flat, used, pin, principal = await self._scripts()["call_state"](
                keys=[self._k("legs:", legs_key), self._k("used:", first_use_key), self._k("pins"),
                      self._k("legs:", principal_legs_key or "-")],
                args=[json.dumps([upstream, tool])])
        now = time.time()
        return CallStateRecord(_live(flat, now), bool(used), pin, _live(principal, now) if principal_legs_key else
                               frozenset())

    async def add_trail(self, key: str, items: Mapping[str, str], ttl_seconds: float, limit: int) -> None:
        if not items:
            return
        now = time.time()
        args: list[Any] = [limit, max(1, int(ttl_seconds * 1000)), SATURATED]
        for item, source in items.items():
            args += [item, json.dumps([source, now])]
        with self._errors():
            await self._scripts()["add_trail"](keys=[self._k("trail:", key)], args=args)
        self.health.recovered()

    async def get_trail(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        if not keys:
            return {}
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self._k("trail:", key))
                hashes = await pipe.execute()
        rows: list[tuple[float, str, str]] = []
        for mapping in hashes:
            for item, text in mapping.items():
                with contextlib.suppress(ValueError, TypeError):
                    source, at = json.loads(text)
                    rows.append((float(at), str(item), str(source)))
        out: dict[str, tuple[str, float]] = {}
        for at, item, source in sorted(rows):
            out.setdefault(item, (source, at))
        return out

    async def clear_state(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        full = [self._k(prefix, key) for key in keys for prefix in ("legs:", "trail:")]
        with self._errors():
            removed = await self._scripts()["clear"](keys=full, args=[self._channel, "c:" + self._instance])
        self.health.invalidate()
        return int(removed)
