"""Latency of the store's hot-path call (`call_state`) with 0 and with 10,000 pending approvals.

For each adapter (memory, SQLite file, Redis on loopback) it measures `call_state` sequentially,
creates the pending approvals, and measures again, in the same run. The allow path must not get
slower with the approval backlog: `call_state` reads legs, first use and pins only.

    python -m load_tests.bench_store                      # starts its own redis-server
    python -m load_tests.bench_store --redis-url redis://127.0.0.1:6379/0 --iterations 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

from adapters.stores.memory_store import MemoryStore
from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.records import PendingApproval
from load_tests.harness import machine_description

AnyStore = MemoryStore | SqliteStore | RedisStore


async def measure(store: AnyStore, iterations: int) -> dict[str, float]:
    """Sequential call_state latencies in µs (one caller: the latency, not the throughput, matters)."""
    for _ in range(min(500, iterations)):  # warm-up: caches, prepared statements, script loads
        await store.call_state("sess:bench", "tool:mail/send", "mail", "send")
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        await store.call_state("sess:bench", "tool:mail/send", "mail", "send")
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return {
        "mean_us": statistics.fmean(samples),
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[int(len(samples) * 0.99)],
    }


async def fill(store: AnyStore, pending: int) -> float:
    """Create `pending` approvals (many principals, sessions and tools); returns seconds taken."""
    t0 = time.perf_counter()
    for start in range(0, pending, 500):
        batch = [PendingApproval.new(principal=f"agent:{i % 97}", session_id=f"s{i % 1013}", upstream="mail",
                                     tool=f"tool{i % 7}", arguments={"n": i}, policy_revision="rev-1",
                                     legs_before="PU", legs_after="PUE")
                 for i in range(start, min(start + 500, pending))]
        await asyncio.gather(*(store.create_approval(a) for a in batch))
    return time.perf_counter() - t0


async def bench_one(name: str, store: AnyStore, iterations: int, pending: int) -> dict[str, Any]:
    async with store:
        await store.add_legs("sess:bench", frozenset({"P", "U"}), 3600)
        await store.mark_used("tool:mail/send")
        await store.set_pin("mail", "send", "sha256:bench", by="bench")
        empty = await measure(store, iterations)
        fill_s = await fill(store, pending)
        assert len(await store.list_approvals(state="pending", limit=pending)) == pending
        loaded = await measure(store, iterations)
    return {"adapter": name, "iterations": iterations, "pending": pending, "fill_seconds": fill_s,
            "empty": empty, "loaded": loaded, "ratio_p50": loaded["p50_us"] / empty["p50_us"]}


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
    else:
        from tests.redis_server import redis_server  # the tests' throw-away server helper

        with redis_server() as url:
            yield url


async def run(iterations: int, pending: int, given_redis: str | None, adapters: list[str]) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp, redis_url(given_redis if "redis" in adapters else "unused") as url:
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        stores: dict[str, AnyStore] = {
            "memory": MemoryStore(),
            "sqlite": SqliteStore(Path(tmp) / "bench.sqlite"),
            "redis": RedisStore(url, prefix=prefix),
        }
        for name in adapters:
            results.append(await bench_one(name, stores[name], iterations, pending))
        if "redis" in adapters and given_redis:  # leave a shared server as we found it
            cleaner = aredis.Redis.from_url(url)
            keys = [k async for k in cleaner.scan_iter(match=prefix + "*")]
            for i in range(0, len(keys), 1000):
                await cleaner.delete(*keys[i:i + 1000])
            await cleaner.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--adapters", default="memory,sqlite,redis")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(run(args.iterations, args.pending, args.redis_url, args.adapters.split(",")))
    print(machine_description())
    print(f"call_state latency, {args.iterations} sequential calls, µs")
    print(f"{'adapter':8} {'pending':>8} {'mean':>8} {'p50':>8} {'p99':>8}   fill")
    for r in results:
        for label, pending in (("empty", 0), ("loaded", r["pending"])):
            f = r[label]
            fill = f"{r['fill_seconds']:.2f}s" if label == "loaded" else ""
            figures = f"{f['mean_us']:>8.1f} {f['p50_us']:>8.1f} {f['p99_us']:>8.1f}"
            print(f"{r['adapter']:8} {pending:>8} {figures}   {fill}")
        print(f"{r['adapter']:8} p50 ratio loaded/empty: {r['ratio_p50']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
