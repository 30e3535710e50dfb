"""Allowed ``tools/call`` through Triplock versus straight to the upstream, in the same run.

Prints requests/s, p50, p99, errors, the target's CPU µs per call and peak RSS, and
the ratios to direct; ``--json FILE`` writes the same figures.

    python -m load_tests.bench_proxy --duration 10 --connections 1,16
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from load_tests.harness import (
    LoadResult,
    free_port,
    machine_description,
    open_session,
    process,
    python,
    run_wrk,
)

POLICY = Path(__file__).resolve().parent / "policies" / "bench.yaml"
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"q": "hello"}}}


def triplock_config(path: Path, port: int, upstream_url: str, extra: str = "") -> Path:
    path.write_text(
        f"""[server]
host = "127.0.0.1"
port = {port}
log_level = "warning"

[[upstreams]]
name = "lean"
prefix = ""
transport = "http"
url = "{upstream_url}"

[policy]
file = "{POLICY}"

[store]
kind = "sqlite"
path = "{path.parent / 'state.sqlite'}"

[audit]
path = "{path.parent / 'audit.jsonl'}"
{extra}
"""
    )
    return path


def run(duration: float, connections: list[int]) -> dict[str, Any]:
    up_port, gw_port = free_port(), free_port()
    up_url = f"http://127.0.0.1:{up_port}/mcp"
    gw_url = f"http://127.0.0.1:{gw_port}/mcp"
    results: dict[str, Any] = {"machine": machine_description(), "duration_s": duration, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = triplock_config(Path(tmp) / "bench.toml", gw_port, up_url)
        with process([python(), "-m", "load_tests.lean_upstream", str(up_port)], up_url, ok=(405,)) as upstream:
            with process([python(), "-m", "gateway.cli", "serve", "--config", str(cfg)],
                         f"http://127.0.0.1:{gw_port}/readyz") as gateway:
                for c in connections:
                    sid = open_session(up_url)
                    direct = run_wrk(up_url, CALL, _headers(sid), connections=c, seconds=duration,
                                     target_pid=upstream.pid)
                    gsid = open_session(gw_url)
                    up_cpu0 = _cpu(upstream.pid)
                    through = run_wrk(gw_url, CALL, _headers(gsid), connections=c, seconds=duration,
                                      target_pid=gateway.pid)
                    up_cpu_us = (_cpu(upstream.pid) - up_cpu0) * 1e6 / max(1, through.requests)
                    results["runs"].append({
                        "scenario": "allowed tools/call", "connections": c,
                        "direct": asdict(direct) | {"rps": direct.rps},
                        "triplock": asdict(through) | {"rps": through.rps, "upstream_cpu_us_per_call": up_cpu_us},
                        "ratio_rps": through.rps / direct.rps if direct.rps else 0.0,
                        "added_p50_ms": through.p50_ms - direct.p50_ms,
                        "added_p99_ms": through.p99_ms - direct.p99_ms,
                        "cpu_vs_upstream": through.cpu_us_per_call / direct.cpu_us_per_call
                        if direct.cpu_us_per_call else 0.0,
                    })
    return results


def _cpu(pid: int) -> float:
    from load_tests.harness import cpu_seconds

    return cpu_seconds(pid)


def _headers(sid: str | None) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
         "mcp-protocol-version": "2025-11-25"}
    if sid:
        h["mcp-session-id"] = sid
    return h


def print_table(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}; {results['duration_s']}s per run")
    head = f"{'scenario':<22}{'conns':>6} {'target':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}" \
           f"{'CPU µs/call':>13}{'peak MB':>9}{'x direct':>10}"
    print(head)
    print("-" * len(head))
    for r in results["runs"]:
        for name in ("direct", "triplock"):
            x: dict[str, Any] = r[name]
            ratio = 1.0 if name == "direct" else r["ratio_rps"]
            print(f"{r['scenario']:<22}{r['connections']:>6} {name:<9}{x['rps']:>9.0f}{x['p50_ms']:>9.2f}"
                  f"{x['p99_ms']:>9.2f}{x['errors']:>8}{x['cpu_us_per_call']:>13.0f}{x['peak_rss_mb']:>9.0f}"
                  f"{ratio:>10.2f}")
        print(f"  added latency: p50 {r['added_p50_ms']:+.2f} ms, p99 {r['added_p99_ms']:+.2f} ms; "
              f"Triplock CPU per call = {r['cpu_vs_upstream']:.2f}x the upstream's")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (max 120)")
    parser.add_argument("--connections", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    duration = min(args.duration, 120.0)  # load tests stay bounded in time
    results = run(duration, [int(c) for c in args.connections.split(",")])
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = [r for r in results["runs"] if r["triplock"]["errors"] or r["direct"]["errors"]]
    return 1 if bad else 0


__all__ = ["LoadResult", "main", "run"]

if __name__ == "__main__":
    raise SystemExit(main())
