"""The shared store: Redis, through redis-py's asyncio client, for several gateway processes.

The key layout is documented with the Lua scripts that use it (`adapters.stores.redis_scripts`).

`call_state` is one script call over legs/used/pins, none of which grows with the
number of approvals. Every state change of an approval is one Lua script, so it is atomic (the
compare-and-set of `decide`, single use of `consume`, exactly-once expiry) and publishes its
wake-up in the same step. Scripts derive index keys from the prefix, so all of one store's keys
must be on one node: one Redis, a Sentinel-managed primary, or, on Redis Cluster, one hash slot
(the prefix carries a hash tag there: "{triplock}:"). The scripts: `adapters.stores.redis_scripts`.

Commands are never retried: a retried script could report a decision it had already taken as
a conflict. A failed command raises StoreUnavailable, and the gateway fails closed.

Health: a failed command, a lost pub/sub connection or a probe that fails or times out opens
`health`; a probe (a SET) passes only while subscribed (a missed change notice leaves caches
stale). `state_stamp()` counts other instances' change notices (legs or pins changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from adapters.stores.redis_approvals import RedisApprovals
from adapters.stores.redis_connect import hash_tagged, is_cluster_url, redact, redis_client
from adapters.stores.redis_grants import RedisGrants
from adapters.stores.redis_scripts import ADD_LEGS, SET_PIN, SUSPENSION
from adapters.stores.redis_state import RedisStateMixin
from gateway.ports.records import (
    PinRecord,
    check_legs,
)
from gateway.ports.store import (
    DEFAULT_PREFIX,
    DecisionWaiters,
    StoreContext,
    StoreHealth,
    StoreUnavailable,
)

log = logging.getLogger("triplock.store.redis")


class RedisStore(RedisStateMixin, RedisApprovals, RedisGrants, StoreContext):
    """`gateway.ports.store.Store` on Redis; decisions and suspensions travel between processes by pub/sub."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, socket_timeout: float = 2.0,
                 connect_timeout: float = 1.0, max_connections: int = 64, health_interval: float = 1.0) -> None:
        self.url = redact(url)  # for messages: never the password
        # On a cluster every key shares the prefix's hash tag: one slot, so each script's keys are on one node.
        self.prefix = hash_tagged(prefix) if is_cluster_url(url) else prefix
        self.health = StoreHealth(health_interval)
        self._instance = os.urandom(8).hex()  # tells this instance's change notices from others'
        self._changes = 0  # other instances' change notices heard: part of state_stamp
        # A blocking pool: a burst of calls beyond `max_connections` queues for a connection (up to
        # socket_timeout) instead of failing with "Too many connections", which would fail closed.
        # One server's URL, redis+sentinel:// for the primary Sentinel names, or redis+cluster:// (whose
        # client queues the same way): adapters.stores.redis_connect.
        self._client = redis_client(
            url, max_connections=max_connections, timeout=socket_timeout, decode_responses=True,
            socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), 0),
            health_check_interval=30)
        self._register_approval_scripts()
        self._register_grant_scripts()
        self._add_legs = self._client.register_script(ADD_LEGS)
        self._set_pin = self._client.register_script(SET_PIN)
        self._suspend = self._client.register_script(SUSPENSION)
        self._channel = self.prefix + "events"
        self._suspended: frozenset[str] = frozenset()
        self._waiters = DecisionWaiters()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while subscribed: cross-process wake-ups are live

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            error = f"Redis store {self.url!r} unavailable: {exc}"
            self.health.failed(error)
            raise StoreUnavailable(error) from exc

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    # -- lifecycle and pub/sub ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the pub/sub listener (it reconnects by itself), then check the server answers.

        If Redis is down this raises StoreUnavailable but the store stays usable: every call
        retries the server, and the listener resubscribes when it is back.
        """
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="triplock-redis-store-listener")
        self.health.start_watch(self.ping)
        with self._errors():  # the probe's SET, not PING: on a cluster PING asks every node, not our slot's
            await self._probe()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), 5.0)
        if not self.listening.is_set():
            raise StoreUnavailable(f"Redis store {self.url!r}: could not subscribe to {self._channel!r}")

    async def aclose(self) -> None:
        self.health.stop_watch()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self.listening.clear()
        self._waiters.notify_all()
        await self._client.aclose()  # and its pool, or a cluster client's connections to every node

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
                    pass  # wait for the server's confirmation: from here on no message is missed
                self._suspended = frozenset(str(k) for k in await self._client.hkeys(self._k("susp")))
                self.health.invalidate()  # change notices may have been missed while not subscribed
                self.listening.set()
                self._waiters.notify_all()  # decisions taken while we were not subscribed
                backoff = 0.05
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._on_message(str(msg["data"]))
            except Exception as exc:  # whatever broke, keep trying: a dead listener means missed wake-ups
                self.listening.clear()
                self.health.failed(f"Redis store {self.url!r}: pub/sub connection lost: {exc!r}")
                log.warning("Redis store pub/sub lost (%r); reconnecting in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)  # reconnect back-off, not synchronisation
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _on_message(self, data: str) -> None:
        kind, _, ident = data.partition(":")
        if kind == "d":
            self._waiters.notify(ident)
        elif kind == "s":
            self._suspended = self._suspended | {ident}
        elif kind == "r":
            self._suspended = self._suspended - {ident}
        elif kind == "c" and ident != self._instance:
            self._changes += 1

    async def ping(self) -> bool:
        self.health.last_probe = time.monotonic()
        try:
            with self._errors():
                await self._probe()
        except StoreUnavailable:
            return False
        if self.listening.is_set():
            self.health.recovered()
        else:
            self.health.failed(f"Redis store {self.url!r}: not subscribed to {self._channel!r} (yet)")
        return self.listening.is_set()

    async def _probe(self) -> None:
        await self._client.set(self._k("health"), repr(time.time()), px=60_000)

    def state_stamp(self) -> Hashable:
        return (self.health.generation, self._changes)

    # -- hot path and session state -------------------------------------------------------------

    # call_state, add_trail, get_trail, clear_state: RedisStateMixin (adapters/stores/redis_state.py)

    def suspended(self) -> frozenset[str]:
        return self._suspended

    async def add_legs(self, legs_key: str, legs: frozenset[str], ttl_seconds: float | None) -> None:
        wanted = check_legs(legs)
        if not wanted:
            return
        now = time.time()
        expiry = "inf" if ttl_seconds is None else repr(now + ttl_seconds)
        with self._errors():
            await self._add_legs(keys=[self._k("legs:", legs_key)],
                                 args=[repr(now), expiry, self._channel, "c:" + self._instance, *sorted(wanted)])
        self.health.recovered()

    async def mark_used(self, first_use_key: str) -> None:
        with self._errors():
            await self._client.set(self._k("used:", first_use_key), "1")
        self.health.recovered()

    async def save_session(self, session_id: str, record: Mapping[str, Any], ttl_seconds: float) -> None:
        with self._errors():
            await self._client.set(self._k("session:", session_id), json.dumps(dict(record)),
                                   px=max(1, int(ttl_seconds * 1000)))

    async def load_session(self, session_id: str) -> dict[str, Any] | None:
        with self._errors():
            text = await self._client.get(self._k("session:", session_id))
        return None if text is None else dict(json.loads(text))

    async def drop_session(self, session_id: str) -> None:
        with self._errors():
            await self._client.delete(self._k("session:", session_id))

    async def drop_legs(self, legs_key: str) -> None:
        with self._errors():
            await self._client.delete(self._k("legs:", legs_key))

    async def set_pin(self, upstream: str, tool: str, definition_hash: str, by: str) -> None:
        field = json.dumps([upstream, tool])
        with self._errors():
            await self._set_pin(keys=[self._k("pins"), self._k("pins:meta")],
                                args=[field, definition_hash, json.dumps({"by": by, "at": time.time()}),
                                      self._channel, "c:" + self._instance])
        self.health.recovered()

    async def get_pins(self) -> dict[tuple[str, str], str]:
        with self._errors():
            raw = await self._client.hgetall(self._k("pins"))
        return {(u, t): str(h) for (u, t), h in ((json.loads(f), h) for f, h in raw.items())}

    async def list_pins(self) -> list[PinRecord]:
        with self._errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._k("pins"))
                pipe.hgetall(self._k("pins:meta"))
                hashes, metas = await pipe.execute()
        pins = []
        for field, digest in hashes.items():
            upstream, tool = json.loads(field)
            meta = json.loads(metas.get(field) or "{}")
            pins.append(PinRecord(upstream, tool, str(digest), str(meta.get("by", "")), float(meta.get("at", 0.0))))
        return sorted(pins, key=lambda p: (p.upstream, p.tool))

    async def save_definitions(self, definitions: Mapping[str, Mapping[str, Any]]) -> None:
        if not definitions:
            return
        with self._errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for digest, definition in definitions.items():  # HSETNX: a hash names one definition for ever
                    pipe.hsetnx(self._k("pins:defs"), digest,
                                json.dumps(dict(definition), separators=(",", ":"), sort_keys=True))
                await pipe.execute()

    async def get_definition(self, definition_hash: str) -> dict[str, Any] | None:
        with self._errors():
            raw = await self._client.hget(self._k("pins:defs"), definition_hash)
        return None if raw is None else dict(json.loads(raw))

    async def suspend(self, target_id: str, by: str, reason: str) -> None:
        await self._suspension("s:", target_id, json.dumps({"by": by, "reason": reason, "at": time.time()}))

    async def resume(self, target_id: str, by: str) -> None:
        await self._suspension("r:", target_id, None)

    async def _suspension(self, kind: str, target_id: str, record: str | None) -> None:
        """Write (or delete) a suspension and announce it, in one script; then update our own cache."""
        with self._errors():
            await self._suspend(keys=[self._k("susp")], args=[target_id, record or "", self._channel, kind + target_id])
        self._on_message(kind + target_id)

    # -- approvals: RedisApprovals (adapters/stores/redis_approvals.py) ----------------------------
