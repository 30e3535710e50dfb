"""``server.workers = 2``: the process tree's memory, and how evenly the workers share a bounded load.

For each target (this tree, and with ``--before REF`` the same files at a Git revision, extracted
with ``git archive`` into a temporary directory) it starts ``triplock serve`` with two workers on
one redis-server in front of the lean upstream, reads each process's RSS idle, drives allowed
``tools/call`` with wrk for ``--seconds`` on ``--connections`` connections, and reports each
worker's share of the CPU the workers used and the RSS afterwards.

Run: ``python -m load_tests.bench_workers --before HEAD --seconds 5``. Bounded: two short wrk runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from load_tests.bench_replicas import wrk_calls
from load_tests.common import (
    TriplockSpec,
    call_body,
    check_call,
    lean_upstreams,
    mcp_url,
    redis_server,
    session_headers,
    spawn,
    triplock_toml,
)
from load_tests.harness import CLK_TCK, REPO, free_port, machine_description, python


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@contextlib.contextmanager
def checkout(ref: str | None) -> Iterator[Path]:
    """This tree, or the files of ``ref`` (``git archive``: nothing in this tree changes)."""
    if ref is None:
        yield REPO
        return
    with tempfile.TemporaryDirectory(prefix="triplock-before-") as tmp:
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def measure(label: str, repo: Path, redis_url: str, upstream: str, seconds: float, connections: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="triplock-workers-") as tmp:
        work = Path(tmp)
        port = free_port()
        spec = TriplockSpec(upstreams=[("lean", upstream)], store="redis", redis_url=redis_url,
                            audit_sinks=("file",), audit_path=work / "audit-{pid}.jsonl")
        text = triplock_toml(spec, port).replace(f"port = {port}\n", f"port = {port}\nworkers = 2\n", 1)
        (work / "gw.toml").write_text(text)
        # PYTHONPATH first: the packages of `repo` shadow this tree's editable install.
        env = {"PYTHONPATH": str(repo)}
        cmd = [python(), "-m", "gateway.cli", "serve", "--config", str(work / "gw.toml")]
        with spawn(cmd, f"http://127.0.0.1:{port}/readyz", env=env, cwd=repo) as proc:
            url = mcp_url(port)
            deadline = time.monotonic() + 60
            while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # the workers appear once the supervisor has started them
            workers = children(proc.pid)
            headers = session_headers(url)
            for _ in range(4):  # both workers have served (and imported what serving needs) before "idle"
                session_headers(url)
            check = check_call(url, call_body("echo", {"x": 1}), headers)
            idle = {pid: rss_mb(pid) for pid in [proc.pid, *workers]}
            cpu0 = {pid: cpu_s(pid) for pid in [proc.pid, *workers]}
            res = wrk_calls(url, [headers["mcp-session-id"]], "echo", {"x": 1}, threads=1,
                            connections=connections, seconds=seconds, work=work)
            cpu1 = {pid: cpu_s(pid) for pid in [proc.pid, *workers]}
            loaded = {pid: rss_mb(pid) for pid in [proc.pid, *workers]}
    used = {pid: cpu1[pid] - cpu0[pid] for pid in workers}
    total = sum(used.values()) or 1.0
    shares = sorted((round(100 * used[p] / total, 1) for p in workers), reverse=True)
    requests = max(1, res["requests"])
    return {
        "target": label, "rps": round(res["requests"] * 1e6 / res["duration_us"]),
        "errors": res["errors"] + res["rpc_errors"], "check": check,
        "supervisor_rss_mb": round(idle[proc.pid], 1),
        "worker_rss_mb": [round(idle[p], 1) for p in workers],
        "tree_rss_idle_mb": round(sum(idle.values()), 1),
        "tree_rss_loaded_mb": round(sum(loaded.values()), 1),
        "supervisor_cpu_s": round(cpu1[proc.pid] - cpu0[proc.pid], 3),
        "workers_cpu_us_per_call": round(sum(used.values()) * 1e6 / requests),
        "worker_cpu_share_pct": shares,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_workers")
    parser.add_argument("--before", default=None, help="a Git revision to compare with (e.g. HEAD)")
    parser.add_argument("--before-tree", type=Path, default=None,
                        help="or a directory with the tree to compare with (a copy with the change undone)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    with redis_server() as (redis_url, _), lean_upstreams(1, 3) as ups:
        if args.before_tree:
            rows.append(measure("before", args.before_tree.resolve(), redis_url, ups[0][0], args.seconds,
                                args.connections))
        targets = ([("before", args.before)] if args.before else []) + [("after", None)]
        for label, ref in targets:
            with checkout(ref) as repo:
                name = f"{label} ({ref})" if ref else label
                rows.append(measure(name, repo, redis_url, ups[0][0], args.seconds, args.connections))
    print(f"server.workers = 2, {args.connections} connections, {args.seconds:.0f} s; {machine_description()}")
    print("| target | req/s | supervisor RSS | worker RSS | tree RSS idle / loaded | worker CPU shares |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['target']} | {r['rps']:,} | {r['supervisor_rss_mb']} MB | "
              f"{' + '.join(f'{w} MB' for w in r['worker_rss_mb'])} | "
              f"{r['tree_rss_idle_mb']} / {r['tree_rss_loaded_mb']} MB | "
              f"{' / '.join(f'{s}%' for s in r['worker_cpu_share_pct'])} |")
    for r in rows:
        print(f"{r['target']}: {r['errors']} errors, workers' CPU {r['workers_cpu_us_per_call']} µs per call; "
              f"one call: {r['check']}")
    if len(rows) == 2:
        before, after = rows
        print(f"after/before: tree RSS idle {after['tree_rss_idle_mb'] / before['tree_rss_idle_mb']:.2f}, "
              f"supervisor RSS {after['supervisor_rss_mb'] / before['supervisor_rss_mb']:.2f}, "
              f"req/s {after['rps'] / max(1, before['rps']):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
