"""This tree's allowed ``tools/call`` path against an earlier revision's, interleaved in one run.

The baseline revision is checked out into a temporary git worktree and its gateway runs
from there (``PYTHONPATH`` and working directory point at it); this tree's gateway runs
from here. Both sit in front of one lean upstream, with the same config, and wrk drives
them alternately, round after round (machines drift), so their figures are comparable
as ratios. Two configs per revision: "core" (audit and /metrics off: the decision path
alone) and "default" (audit file and /metrics on, as shipped).

    python -m load_tests.bench_revisions --baseline 9abb943 --duration 8 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from load_tests.bench_proxy import CALL, _headers, triplock_config
from load_tests.harness import REPO, LoadResult, free_port, machine_description, open_session, process, python, run_wrk

CONFIGS = {"core": 'sinks = []\n\n[telemetry]\nprometheus = false\n', "default": ""}
NO_OTEL = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached checkout of ``ref`` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=REPO, check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)


def run(baseline: str, duration: float, connections: int, rounds: int, pin: bool = False,
        configs: tuple[str, ...] = tuple(CONFIGS), candidate: str | None = None,
        ) -> list[tuple[str, str, list[LoadResult]]]:
    up_port = free_port()
    up_url = f"http://127.0.0.1:{up_port}/mcp"
    out: list[tuple[str, str, list[LoadResult]]] = []
    with worktree(baseline) as base, tempfile.TemporaryDirectory() as tmpdir, contextlib.ExitStack() as stack:
        # --candidate: compare two revisions, neither of them this working tree
        cand, cand_label = (stack.enter_context(worktree(candidate)), candidate) if candidate else (REPO, "this tree")
        stack.enter_context(process([python(), "-m", "load_tests.lean_upstream", str(up_port)], up_url, ok=(405,)))
        sides = []
        for config, extra in ((c, CONFIGS[c]) for c in configs):
            for label, tree in ((f"baseline {baseline}", base), (cand_label, cand)):
                d = Path(tmpdir) / f"{config}-{len(sides)}"
                d.mkdir()
                port = free_port()
                cfg = triplock_config(d / "gw.toml", port, up_url, extra)
                env = {**NO_OTEL, "PYTHONPATH": str(tree)}
                # --pin: every gateway on the last core, so both revisions run on the same one
                taskset = ["taskset", "-c", str((os.cpu_count() or 1) - 1)] if pin else []
                cmd = [*taskset, python(), "-m", "gateway.cli", "serve", "--config", str(cfg)]
                proc = stack.enter_context(process(cmd, f"http://127.0.0.1:{port}/readyz", env=env, cwd=tree))
                sides.append((config, label, port, proc))
        results: dict[tuple[str, str], list[LoadResult]] = {(c, lb): [] for c, lb, _, _ in sides}
        for n in range(rounds):
            # Every other round runs the sides in reverse, so neither revision always goes first.
            for config, label, port, proc in sides if n % 2 == 0 else reversed(sides):
                url = f"http://127.0.0.1:{port}/mcp"
                results[(config, label)].append(run_wrk(url, CALL, _headers(open_session(url)), connections=connections,
                                                        seconds=duration, target_pid=proc.pid))
        out = [(c, lb, rs) for (c, lb), rs in results.items()]
    return out


def print_table(rows: list[tuple[str, str, list[LoadResult]]], connections: int, duration: float) -> None:
    print(f"machine: {machine_description()}; {duration}s per run, {connections} connections, medians of rounds")
    head = (f"{'config':<9}{'revision':<22}{'req/s':>9}{'CPU µs/call':>13}{'p99 ms':>8}{'errors':>8}"
            f"{'req/s x':>9}{'CPU x':>8}")
    print(head)
    print("-" * len(head))
    base: dict[str, tuple[float, float]] = {}
    for config, label, rs in rows:
        rps = statistics.median(r.rps for r in rs)
        cpu = statistics.median(r.cpu_us_per_call for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        errors = sum(r.errors for r in rs)
        if config not in base:
            base[config] = (rps, cpu)
        b_rps, b_cpu = base[config]
        print(f"{config:<9}{label:<22}{rps:>9.0f}{cpu:>13.0f}{p99:>8.2f}{errors:>8}"
              f"{rps / b_rps:>9.3f}{cpu / b_cpu:>8.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare against (e.g. a commit id)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (max 30)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (max 20)")
    parser.add_argument("--pin", action="store_true", help="run every gateway on the same (last) core")
    parser.add_argument("--candidate", default=None, help="a revision to measure instead of this working tree")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    args = parser.parse_args(argv)
    duration, rounds = min(args.duration, 30.0), max(1, min(args.rounds, 20))
    rows = run(args.baseline, duration, args.connections, rounds, args.pin, tuple(args.configs.split(",")),
               args.candidate)
    print_table(rows, args.connections, duration)
    return 1 if any(r.errors for _, _, rs in rows for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
