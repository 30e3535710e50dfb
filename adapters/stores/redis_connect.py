"""The Redis store's connection pool, from its URL: one server, or the primary that Sentinel names.

redis-py parses one server's URL (`redis://`, `rediss://`, `unix://`) and follows a Sentinel-
managed primary through failovers (`redis.asyncio.sentinel`), but has no URL form for Sentinel.
This module adds the common one:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    rediss+sentinel://...            TLS to the data nodes and to the Sentinels

Sentinels default to port 26379. The user and password are the data nodes'; the options
`sentinel_username` and `sentinel_password` authenticate to the Sentinels (no other option is
accepted, so a misspelt one is an error, not ignored).

Redis Cluster is refused: the store's Lua scripts derive their index keys from the prefix
(`ap:all`, `ap:due`, ...) and touch keys they do not declare, which Cluster allows only when
every key is in one hash slot. Running it there would need hash tags on every key.

Pools block when full (a burst waits for a connection up to the timeout instead of failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis.asyncio as aredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

log = logging.getLogger("triplock.store.redis")

SWITCH_CHANNEL = "+switch-master"  # Sentinel publishes "<service> <old host> <old port> <new host> <new port>"
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster", "redis-cluster"})
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
CLUSTER_REFUSED = (
    "Redis Cluster is not supported: the store's Lua scripts touch index keys derived from the prefix, "
    "which Cluster allows only within one hash slot. Use one Redis server or a Sentinel-managed primary "
    "(redis+sentinel://host:26379/service)"
)


@dataclass(frozen=True)
class SentinelTarget:
    """What a `redis+sentinel://` URL names: the Sentinels to ask, the service, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def is_sentinel_url(url: str) -> bool:
    """True for a `redis+sentinel://` or `rediss+sentinel://` URL."""
    return scheme_of(url) in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse a Sentinel URL; ``ValueError`` says what is wrong with it (the password is never quoted)."""
    scheme, _, rest = url.partition("://")
    tls = SENTINEL_SCHEMES.get(scheme.lower())
    if tls is None:
        raise ValueError(f"not a Sentinel URL (scheme {scheme!r}; expected redis+sentinel or rediss+sentinel)")
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(h) for h in hosts.split(",")) if hosts else ()
    if not sentinels:
        raise ValueError("Sentinel URL names no Sentinel (redis+sentinel://host:26379/service)")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise ValueError("Sentinel URL names no service (redis+sentinel://host:26379/SERVICE[/db])")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"Sentinel URL path must be /service[/db], not /{'/'.join(parts)}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - SENTINEL_OPTIONS)
    if unknown:
        raise ValueError(f"Sentinel URL option(s) not supported: {', '.join(unknown)} "
                         f"(supported: {', '.join(sorted(SENTINEL_OPTIONS))})")
    return SentinelTarget(
        sentinels=sentinels, service=parts[0], db=int(parts[1]) if len(parts) == 2 else 0,
        username=username, password=password, sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None, tls=tls,
    )


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"Sentinel URL: empty host in {text!r}")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Sentinel URL: bad port in {text!r}")
    return host, int(port_text)


def redact(url: str) -> str:
    """``url`` with its password (and any ``sentinel_password``) replaced by ``***``: safe for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = "&".join(f"{k}={'***' if k == 'sentinel_password' else quote(v, safe='')}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return parts._replace(netloc=netloc, query=query).geturl()


class BlockingSentinelConnectionPool(SentinelConnectionPool, aredis.BlockingConnectionPool):
    """Connections to the current primary of a Sentinel service, blocking when all are in use.

    SentinelConnectionPool asks Sentinel for the primary whenever it opens a connection, and
    BlockingConnectionPool makes a burst wait for a free connection. Connections already open
    would go on talking to the old primary after a failover, which accepts writes until Sentinel
    demotes it (and then loses them): so the pool also listens to Sentinel's ``+switch-master``
    and, when its service moves, closes every connection, the store's pub/sub one included. The
    commands in flight fail (the store fails closed) and the next ones connect to the new primary.
    Closing the pool also closes the connections to the Sentinels.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self._watcher: asyncio.Task[None] | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._watcher is None:  # started with the first command, in the loop that uses the pool
            self._watcher = asyncio.create_task(self._watch_switches(), name="triplock-redis-sentinel-watch")
        return await super().get_connection(*args, **kwargs)

    async def _watch_switches(self) -> None:
        backoff = 0.05
        while True:
            for sentinel in list(self.sentinel_manager.sentinels):
                pubsub = sentinel.pubsub()
                try:
                    await pubsub.subscribe(SWITCH_CHANNEL)
                    while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
                        pass  # from the confirmation on no switch is missed
                    # A switch while we were not subscribed: compare with what Sentinel says now.
                    await self._follow(await self.sentinel_manager.discover_master(self.service_name))
                    backoff = 0.05
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg is not None and msg.get("type") == "message":
                            name, _old_host, _old_port, host, port = str(msg["data"]).split()
                            if name == self.service_name:
                                await self._follow((host, int(port)))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # try the next Sentinel: a dead watcher means missed failovers
                    log.warning("Sentinel %s: watching %r for failovers failed (%r)", sentinel, self.service_name, exc)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(backoff)  # reconnect back-off, not synchronisation
            backoff = min(backoff * 2, 2.0)

    async def _follow(self, address: tuple[str, int]) -> None:
        """The service's primary is ``address``: drop every connection to another one."""
        current = self.master_address
        if current is None or tuple(current) == tuple(address):
            return
        log.warning("Sentinel moved %r from %s:%s to %s:%s: reconnecting", self.service_name, *current, *address)
        self.master_address = address
        await self.disconnect(inuse_connections=True)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await super().aclose()
        await self.sentinel_manager.aclose()


def connection_pool(
    url: str, *, max_connections: int, timeout: float, **connection_kwargs: Any
) -> aredis.ConnectionPool:
    """A blocking pool for ``url`` (one server, or a Sentinel service's primary); ``ValueError`` for a bad URL.

    ``connection_kwargs`` go to every data connection (timeouts, retry, decoding); the Sentinel
    connections get the same socket timeouts.
    """
    scheme = scheme_of(url)
    if scheme in CLUSTER_SCHEMES:
        raise ValueError(CLUSTER_REFUSED)
    if scheme not in SENTINEL_SCHEMES:
        return aredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **connection_kwargs)
    target = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in connection_kwargs.items() if k.startswith("socket_")}
    sentinel_kwargs.update(username=target.sentinel_username, password=target.sentinel_password,
                           ssl=target.tls, decode_responses=True)
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    return BlockingSentinelConnectionPool(
        target.service, manager, max_connections=max_connections, timeout=timeout, db=target.db,
        username=target.username, password=target.password, ssl=target.tls, **connection_kwargs)
