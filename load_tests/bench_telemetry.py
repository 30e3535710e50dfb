"""Allowed ``tools/call`` throughput with telemetry + audit ON versus OFF, in the same run.

Two gateways in front of one lean upstream, identical but for observability:

- OFF: ``[telemetry] prometheus = false``, ``[audit] sinks = []``, no ``OTEL_*`` exporter.
- ON: every span exported over OTLP/HTTP (default sampler: every request traced), OTLP
  metrics pushed every 5 s, ``/metrics`` served, every decision and outcome in the
  hash-chained audit file.

A third gateway, "metrics+audit", has /metrics and the audit file but no OTLP export,
to show where the cost goes; a fourth, "on, 10% traced", is ON with the sampler SREs run
in production (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ratio 0.1). The OTLP
endpoint is a minimal sink process that answers 200 without decoding, so the figures
measure the gateway's cost, not a collector's. Runs alternate OFF/ON per repetition
(machines drift); the best run of each side is compared. Target: ON keeps
at least 85% of OFF's requests/s.

    python -m load_tests.bench_telemetry --duration 10 --connections 16 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from load_tests.bench_proxy import CALL, _headers, triplock_config
from load_tests.harness import LoadResult, free_port, machine_description, open_session, process, python, run_wrk

TARGET_RATIO = 0.85
async def _otlp_sink(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept any OTLP/HTTP export: drain the body, answer 200 with an empty (valid) protobuf reply."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf"), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _configs(tmp: Path, up_url: str) -> dict[str, tuple[Path, int]]:
    """One config per side, each in its own directory (its own state store), bench_proxy's policy."""
    # triplock_config ends inside [audit] (its path is {dir}/audit.jsonl): these lines continue it.
    sections = {
        "off": 'sinks = []\n\n[telemetry]\nprometheus = false\n',
        "metrics+audit": 'sinks = ["file"]\n\n[telemetry]\nprometheus = true\n',
        "on": 'sinks = ["file"]\n\n[telemetry]\nprometheus = true\n',
        "on, 10% traced": 'sinks = ["file"]\n\n[telemetry]\nprometheus = true\n',
    }
    out = {}
    for side, extra in sections.items():
        d = tmp / side.replace("+", "-").replace(", ", "-").replace("% ", "pct-")
        d.mkdir()
        port = free_port()
        out[side] = (triplock_config(d / "gw.toml", port, up_url, extra), port)
    return out


def run(duration: float, connections: list[int], repeat: int) -> dict[str, Any]:
    up_port, sink_port = free_port(), free_port()
    up_url = f"http://127.0.0.1:{up_port}/mcp"
    results: dict[str, Any] = {"machine": machine_description(), "duration_s": duration, "runs": []}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cfg = _configs(tmp, up_url)
        (off_cfg, off_port), (on_cfg, on_port), (mid_cfg, mid_port) = cfg["off"], cfg["on"], cfg["metrics+audit"]
        smp_cfg, smp_port = cfg["on, 10% traced"]
        audit = on_cfg.parent / "audit.jsonl"
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "OTEL_METRIC_EXPORT_INTERVAL": "5000"}
        sampled = {**otel, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        no_otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
        serve = [python(), "-m", "gateway.cli", "serve", "--config"]
        with process([python(), "-m", "load_tests.lean_upstream", str(up_port)], up_url, ok=(405,)) as upstream, \
                process([python(), "-m", "load_tests.bench_telemetry", "--sink", str(sink_port)]), \
                process([*serve, str(off_cfg)], f"http://127.0.0.1:{off_port}/readyz", env=no_otel) as gw_off, \
                process([*serve, str(on_cfg)], f"http://127.0.0.1:{on_port}/readyz", env=otel) as gw_on, \
                process([*serve, str(mid_cfg)], f"http://127.0.0.1:{mid_port}/readyz", env=no_otel) as gw_mid, \
                process([*serve, str(smp_cfg)], f"http://127.0.0.1:{smp_port}/readyz", env=sampled) as gw_smp:
            del upstream
            for c in connections:
                best: dict[str, LoadResult] = {}
                for _ in range(repeat):
                    for name, port, proc in (("off", off_port, gw_off), ("on", on_port, gw_on),
                                             ("metrics+audit", mid_port, gw_mid),
                                             ("on, 10% traced", smp_port, gw_smp)):
                        url = f"http://127.0.0.1:{port}/mcp"
                        r = run_wrk(url, CALL, _headers(open_session(url)), connections=c, seconds=duration,
                                    target_pid=proc.pid)
                        if name not in best or r.rps > best[name].rps:
                            best[name] = r
                off, on, mid, smp = best["off"], best["on"], best["metrics+audit"], best["on, 10% traced"]
                results["runs"].append({
                    "connections": c, "off": asdict(off) | {"rps": off.rps}, "on": asdict(on) | {"rps": on.rps},
                    "metrics+audit": asdict(mid) | {"rps": mid.rps},
                    "on, 10% traced": asdict(smp) | {"rps": smp.rps},
                    "ratio_rps": on.rps / off.rps if off.rps else 0.0,
                    "ratio_rps_without_traces": mid.rps / off.rps if off.rps else 0.0,
                    "ratio_rps_10pct_traced": smp.rps / off.rps if off.rps else 0.0,
                    "added_cpu_us_per_call": on.cpu_us_per_call - off.cpu_us_per_call,
                })
        lines = audit.read_text().splitlines() if audit.exists() else []
        results["audit_records"] = len(lines)
        results["audit_types"] = sorted({json.loads(x)["type"] for x in lines[:1000]})
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}; {results['duration_s']}s per run")
    head = (f"{'conns':>6} {'side':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU µs/call':>13}"
            f"{'vs off':>8}")
    print(head)
    print("-" * len(head))
    for r in results["runs"]:
        for side in ("off", "metrics+audit", "on, 10% traced", "on"):
            x = r[side]
            ratio = {"off": 1.0, "on": r["ratio_rps"], "metrics+audit": r["ratio_rps_without_traces"],
                     "on, 10% traced": r["ratio_rps_10pct_traced"]}[side]
            print(f"{r['connections']:>6} {side:<16}{x['rps']:>9.0f}{x['p50_ms']:>9.2f}{x['p99_ms']:>9.2f}"
                  f"{x['errors']:>8}{x['cpu_us_per_call']:>13.0f}{ratio:>8.3f}")
        print(f"  telemetry+audit cost: {100 * (1 - r['ratio_rps']):.1f}% of throughput, "
              f"{r['added_cpu_us_per_call']:+.0f} µs CPU per call (target: at most {100 * (1 - TARGET_RATIO):.0f}%); "
              f"with 10% of traces sampled: {100 * (1 - r['ratio_rps_10pct_traced']):.1f}%")
    print(f"audit records written by the ON gateway: {results['audit_records']} ({', '.join(results['audit_types'])})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (max 120)")
    parser.add_argument("--connections", default="16", help="comma-separated concurrency levels")
    parser.add_argument("--repeat", type=int, default=2, help="OFF/ON pairs per level; the best of each counts")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--sink", type=int, default=None, help=argparse.SUPPRESS)  # internal: run the OTLP sink
    args = parser.parse_args(argv)
    if args.sink is not None:
        import uvicorn

        uvicorn.run(_otlp_sink, host="127.0.0.1", port=args.sink, log_level="warning", access_log=False)
        return 0
    results = run(min(args.duration, 120.0), [int(c) for c in args.connections.split(",")], max(1, args.repeat))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = any(r["on"]["errors"] or r["off"]["errors"] for r in results["runs"])
    slow = any(r["ratio_rps"] < TARGET_RATIO for r in results["runs"])
    return 1 if bad or slow else 0


if __name__ == "__main__":
    sys.exit(main())
