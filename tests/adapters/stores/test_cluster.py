"""The Redis store on Redis Cluster: one hash tag, one slot, the same store as on one server.

Real parts: three `redis-server --cluster-enabled yes` primaries on loopback joined by
`redis-cli --cluster create` (`tests.redis_server.redis_cluster`, shared with the contract tests,
which run against "redis-cluster" too); a real gateway process with the demo upstream and the
official SDK client. What is checked here is what the contract tests cannot see: where the keys
are, that wake-ups cross instances, that a burst queues, the URL form and the config checks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from mcp import Client

from adapters.audit_sinks import RedisStreamSink
from adapters.stores.redis_connect import hash_tagged, parse_cluster_url, redact
from adapters.stores.redis_store import RedisStore
from gateway.cli.config_checks import check_settings
from gateway.config import load_settings
from gateway.ports.records import CallStateRecord, PendingApproval
from tests.guard.test_approval_flow import APPROVER, OUTSIDE, approve, e2e_policy, sent_count
from tests.redis_server import Cluster
from tests.support import demo_http_cmd, free_port, gateway_cmd, running, write_config


def new_approval() -> PendingApproval:
    return PendingApproval.new(principal="agent:a", session_id="s1", upstream="mail", tool="send",
                               arguments={"to": "x"}, policy_revision="rev-1")


def node(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True)


def keys_on(cluster: Cluster, pattern: str) -> dict[int, list[str]]:
    """Every node's keys matching ``pattern`` (a SCAN of each node: keys never cross nodes)."""
    out: dict[int, list[str]] = {}
    for port in cluster.ports:
        client = node(port)
        try:
            out[port] = sorted(client.scan_iter(match=pattern))
        finally:
            client.close()
    return out


async def started(cluster: Cluster, prefix: str, **kwargs: Any) -> RedisStore:
    store = RedisStore(cluster.url, prefix=prefix, health_interval=3600, **kwargs)
    await store.start()
    return store


async def test_every_key_and_the_channel_share_the_prefixs_slot(cluster: Cluster) -> None:
    name = f"c{uuid.uuid4().hex[:8]}"
    store = await started(cluster, f"{name}:")
    try:
        assert store.prefix == "{" + name + "}:" and store._channel == "{" + name + "}:events"
        held, denied = new_approval(), new_approval()
        await store.create_approval(held)
        await store.create_approval(denied)
        await store.decide(held.id, True, "human:h", "ok", time.time(), scope="principal_tool",
                           scope_until=time.time() + 60)
        await store.decide(denied.id, False, "human:h", "no", time.time())
        await store.add_legs("sess:1", frozenset({"P"}), 60)
        await store.add_trail("sess:1", {"x@example.com": "mail/read"}, 60, 10)
        await store.mark_used("k")
        await store.set_pin("u", "t", "sha256:x", by="admin")
        await store.save_definitions({"sha256:x": {"name": "t"}})
        await store.suspend("agent:x", by="admin", reason="r")
        await store.save_session("m1", {"principal": "agent:a"}, 60)

        owner = cluster.slot_owner(store.prefix)
        found = keys_on(cluster, store.prefix + "*")
        assert {port: bool(keys) for port, keys in found.items()} == {p: p == owner for p in cluster.ports}
        prefix = store.prefix
        assert found[owner] == sorted([
            f"{prefix}ap:{held.id}", f"{prefix}ap:{denied.id}", f"{prefix}ap:all", f"{prefix}ap:due",
            f"{prefix}ap:st:approved", f"{prefix}ap:st:denied", f"{prefix}ap:bind:{held.binding}",
            f"{prefix}ap:tool:{held.tool_binding}", f"{prefix}legs:sess:1", f"{prefix}trail:sess:1",
            f"{prefix}used:k", f"{prefix}pins", f"{prefix}pins:meta", f"{prefix}pins:defs", f"{prefix}susp",
            f"{prefix}session:m1", f"{prefix}health"])
        admin = node(owner)
        try:
            slots = {admin.execute_command("CLUSTER", "KEYSLOT", k) for k in found[owner]}
            assert slots == {admin.execute_command("CLUSTER", "KEYSLOT", name)}
            # The listener is subscribed on the slot's own primary (a PUBLISH reaches every node anyway).
            assert dict(admin.pubsub_numsub(store._channel)) == {store._channel: 1}
        finally:
            admin.close()
        assert [a.id for a in await store.expire_due(time.time() + 3600)] == [held.id]
    finally:
        await store.aclose()


async def test_a_decision_and_a_suspension_reach_another_instance(cluster: Cluster) -> None:
    prefix = f"w{uuid.uuid4().hex[:8]}:"
    a_store, b_store = await started(cluster, prefix), await started(cluster, prefix)
    try:
        held = new_approval()
        await a_store.create_approval(held)
        waiting = asyncio.create_task(b_store.wait_decided(held.id, timeout=10))
        await asyncio.sleep(0)  # the waiter registers and reads before the decision; only pub/sub can wake it
        outcome = await a_store.decide(held.id, True, "human:h", "ok", time.time())
        assert outcome.status == "approved"
        decided = await asyncio.wait_for(waiting, 10)
        assert decided is not None and (decided.state, decided.decided_by) == ("approved", "human:h")

        await a_store.suspend("agent:x", by="ops", reason="testing")
        end = time.monotonic() + 5
        while b_store.suspended() != frozenset({"agent:x"}) and time.monotonic() < end:
            await asyncio.sleep(0.01)  # polling interval while the notice travels
        assert b_store.suspended() == frozenset({"agent:x"})
        await b_store.resume("agent:x", by="ops")
        while a_store.suspended() and time.monotonic() < end:
            await asyncio.sleep(0.01)  # polling interval while the notice travels
        assert a_store.suspended() == frozenset()

        before = b_store.state_stamp()
        await a_store.add_legs("sess:9", frozenset({"U"}), None)
        while b_store.state_stamp() == before and time.monotonic() < end:
            await asyncio.sleep(0.01)  # polling interval while the change notice travels
        assert b_store.state_stamp() != before
        assert await b_store.call_state("sess:9", "f", "u", "t") == CallStateRecord(
            frozenset({"U"}), False, None, frozenset())
    finally:
        await a_store.aclose()
        await b_store.aclose()


async def test_a_burst_beyond_max_connections_queues_instead_of_failing(cluster: Cluster) -> None:
    store = await started(cluster, f"b{uuid.uuid4().hex[:8]}:", max_connections=2)
    try:
        await store.add_legs("s", frozenset({"P"}), None)
        states = await asyncio.gather(*(store.call_state("s", "f", "u", "t") for _ in range(50)))
        assert set(states) == {CallStateRecord(frozenset({"P"}), False, None, frozenset())}
        assert len(states) == 50
        assert store.health.ok
    finally:
        await store.aclose()


def test_cluster_url_form() -> None:
    target = parse_cluster_url("rediss+cluster://app:p%40ss@10.0.0.1,10.0.0.2:7001,[::1]:7002/0")
    assert target.nodes == (("10.0.0.1", 6379), ("10.0.0.2", 7001), ("::1", 7002))
    assert (target.username, target.password, target.tls) == ("app", "p@ss", True)
    assert parse_cluster_url("redis+cluster://h1").tls is False
    assert redact("redis+cluster://app:pw@h1:7000,h2:7001") == "redis+cluster://app:***@h1:7000,h2:7001"
    assert (hash_tagged("triplock:"), hash_tagged("{tl}:a:"), hash_tagged("team-a:")) == (
        "{triplock}:", "{tl}:a:", "{team-a}:")


@pytest.mark.parametrize(("url", "message"), [
    ("redis+cluster://:pw@", "Cluster URL names no node (redis+cluster://host:6379[,host:port...])"),
    ("redis+cluster://h1/2", "Cluster URL path must be empty or /0 (a cluster has only database 0), not /2"),
    ("redis+cluster://h1:0,h2", "Cluster URL: bad port in 'h1:0'"),
    ("redis+cluster://h1?ssl_cert_reqs=none", "Cluster URL takes no options (?...): the store sets its own timeouts"),
])
def test_bad_cluster_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RedisStore(url)
    assert str(caught.value) == message


def test_an_empty_prefix_cannot_be_tagged() -> None:
    with pytest.raises(ValueError) as caught:
        RedisStore("redis+cluster://127.0.0.1:7000", prefix="")
    assert str(caught.value) == (
        "a Redis Cluster store needs a non-empty key prefix (its keys share the prefix's hash tag)")


def test_config_takes_a_cluster_url_and_checks_it_as_the_store_will(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[store]\nkind = "redis"\nredis_url = "redis+cluster://:secret@127.0.0.1:7000,127.0.0.1:7001"\n')
    found = check_settings(load_settings(path))
    assert [e for e in found.errors if e.startswith(("store.", "audit."))] == []

    path.write_text('[store]\nkind = "redis"\nredis_url = "redis+cluster://:secret@127.0.0.1:7000/3"\n')
    errors = check_settings(load_settings(path)).errors
    assert [e for e in errors if e.startswith("store.")] == [
        "store.redis_url: Cluster URL path must be empty or /0 (a cluster has only database 0), not /3"]

    path.write_text('[store]\nkind = "redis"\nredis_url = "redis+cluster://:secret@127.0.0.1:7000"\n'
                    '[audit]\nsinks = ["redis"]\n')
    errors = check_settings(load_settings(path)).errors
    assert [e for e in errors if e.startswith(("store.", "audit."))] == []  # the audit sink takes it too
    assert not any("secret" in e for e in errors)


async def test_the_redis_audit_sink_writes_to_the_cluster_and_reads_its_tail(cluster: Cluster) -> None:
    sink = RedisStreamSink(cluster.url, stream=f"audit-{uuid.uuid4().hex[:8]}")
    try:
        assert await sink.tail_hash() is None
        await sink.write([b'{"event_id":"evt_0000000003e8000000000000000000000a","hash":"h1"}\n',
                          b'{"event_id":"evt_0000000003e8000000000000000000000b","hash":"h2"}\n'])
        assert (await sink.tail_hash(), sink.tail_event_id) == ("h2", "evt_0000000003e8000000000000000000000b")
    finally:
        await sink.aclose()


async def test_a_gateway_on_the_cluster_holds_a_call_and_runs_it_once_approved(
        cluster: Cluster, tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    base, mcp = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{gw_port}/mcp"
    cfg = write_config(
        tmp_path / "gw.toml", gw_port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
        policy={"file": str(e2e_policy(tmp_path))}, approvals={"hold_wait": 1.0},
        store={"kind": "redis", "redis_url": cluster.url},
    )
    env = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}
    owner = node(cluster.slot_owner("{triplock}:"))
    try:
        with running(demo_http_cmd(up_port), None), running(gateway_cmd(cfg), f"{base}/readyz", env=env):
            async with Client(mcp, mode="legacy") as agent:
                await agent.call_tool("demo__read_inbox", {})
                held = await agent.call_tool("demo__send_email", OUTSIDE)
                meta = (held.meta or {})["triplock/approval"]
                assert (held.is_error, meta["status"]) == (True, "pending")
                approval_id = meta["approval_id"]
                assert owner.hget(f"{{triplock}}:ap:{approval_id}", "state") == "pending"

                r = await approve(base, approval_id)
                assert r.status_code == 200, r.text
                ran = await agent.call_tool("demo__send_email", OUTSIDE)  # the approved repeat
                assert not ran.is_error, ran
                assert owner.hget(f"{{triplock}}:ap:{approval_id}", "state") == "executed"
                legs = [owner.hgetall(k) for k in owner.scan_iter(match="{triplock}:legs:*")]
                assert legs and all({"P", "U"} <= set(v) for v in legs), legs
            assert await sent_count(f"http://127.0.0.1:{up_port}/mcp") == 1
    finally:
        owner.close()
