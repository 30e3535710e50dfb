"""Scale-out for real on loopback: three `triplock serve` replicas on one redis-server behind HAProxy.

HAProxy is configured as deploy/compose/haproxy.cfg (sticky on `Mcp-Session-Id`, health checks on
`/readyz`), with shorter check intervals so a dead replica is noticed within a second, and the
stick table read from its stats socket to learn which replica serves a session. The agent speaks
raw MCP over HTTP through HAProxy; approvers and the suspension API talk to single replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.guard.test_approval_flow import APPROVER, OUTSIDE, approve, e2e_policy, pending_approval, sent_count
from tests.redis_server import redis_server
from tests.support import MCP_HEADERS, PY, REPO, demo_http_cmd, free_port, initialize, running, write_config

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REPLICAS = 3
HOLD_WAIT = 20.0  # long enough that a held call is still waiting in-band when its replica is killed
DEADLINE = 30.0
VERSION = "2025-11-25"
T = TypeVar("T")


def poll(what: str, check: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        try:
            value = check()
            if value is not None:
                return value
        except (OSError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(0.05)  # polling interval; the condition is checked each round
    raise TimeoutError(f"{what}: not within {deadline}s (last error: {last!r})")


HAPROXY_CFG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 65s
    timeout server 65s
    timeout http-request 10s
    retries 3
    option redispatch
frontend mcp
    bind 127.0.0.1:{port}
    default_backend triplock
backend triplock
    balance leastconn
    stick-table type string len 128 size 1m expire 2h
    stick on req.hdr(mcp-session-id)
    stick store-response res.hdr(mcp-session-id)
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1:{port}
    http-check expect status 200
    default-server check inter 300ms fall 1 rise 1
{servers}
"""


@dataclass
class Cluster:
    tmp: Path
    lb_port: int
    ports: list[int]
    env: dict[str, str]
    upstream_mcp: str
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def mcp(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/mcp"

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        log = (self.tmp / f"replica-{i}.log").open("ab")
        self.procs[i] = subprocess.Popen(
            [PY, "-m", "gateway.cli", "serve", "--config", str(self.tmp / f"replica-{i}.toml")],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True)

    def stop(self, i: int, sig: signal.Signals) -> int:
        proc = self.procs[i]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        return proc.wait(timeout=30)

    def ready(self, i: int) -> None:
        def answered() -> bool | None:
            if self.procs[i].poll() is not None:
                raise AssertionError(f"replica {i} exited: {(self.tmp / f'replica-{i}.log').read_text()[-3000:]}")
            return True if httpx.get(self.base(i) + "/readyz", timeout=2).status_code == 200 else None
        poll(f"replica {i} ready", answered, deadline=60)
        poll(f"HAProxy sees replica {i} up", lambda: True if self.lb_status()[f"r{i}"] == "UP" else None)

    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.tmp / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def lb_status(self) -> dict[str, str]:
        """Each replica's state as HAProxy's health checks see it (UP, DOWN, ...)."""
        rows = [line.split(",") for line in self.admin("show stat").splitlines() if line.startswith("triplock,")]
        return {row[1]: row[17] for row in rows if row[1].startswith("r")}

    def replica_of(self, session_id: str) -> int:
        """The replica HAProxy's stick table sends ``session_id`` to."""
        for line in self.admin("show table triplock").splitlines():
            if f"key={session_id} " in line:
                return int(line.split("server_key=r", 1)[1].split()[0])
        raise AssertionError(f"session {session_id} is not in HAProxy's stick table")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scale-out")
    up_port, lb_port = free_port(), free_port()
    ports = [free_port() for _ in range(REPLICAS)]
    policy = e2e_policy(tmp)
    with redis_server() as url, running(demo_http_cmd(up_port), None):
        c = Cluster(tmp, lb_port, ports, {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"},
                    f"http://127.0.0.1:{up_port}/mcp")
        for i, port in enumerate(ports):
            write_config(
                tmp / f"replica-{i}.toml", port,
                [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
                server={"allowed_hosts": [f"127.0.0.1:{lb_port}"]}, policy={"file": str(policy)},
                store={"kind": "redis", "redis_url": url}, approvals={"hold_wait": HOLD_WAIT},
                audit={"path": str(tmp / f"audit-{i}.jsonl")},
            )
        servers = "\n".join(f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(ports))
        (tmp / "haproxy.cfg").write_text(HAPROXY_CFG.format(socket=tmp / "haproxy.sock", port=lb_port,
                                                             servers=servers))
        lb = subprocess.Popen([HAPROXY, "-f", str(tmp / "haproxy.cfg"), "-db"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for i in range(REPLICAS):
                c.start(i)
            poll("HAProxy's stats socket", lambda: True if (tmp / "haproxy.sock").exists() else None)
            for i in range(REPLICAS):
                c.ready(i)
            yield c
        finally:
            for i in list(c.procs):
                if c.procs[i].poll() is None:
                    c.stop(i, signal.SIGTERM)
            lb.terminate()
            lb.wait(timeout=10)


def reply(r: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST (JSON or an SSE stream)."""
    assert r.status_code == 200, (r.status_code, r.text[:500])
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:") and '"id"' in line:
                msg = json.loads(line[5:])
                if "id" in msg:
                    return dict(msg)
        raise AssertionError(f"no answer in the stream: {r.text[:500]}")
    return dict(r.json())


async def call(http: httpx.AsyncClient, url: str, sid: str, tool: str, args: dict[str, Any],
               timeout: float = DEADLINE) -> httpx.Response:
    headers = {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": VERSION}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}}
    return await http.post(url, headers=headers, json=body, timeout=timeout)


def text_of(result: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result["result"].get("content", []))


def open_session(url: str) -> str:
    with httpx.Client(timeout=DEADLINE) as http:
        return initialize(http, url, VERSION)


async def test_kill_9_while_held_then_decided_through_another_replica_runs_once(cluster: Cluster) -> None:
    sid = open_session(cluster.mcp)
    async with httpx.AsyncClient() as http:
        assert "result" in reply(await call(http, cluster.mcp, sid, "demo__read_inbox", {}))
        held = asyncio.create_task(call(http, cluster.mcp, sid, "demo__send_email", OUTSIDE))
        approval = await pending_approval(cluster.base(0))
        victim = cluster.replica_of(sid)
        other = (victim + 1) % REPLICAS
        assert not held.done()  # waiting in-band on the victim
        assert cluster.stop(victim, signal.SIGKILL) == -signal.SIGKILL
        outcome = (await asyncio.gather(held, return_exceptions=True))[0]
        # The agent lost that call (HAProxy answers 502, or the stream breaks); nothing ran.
        assert isinstance(outcome, httpx.HTTPError) or outcome.status_code == 502, outcome
        assert (await approve(cluster.base(other), approval["id"])).status_code == 200
        # The repeat, in the same session, through HAProxy: another replica serves it from Redis.
        ran = reply(await call(http, cluster.mcp, sid, "demo__send_email", OUTSIDE))
        assert ran["result"].get("isError") is not True, ran
        assert cluster.replica_of(sid) != victim
    assert await sent_count(cluster.upstream_mcp) == 1
    cluster.start(victim)
    cluster.ready(victim)


async def test_rolling_restart_loses_no_session_and_no_approval(cluster: Cluster) -> None:
    sent_before = await sent_count(cluster.upstream_mcp)
    sid = open_session(cluster.mcp)
    other_sid = open_session(cluster.mcp)
    async with httpx.AsyncClient() as http:
        assert "result" in reply(await call(http, cluster.mcp, sid, "demo__read_inbox", {}))
        mail = {**OUTSIDE, "subject": "rolling"}
        # Held; the agent stops waiting after a second (its approval stays pending in Redis).
        with pytest.raises(httpx.ReadTimeout):
            await call(http, cluster.mcp, sid, "demo__send_email", mail, timeout=1.0)
        approval = await pending_approval(cluster.base(0))
        for i in range(REPLICAS):  # one at a time, as a Deployment's rolling update does
            assert cluster.stop(i, signal.SIGTERM) == 0
            cluster.start(i)
            cluster.ready(i)
        # Both sessions go on through HAProxy, wherever they land now.
        listed = reply(await http.post(cluster.mcp, headers={**MCP_HEADERS, "mcp-session-id": other_sid,
                                                             "mcp-protocol-version": VERSION},
                                       json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, timeout=DEADLINE))
        assert "demo__send_email" in [t["name"] for t in listed["result"]["tools"]]
        assert (await approve(cluster.base(1), approval["id"])).status_code == 200
        ran = reply(await call(http, cluster.mcp, sid, "demo__send_email", mail))
        assert ran["result"].get("isError") is not True, ran
        again = reply(await call(http, cluster.mcp, sid, "demo__send_email", mail, timeout=2.0 + HOLD_WAIT))
        assert again["result"].get("isError") is True  # the approval was used once: held anew
    assert await sent_count(cluster.upstream_mcp) == sent_before + 1


async def test_a_suspension_made_through_one_replica_reaches_every_replica(cluster: Cluster) -> None:
    tool, target = "demo__search_drive", "tool:demo__search_drive"
    sids = [open_session(cluster.base(i) + "/mcp") for i in range(REPLICAS)]
    async with httpx.AsyncClient() as http:
        for i, sid in enumerate(sids):
            assert "result" in reply(await call(http, cluster.base(i) + "/mcp", sid, tool, {"query": "q3"}))
        auth = {"authorization": f"Bearer {APPROVER[1]}"}
        r = await http.post(cluster.base(0) + "/api/suspensions", json={"target": target, "reason": "scale-out"},
                            headers=auth)
        assert r.status_code == 201, r.text
        suspended_at = time.monotonic()
        took: dict[int, float] = {}
        try:
            for i, sid in enumerate(sids):  # each replica asked directly, not through HAProxy
                end = time.monotonic() + DEADLINE
                while True:
                    text = text_of(reply(await call(http, cluster.base(i) + "/mcp", sid, tool, {"query": "q3"})))
                    if text == f"Denied by policy: {target} is suspended":
                        took[i] = time.monotonic() - suspended_at
                        break
                    assert time.monotonic() < end, f"replica {i} never applied the suspension: {text!r}"
        finally:
            await http.delete(cluster.base(0) + f"/api/suspensions/{target}", headers=auth)
    # The figure for the report (no timing assertion: the machine is shared).
    print(f"suspension seen by each replica after: {', '.join(f'{took[i] * 1000:.0f} ms' for i in sorted(took))}")
