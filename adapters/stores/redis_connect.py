"""The Redis store's client, from its URL: one server, the primary that Sentinel names, or a Cluster.

redis-py parses one server's URL (`redis://`, `rediss://`, `unix://`), follows a Sentinel-
managed primary through failovers (`redis.asyncio.sentinel`) and talks to Redis Cluster
(`redis.asyncio.cluster.RedisCluster`), but has no URL form for Sentinel or for several cluster
nodes. This module adds the common ones:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    rediss+sentinel://...            TLS to the data nodes and to the Sentinels
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]
    rediss+cluster://...             TLS to every cluster node

Sentinels default to port 26379, cluster nodes to 6379. The user and password are the data
nodes'; the options `sentinel_username` and `sentinel_password` authenticate to the Sentinels (no
other option is accepted, so a misspelt one is an error, not ignored). A cluster URL names any
nodes of the cluster (one is enough: the client asks it for the others); it takes no options, and
no database but 0 (a cluster has only that one).

On a cluster every key of one store carries the same hash tag (`hash_tagged`: the prefix
"triplock:" becomes "{triplock}:"), so all of them live in one hash slot: the Lua scripts touch
index keys they do not declare, and Cluster runs a script only on keys of one slot. So a cluster
gives the store the availability of that slot's primary and its replicas, not sharding.

Pools block when full (a burst waits for a connection up to the timeout instead of failing); the
cluster client, whose nodes refuse a connection beyond their limit, queues its commands instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger("triplock.store.redis")

SWITCH_CHANNEL = "+switch-master"  # Sentinel publishes "<service> <old host> <old port> <new host> <new port>"
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_CLUSTER_PORT = 6379
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
CLUSTER_NO_POOL = (
    "a Redis Cluster URL (redis+cluster://) has no single connection pool: its client is "
    "redis_connect.redis_client (the store uses it; the Redis audit sink needs one server or a Sentinel service)"
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


@dataclass(frozen=True)
class ClusterTarget:
    """What a `redis+cluster://` URL names: nodes to start from (the client finds the rest), the login."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def is_cluster_url(url: str) -> bool:
    """True for a `redis+cluster://` or `rediss+cluster://` URL."""
    return scheme_of(url) in CLUSTER_SCHEMES


def hash_tagged(prefix: str) -> str:
    """``prefix`` with a Redis Cluster hash tag, so that every key under it hashes to one slot.

    "triplock:" becomes "{triplock}:"; a prefix that already has a tag ("{tl}:a:") is kept.
    ``ValueError`` for a prefix with nothing to tag.
    """
    start = prefix.find("{")
    if start != -1 and prefix.find("}", start + 2) != -1:  # a non-empty {...}: Cluster hashes only that
        return prefix
    name = prefix.rstrip(":")
    if not name:
        raise ValueError("a Redis Cluster store needs a non-empty key prefix (its keys share the prefix's hash tag)")
    return "{" + name + "}" + prefix[len(name):]


def _credentials_and_hosts(
    netloc: str, default_port: int, kind: str
) -> tuple[str | None, str | None, tuple[tuple[str, int], ...]]:
    """``user:password@host[:port],host[:port]...`` of a Sentinel or Cluster URL: user, password, hosts."""
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    found = tuple(_host_port(h, default_port, kind) for h in hosts.split(",")) if hosts else ()
    return username, password, found


def parse_cluster_url(url: str) -> ClusterTarget:
    """Parse a cluster URL; ``ValueError`` says what is wrong with it (the password is never quoted)."""
    scheme, _, rest = url.partition("://")
    tls = CLUSTER_SCHEMES.get(scheme.lower())
    if tls is None:
        raise ValueError(f"not a Redis Cluster URL (scheme {scheme!r}; expected redis+cluster or rediss+cluster)")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username, password, nodes = _credentials_and_hosts(netloc, DEFAULT_CLUSTER_PORT, "Cluster")
    if not nodes:
        raise ValueError("Cluster URL names no node (redis+cluster://host:6379[,host:port...])")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"Cluster URL path must be empty or /0 (a cluster has only database 0), not /{path}")
    if query:
        raise ValueError("Cluster URL takes no options (?...): the store sets its own timeouts")
    return ClusterTarget(nodes=nodes, username=username, password=password, tls=tls)


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
    username, password, sentinels = _credentials_and_hosts(netloc, DEFAULT_SENTINEL_PORT, "Sentinel")
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


def _host_port(text: str, default_port: int, kind: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, tail = text[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{kind} URL: empty host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{kind} URL: bad port in {text!r}")
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
        raise ValueError(CLUSTER_NO_POOL)
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


class QueueingRedisCluster(RedisCluster):
    """A `RedisCluster` whose commands and pipelines wait for a free connection, as a blocking pool does.

    A cluster node refuses a connection beyond ``max_connections`` (MaxConnectionsError), which
    would fail a burst closed; so at most ``max_connections`` commands or pipelines are in flight
    at once, the rest wait up to ``timeout`` for their turn. Each node keeps two connections more
    than that for the pub/sub listener (and its replacement while it reconnects).
    """

    def __init__(self, *, max_connections: int, timeout: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections + 2, **kwargs)
        self._turns = asyncio.Semaphore(max_connections)
        self._turn_timeout = timeout

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the ``max_connections`` turns; ``ConnectionError`` after ``timeout`` without one."""
        try:
            async with asyncio.timeout(self._turn_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            yield
        finally:
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # which raises: no shard hints on a cluster
        # redis-py's typing declares an abstract _event_dispatcher that ClusterPipeline sets at run time
        return _QueueingPipeline(self, transaction)  # type: ignore[abstract]


class _QueueingPipeline(ClusterPipeline):
    """A cluster pipeline that takes one of its client's turns while it executes."""

    _queueing: QueueingRedisCluster

    def __init__(self, client: QueueingRedisCluster, transaction: Any | None) -> None:
        super().__init__(client, transaction)
        self._queueing = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self._queueing.turn():
            return await super().execute(raise_on_error, allow_redirections)


def redis_client(
    url: str, *, max_connections: int, timeout: float, **connection_kwargs: Any
) -> aredis.Redis | QueueingRedisCluster:
    """The client for ``url``: one server or a Sentinel service's primary (a blocking pool), or a cluster.

    Closing the client closes its pool. ``ValueError`` for a bad URL. On a cluster, keys must
    share a hash tag for multi-key commands and scripts (`hash_tagged`); commands are not retried
    on connection errors when ``connection_kwargs`` say so (``retry``), though redirections
    (MOVED, ASK: the command did not run) are always followed.
    """
    if not is_cluster_url(url):
        return aredis.Redis.from_pool(
            connection_pool(url, max_connections=max_connections, timeout=timeout, **connection_kwargs))
    target = parse_cluster_url(url)
    return QueueingRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes], max_connections=max_connections,
        timeout=timeout, username=target.username, password=target.password, ssl=target.tls, **connection_kwargs)
