"""Durability across kill -9 and compare-and-set across processes, for the SQLite and Redis stores.

A child process (`tests.adapters.stores._child`) uses the store and is killed with SIGKILL while writing;
a fresh store instance (a restarted gateway) must then find everything it committed, and the
pending approval must still be decidable and its repeat call runnable exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.records import args_hash
from tests.adapters.stores._child import ARGS, pending
from tests.support import REPO


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(kind, target, prefix) shared by the child processes and the test's own store."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "state.sqlite"), "-"
    else:
        yield "redis", request.getfixturevalue("redis_url"), f"t{uuid.uuid4().hex[:10]}:"


def child(backend: tuple[str, str, str], *mode: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.adapters.stores._child", *backend, *mode]
    return subprocess.Popen(cmd, cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def open_store(backend: tuple[str, str, str]) -> Any:
    kind, target, prefix = backend
    return SqliteStore(target) if kind == "sqlite" else RedisStore(target, prefix=prefix)


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the child says something; pytest-timeout bounds it
    if not line:
        proc.wait()
        raise AssertionError(f"child exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    return line.strip()


async def test_state_survives_kill_9_mid_write(backend: tuple[str, str, str]) -> None:
    proc = child(backend, "write")
    try:
        pending_id = read_line(proc).removeprefix("PENDING ")
        approved_id = read_line(proc).removeprefix("APPROVED ")
        assert read_line(proc) == "READY"
        committed = [read_line(proc).removeprefix("ID ") for _ in range(30)]
        os.kill(proc.pid, signal.SIGKILL)  # mid-way through the write loop
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async with open_store(backend) as store:
        state = await store.call_state("sess:1", "tool:mail/send_email", "mail", "send_email")
        assert state.legs == {"P", "U"} and state.tool_used_before and state.pinned_hash == "sha256:pinned"
        assert store.suspended() == {"agent:rogue"}
        assert await store.get_pins() == {("mail", "send_email"): "sha256:pinned"}
        for i in committed:
            assert (await store.get_approval(i)) is not None, f"committed approval {i} lost"
        assert (await store.get_approval(approved_id)).state == "approved"
        # the held call is still there, can be decided, and the agent's repeat then runs once
        key = ("agent:a", "s1", "mail", "send_email", args_hash(ARGS))
        assert (await store.find_pending(*key)).id == pending_id
        assert (await store.decide(pending_id, True, "human:h", "ok", time.time())).status == "approved"
        found = await store.find_approved(*key, "rev-1", time.time())
        assert found is not None and found.id in (pending_id, approved_id)
        assert await store.consume(found.id) is True
        assert await store.consume(found.id) is False
    if backend[0] == "sqlite":
        with contextlib.closing(sqlite3.connect(backend[1])) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_decisions_across_two_processes_have_one_winner(backend: tuple[str, str, str]) -> None:
    a = pending()
    async with open_store(backend) as store:
        await store.create_approval(a)
    procs = [child(backend, "decide", "25"), child(backend, "decide", "25")]
    try:
        for p in procs:  # both connected to the store before either starts
            assert read_line(p) == "READY"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{a.id}\ngo\n")
            p.stdin.flush()
        statuses = [s for p in procs for s in json.loads(read_line(p))]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert len(statuses) == 50
    assert sum(s in ("approved", "denied") for s in statuses) == 1, statuses
    assert set(statuses) - {"approved", "denied"} == {"conflict"}
    async with open_store(backend) as store:
        assert (await store.get_approval(a.id)).state in ("approved", "denied")
