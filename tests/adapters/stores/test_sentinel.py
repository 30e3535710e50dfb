"""The Redis store on a Sentinel-managed primary, and the Redis URLs it refuses.

Real parts: Debian's redis-server as primary and replica and redis-sentinel, all on loopback;
a real gateway process with the demo upstream, the official SDK client. The failover is
Sentinel's own (SENTINEL FAILOVER) while the gateway runs.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
from mcp import Client

from adapters.stores.redis_connect import parse_sentinel_url, redact
from adapters.stores.redis_store import RedisStore
from tests.guard.test_approval_flow import APPROVER, OUTSIDE, approve, e2e_policy, sent_count
from tests.redis_server import stop_processes
from tests.support import demo_http_cmd, free_port, gateway_cmd, running, write_config

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_SENTINEL = shutil.which("redis-sentinel")
SERVICE = "triplock-primary"
DEADLINE = 30.0
T = TypeVar("T")


def poll(what: str, check: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    """``check()`` until it returns something other than None (errors count as not yet)."""
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        try:
            value = check()
            if value is not None:
                return value
        except (redis.RedisError, OSError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(0.05)  # polling interval; the condition is checked each round
    raise TimeoutError(f"{what}: not within {deadline}s (last error: {last!r})")


@dataclass
class Topology:
    primary_port: int
    replica_port: int
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)

    def sentinel(self) -> redis.Redis:
        return self.client(self.sentinel_port)

    def primary_by_sentinel(self) -> int:
        _, port = self.sentinel().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)


@contextlib.contextmanager
def sentinel_topology() -> Iterator[Topology]:
    """A primary, its replica and one Sentinel (quorum 1) on loopback, stopped afterwards."""
    if REDIS_SENTINEL is None:
        pytest.fail("redis-sentinel is not installed (apt-get install redis-sentinel)")
    workdir = Path(tempfile.mkdtemp(prefix="triplock-sentinel-"))
    topo = Topology(free_port(), free_port(), free_port())
    procs: list[subprocess.Popen[bytes]] = []

    def server(port: int, *extra: str) -> None:
        (workdir / str(port)).mkdir()
        procs.append(subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir / str(port)),
             "--save", "", "--appendonly", "no", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        server(topo.primary_port)
        server(topo.replica_port, "--replicaof", "127.0.0.1", str(topo.primary_port))
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {topo.sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {topo.primary_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\nsentinel failover-timeout {SERVICE} 10000\n"
        )
        procs.append(subprocess.Popen([REDIS_SENTINEL, str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        poll("replica in sync", lambda: True if topo.client(topo.replica_port).info("replication")
             .get("master_link_status") == "up" else None)
        # SENTINEL FAILOVER needs a replica Sentinel knows about.
        poll("Sentinel sees the replica", lambda: True if any(
            r["port"] == topo.replica_port and r["flags"] == "slave"
            for r in topo.sentinel().sentinel_slaves(SERVICE)) else None)
        yield topo
    finally:
        stop_processes(procs)
        shutil.rmtree(workdir, ignore_errors=True)


def replica_caught_up(topo: Topology) -> bool | None:
    """True once the replica has every write the primary acknowledged (replication is asynchronous)."""
    primary = topo.client(topo.primary_port).info("replication")["master_repl_offset"]
    replica = topo.client(topo.replica_port).info("replication")["slave_repl_offset"]
    return True if replica >= primary else None


async def test_failover_loses_no_acknowledged_state_and_the_gateway_keeps_answering(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    base, mcp = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{gw_port}/mcp"
    with sentinel_topology() as topo, running(demo_http_cmd(up_port), None):
        cfg = write_config(
            tmp_path / "gw.toml", gw_port,
            [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
            policy={"file": str(e2e_policy(tmp_path))}, approvals={"hold_wait": 1.0},
            store={"kind": "redis", "redis_url": topo.url, "health_interval": 0.2},
        )
        env = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}
        with running(gateway_cmd(cfg), f"{base}/readyz", env=env):
            async with Client(mcp, mode="legacy") as agent:
                await agent.call_tool("demo__read_inbox", {})
                held = await agent.call_tool("demo__send_email", OUTSIDE)
                approval_id = (held.meta or {})["triplock/approval"]["approval_id"]
                assert (await approve(base, approval_id)).status_code == 200  # acknowledged
                legs_before = {k: topo.client(topo.primary_port).hgetall(k)
                               for k in topo.client(topo.primary_port).keys("triplock:legs:*")}
                assert legs_before and all({"P", "U"} <= set(v) for v in legs_before.values()), legs_before

                poll("replica caught up", lambda: replica_caught_up(topo))
                assert topo.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE) in (b"OK", "OK", True)
                poll("Sentinel names the replica", lambda: True if topo.primary_by_sentinel() == topo.replica_port
                     else None)
                new_primary = topo.client(topo.replica_port)
                poll("the replica is primary", lambda: True if new_primary.info("replication")["role"] == "master"
                     else None)

                # The acknowledged state is on the new primary.
                assert new_primary.hget(f"triplock:ap:{approval_id}", "state") == "approved"
                assert {k: new_primary.hgetall(k) for k in legs_before} == legs_before
                # The gateway's store followed the switch: its pub/sub listener is on the new primary.
                poll("store resubscribed on the new primary", lambda: True if dict(
                    new_primary.pubsub_numsub("triplock:events")).get("triplock:events") == 1 else None)
                # The gateway answers again (fail closed during the switch, ready once its store is).
                poll("gateway ready after failover", lambda: True if httpx.get(f"{base}/readyz", timeout=2)
                     .status_code == 200 else None)
                ran = await agent.call_tool("demo__send_email", OUTSIDE)  # the approved repeat
                assert not ran.is_error, ran
                # Its writes go to the new primary: the approval is used up there.
                assert new_primary.hget(f"triplock:ap:{approval_id}", "state") == "executed"
        assert await sent_count(f"http://127.0.0.1:{up_port}/mcp") == 1


async def test_store_follows_the_primary_sentinel_names() -> None:
    with sentinel_topology() as topo:
        store = RedisStore(topo.url, prefix="s:", health_interval=3600)
        try:
            await store.start()
            await store.suspend("agent-1", "ops", "testing")
            assert topo.client(topo.primary_port).hkeys("s:susp") == ["agent-1"]
            assert store.url == topo.url
        finally:
            await store.aclose()


def test_parse_sentinel_url() -> None:
    target = parse_sentinel_url(
        "rediss+sentinel://app:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/2?sentinel_password=sp")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 2, "app", "p@ss")
    assert (target.sentinel_username, target.sentinel_password, target.tls) == (None, "sp", True)


@pytest.mark.parametrize(("url", "message"), [
    ("redis+sentinel://h1:26379", "Sentinel URL names no service (redis+sentinel://host:26379/SERVICE[/db])"),
    ("redis+sentinel://h1/svc/x", "Sentinel URL path must be /service[/db], not /svc/x"),
    ("redis+sentinel://h1:0/svc", "Sentinel URL: bad port in 'h1:0'"),
    ("redis+sentinel://h1/svc?ssl_cert_reqs=none",
     "Sentinel URL option(s) not supported: ssl_cert_reqs (supported: sentinel_password, sentinel_username)"),
])
def test_bad_sentinel_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedisStore(url)
    assert str(caught.value) == message


def test_passwords_are_kept_out_of_messages() -> None:
    assert redact("redis+sentinel://app:pw@h1,h2/svc?sentinel_password=spw") == (
        "redis+sentinel://app:***@h1,h2/svc?sentinel_password=***")
    assert RedisStore("redis://:pw@127.0.0.1:1/0").url == "redis://:***@127.0.0.1:1/0"
