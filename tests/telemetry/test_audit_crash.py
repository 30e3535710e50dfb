"""Durable audit in a real gateway: kill -9 under load loses no answered call; a full backlog fails closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.ports.records import args_hash
from gateway.telemetry.audit import GENESIS, EventType
from gateway.telemetry.audit_verify import verify_lines
from gateway.telemetry.observers import AUDIT_FULL_MESSAGE
from tests.support import MCP_HEADERS, PY, REPO, free_port, gateway_cmd, initialize, running, write_config

DEMO = {"name": "demo", "transport": "stdio", "command": PY,
        "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}
VERSION = "2025-11-25"


def _ready(base: str, deadline: float = 30.0) -> dict[str, Any]:
    """Poll /readyz until it says ready (the upstream is connected); its body."""
    end = time.monotonic() + deadline
    while True:
        r = httpx.get(f"{base}/readyz", timeout=5)
        if r.status_code == 200:
            return dict(r.json())
        assert time.monotonic() < end, r.text
        time.sleep(0.05)  # polling interval; readiness is checked each round


def _answer(r: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether sent as JSON or as one SSE event."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        return dict(orjson.loads(data[-1]))
    return dict(r.json())


def _call(query: str, rid: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": "demo__search_drive", "arguments": {"query": query}}}


@contextlib.contextmanager
def _session(base: str) -> Iterator[dict[str, str]]:
    with httpx.Client(timeout=30) as c:
        sid = initialize(c, f"{base}/mcp", VERSION)
    yield {**MCP_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": VERSION}


def _completed_hashes(path: Path) -> list[str]:
    records = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.endswith(b"}")]
    return [r["args_hash"] for r in records if r["type"] == EventType.CALL_COMPLETED]


async def _fire_until_killed(base: str, headers: dict[str, str], proc: subprocess.Popen[bytes],
                             kill_after: int) -> set[str]:
    """Concurrent calls; once ``kill_after`` are answered, SIGKILL the gateway mid-load. The answered calls."""
    answered: set[str] = set()
    killed = asyncio.Event()
    counter = iter(range(1_000_000))

    async def worker(client: httpx.AsyncClient) -> None:
        while not killed.is_set():
            n = next(counter)
            query = f"crash-{n}"
            try:
                r = await client.post(f"{base}/mcp", headers=headers, json=_call(query, n))
            except httpx.HTTPError:
                return  # the gateway is gone: this call was never answered
            msg = _answer(r)
            assert r.status_code == 200 and "result" in msg and not msg["result"].get("isError"), r.text
            answered.add(args_hash({"query": query}))
            if len(answered) >= kill_after and not killed.is_set():
                killed.set()
                os.killpg(proc.pid, signal.SIGKILL)  # the gateway and its stdio upstream, no clean-up at all

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(24)))
    return answered


def test_kill_9_under_load_loses_no_answered_call(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    audit = tmp_path / "audit.jsonl"
    config = write_config(tmp_path / "gw.toml", port, [DEMO], audit={"path": str(audit)})
    with running(gateway_cmd(config), f"{base}/healthz") as proc:
        _ready(base)
        with _session(base) as headers:
            answered = asyncio.run(_fire_until_killed(base, headers, proc, kill_after=200))
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert len(answered) >= 200
    recorded = _completed_hashes(audit)
    missing = answered - set(recorded)
    assert missing == set(), f"{len(missing)} of {len(answered)} answered calls have no audit record"
    # The file's chain holds (a torn last line, if the kill cut a write, is reported and left out).
    verify = subprocess.run([PY, "-m", "gateway.cli", "audit", "verify", "--from-genesis", str(audit)], cwd=REPO,
                            capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.startswith("OK: "), verify.stdout + verify.stderr


def _start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """redis-server on the port the audit sink was given while nothing listened there."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    return proc


def test_full_audit_backlog_refuses_guarded_calls_until_the_sink_recovers(tmp_path: Path) -> None:
    redis_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path / "gw.toml", port, [DEMO], audit={
        "sinks": ["redis"], "redis_url": f"redis://127.0.0.1:{redis_port}/0", "redis_stream": "audit-test",
        "max_backlog": 2, "durable_timeout": 0.3})
    redis_proc: subprocess.Popen[bytes] | None = None
    try:
        with running(gateway_cmd(config), f"{base}/healthz"), _session(base) as headers, \
                httpx.Client(timeout=30) as client:
            audit = _ready(base)["audit"]
            assert (audit["backlog"], audit["full"], audit["sinks"]["redis"]["ok"]) == (1, False, False)
            # The sink is down, with room: the call runs; its answer waits durable_timeout, then is counted.
            first = _answer(client.post(f"{base}/mcp", headers=headers, json=_call("first", 1)))
            assert "result" in first and not first["result"].get("isError")
            r = httpx.get(f"{base}/readyz", timeout=5)
            audit = r.json()["audit"]
            assert r.status_code == 503 and r.json()["status"] == "not ready"
            assert (audit["backlog"], audit["full"], audit["undurable_answers"]) == (2, True, 1)
            # Full: the next guarded call is refused before anything runs.
            refused = _answer(client.post(f"{base}/mcp", headers=headers, json=_call("refused", 2)))
            assert refused["error"] == {"code": -32603, "message": AUDIT_FULL_MESSAGE}
            assert httpx.get(f"{base}/readyz", timeout=5).json()["audit"]["refused_calls"] == 1
            redis_proc = _start_redis(redis_port, tmp_path)
            audit = _ready(base)["audit"]  # the held records are delivered: ready again
            assert (audit["backlog"], audit["full"], audit["ok"], audit["refused_calls"]) == (0, False, True, 1)
            third = _answer(client.post(f"{base}/mcp", headers=headers, json=_call("third", 3)))
            assert "result" in third and not third["result"].get("isError")
        import redis

        entries = redis.Redis(port=redis_port).xrange("audit-test")
        lines = [fields[b"event"] for _, fields in entries]
        records = [orjson.loads(x) for x in lines]
        assert [r["type"] for r in records] == [EventType.UPSTREAM_ADDED, EventType.CALL_COMPLETED,
                                                EventType.CALL_COMPLETED]
        assert [r.get("args_hash") for r in records[1:]] == [args_hash({"query": "first"}),
                                                             args_hash({"query": "third"})]
        assert verify_lines(lines, expected_prev=GENESIS).ok
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
