"""Upstream sign-ins and grants on Redis: the `gateway.ports.grants.GrantStore` half of `RedisStore`.

Key layout (under the store's prefix): ``oauth:signin:<state>`` a string (JSON) with a TTL, taken
with GETDEL (single use); ``oauth:grant:<upstream>`` a hash ``record`` (JSON) and ``version``,
written by a script that compares the version first (a dropped grant keeps its version);
``oauth:refresh:<upstream>`` a claim, SET NX with a TTL (its value the holder), renewed or released
only by its holder (scripts).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gateway.ports.grants import StoredGrant

if TYPE_CHECKING:
    import redis.asyncio as aredis

# KEYS[1] grant hash; ARGV record JSON, expected version ('' = any). Returns the new version, or -1.
SAVE_GRANT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then return -1 end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'version', current + 1)
return current + 1
"""

# KEYS[1] claim; ARGV holder, ttl ms. The holder may renew its own claim; anyone may take a lapsed one.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] claim; ARGV holder. Deletes the claim only if this holder holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisGrants:
    """Pending sign-ins, grants and refresh claims for `RedisStore` (its client, prefix and errors)."""

    prefix: str
    _client: aredis.Redis

    if TYPE_CHECKING:
        @contextlib.contextmanager
        def _errors(self) -> Iterator[None]: ...

        def _k(self, *parts: str) -> str: ...

    def _register_grant_scripts(self) -> None:
        self._save_grant = self._client.register_script(SAVE_GRANT)
        self._claim = self._client.register_script(CLAIM)
        self._release = self._client.register_script(RELEASE)

    async def save_signin(self, state: str, record: dict[str, Any], ttl_seconds: float) -> None:
        with self._errors():
            await self._client.set(self._k("oauth:signin:", state), json.dumps(record),
                                   px=max(1, int(ttl_seconds * 1000)))

    async def take_signin(self, state: str) -> dict[str, Any] | None:
        with self._errors():
            text = await self._client.getdel(self._k("oauth:signin:", state))
        return json.loads(text) if text else None

    async def load_grant(self, upstream: str) -> StoredGrant | None:
        with self._errors():
            fields = await self._client.hgetall(self._k("oauth:grant:", upstream))
        if not fields or "record" not in fields:
            return None
        return StoredGrant(json.loads(fields["record"]), int(fields.get("version", 0)))

    async def save_grant(self, upstream: str, record: dict[str, Any],
                         expect_version: int | None = None) -> StoredGrant | None:
        with self._errors():
            version = int(await self._save_grant(keys=[self._k("oauth:grant:", upstream)],
                                                 args=[json.dumps(record), "" if expect_version is None
                                                       else str(expect_version)]))
        return None if version < 0 else StoredGrant(dict(record), version)

    async def drop_grant(self, upstream: str) -> None:
        # The version stays (and moves on), so a writer holding the dropped grant's version loses its
        # compare-and-set and a new sign-in gets a version no stale writer can hold.
        with self._errors():
            key = self._k("oauth:grant:", upstream)
            async with self._client.pipeline(transaction=True) as both:  # one MULTI: no save slips in between
                both.hdel(key, "record")
                both.hincrby(key, "version", 1)
                await both.execute()

    async def claim_refresh(self, upstream: str, holder: str, ttl_seconds: float) -> bool:
        with self._errors():
            return bool(await self._claim(keys=[self._k("oauth:refresh:", upstream)],
                                          args=[holder, max(1, int(ttl_seconds * 1000))]))

    async def release_refresh(self, upstream: str, holder: str) -> None:
        with self._errors():
            await self._release(keys=[self._k("oauth:refresh:", upstream)], args=[holder])

