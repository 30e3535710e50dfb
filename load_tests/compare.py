"""The whole comparison in one command: Triplock against direct and against its peers, same run.

    python -m load_tests.compare                 # full run (peers installed on first use)
    python -m load_tests.compare --setup         # only install the peers into load_tests/.peers/
    python -m load_tests.compare --quick         # 2 s runs, no peers, small fan-out (a smoke)
    python -m load_tests.compare --only allowed,held --duration 5

Same lean upstream, same load generator (wrk, one thread), same concurrency (1 and 16
connections) for every target. Prints one table and writes the same figures to
``load_tests/results/compare-<date>.json``. Ratios are taken within this run only: the
machine is shared and noisy, so absolute figures move between runs, ratios much less.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from load_tests import peers
from load_tests.common import (
    LIST_BODY,
    Run,
    TriplockSpec,
    api_key,
    call_body,
    fanout_policy,
    lean_upstreams,
    measure,
    measure_parallel,
    open_sessions,
    redis_server,
    session_headers,
    tools_pages,
    tree_rss_mb,
    triplock,
    upstream_tools,
)
from load_tests.harness import machine_description

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("allowed", "held", "sessions", "blob", "tools_list", "telemetry", "auth", "store", "workers",
             "pending", "profile")
BLOB = 1024 * 1024


@dataclass
class Context:
    """State shared by the scenarios of one comparison run."""

    duration: float
    conns: tuple[int, ...]
    quick: bool
    with_peers: bool
    workdir: Path
    upstream_url: str
    upstream_pid: int
    hold_tool: str
    key: str
    runs: list[Run] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    direct: dict[tuple[str, int], float] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def spec(self, **kw: Any) -> TriplockSpec:
        """The Triplock config of the comparison (one lean upstream, API-key auth, SQLite, hold_wait 0)."""
        base: dict[str, Any] = {"upstreams": [("lean", self.upstream_url)], "store": "sqlite",
                                "store_path": self.workdir / f"state-{len(self.runs)}-{time.monotonic_ns()}.sqlite",
                                "api_keys_file": self.workdir / "keys.json"}
        return TriplockSpec(**{**base, **kw})

    def add(self, run: Run, direct_key: tuple[str, int] | None = None) -> Run:
        """Record a run; ``direct_key`` names the direct run it is a ratio to."""
        if run.target == "direct":
            self.direct[(run.scenario, run.connections)] = run.rps
            run.ratio_to_direct = 1.0
        elif direct_key and self.direct.get(direct_key):
            run.ratio_to_direct = run.rps / self.direct[direct_key]
        self.runs.append(run)
        print(_row(run), flush=True)
        return run


# --- scenarios ---------------------------------------------------------------------------------

def scenario_allowed(ctx: Context, gw_url: str, gw_pid: int) -> None:
    """Allowed tools/call (echo, small payload): direct, Triplock, FastMCP proxy, ContextForge."""
    body = call_body("echo", {"q": "hello"})
    up = (ctx.upstream_pid,)
    d_h = session_headers(ctx.upstream_url)
    g_h = session_headers(gw_url, ctx.auth)
    repeats = 1 if ctx.quick else 2
    for c in ctx.conns:
        for rep in range(repeats):  # key runs twice, interleaved, so a noisy neighbour shows up
            tag = "allowed" if rep == 0 else "allowed (repeat)"
            ctx.add(measure(tag, "direct", ctx.upstream_url, body, d_h, connections=c, seconds=ctx.duration,
                            pid=ctx.upstream_pid))
            ctx.add(measure(tag, "triplock", gw_url, body, g_h, connections=c, seconds=ctx.duration, pid=gw_pid,
                            upstream_pids=up), (tag, c))
    if not ctx.with_peers:
        return
    for name, starter in (("fastmcp", peers.fastmcp_proxy), ("contextforge", peers.contextforge)):
        if not peers.installed_version(name):
            ctx.notes[name] = "not installed (run python -m load_tests.compare --setup)"
            continue
        try:
            with starter(ctx.upstream_url) as peer:
                h = session_headers(peer.url, peer.headers)
                pbody = call_body(peer.tool("echo"), {"q": "hello"})
                ctx.notes[name] = {"version": peers.installed_version(name), "notes": peer.notes}
                for c in ctx.conns:
                    ctx.add(measure("allowed", name, peer.url, pbody, h, connections=c, seconds=ctx.duration,
                                    pid=peer.pid, upstream_pids=up), ("allowed", c))
        except Exception as exc:  # a peer that cannot run here is a finding, not a crash
            ctx.notes[name] = {"version": peers.installed_version(name), "error": f"{type(exc).__name__}: {exc}"}
            print(f"  {name}: could not be measured: {exc}", flush=True)


def scenario_held(ctx: Context, gw_url: str, gw_pid: int) -> None:
    """A held call (hold_wait 0): the same body and session each time, so one approval stays pending
    and every repeat measures decide + find_approved + find_pending (existing) + the pending answer."""
    body = call_body(ctx.hold_tool, {"to": "a@example.com", "subject": "bench"})
    g_h = session_headers(gw_url, ctx.auth)
    for c in ctx.conns:
        ctx.add(measure("held (pending)", "triplock", gw_url, body, g_h, connections=c, seconds=ctx.duration,
                        pid=gw_pid, upstream_pids=(ctx.upstream_pid,)), ("allowed", c))
    ctx.notes["held"] = (f"tool {ctx.hold_tool!r} classified email_send (write): held; hold_wait=0 answers "
                         "pending at once. The first call creates the approval; every identical repeat (same "
                         "principal, session, tool, arguments hash) finds and returns that pending approval, so "
                         "the run measures the bookkeeping path (state read, decide, find_approved, find_pending, "
                         "pending answer), not approval creation. Ratio is to direct allowed echo.")


def scenario_sessions(ctx: Context, gw_url: str, gw_pid: int) -> None:
    """1,000 concurrent idle sessions: initialize + initialized + one tools/call each, then RSS."""
    count = 200 if ctx.quick else 1000
    before = tree_rss_mb(gw_pid)
    up_before = tree_rss_mb(ctx.upstream_pid)
    t0 = time.monotonic()
    open_sessions(gw_url, ctx.auth, call_body("echo", {"q": "hello"}), count)
    took = time.monotonic() - t0
    time.sleep(1)
    after = tree_rss_mb(gw_pid)
    ctx.notes["sessions"] = {
        "sessions": count, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
        "kb_per_session": round((after - before) * 1024 / count, 1), "open_seconds": round(took, 2),
        "upstream_rss_growth_mb": round(tree_rss_mb(ctx.upstream_pid) - up_before, 1),
        "note": "each downstream session also opens its own upstream session (lean keeps no per-session state)",
    }
    print(f"  {count} idle sessions: RSS {before:.1f} -> {after:.1f} MB "
          f"({(after - before) * 1024 / count:.1f} KB/session), opened in {took:.1f}s", flush=True)


def scenario_blob(ctx: Context) -> None:
    """A 1 MiB result: direct and through a fresh Triplock; RSS growth against the result size."""
    body = call_body("blob", {"size": BLOB})
    ctx.add(measure("1 MiB result", "direct", ctx.upstream_url, body, session_headers(ctx.upstream_url),
                    connections=1, seconds=ctx.duration, pid=ctx.upstream_pid))
    with triplock(ctx.spec(), ctx.workdir, "blob") as (url, pid):
        h = session_headers(url, ctx.auth)
        for c in ctx.conns:
            run = measure("1 MiB result", "triplock", url, body, h, connections=c, seconds=ctx.duration, pid=pid,
                          upstream_pids=(ctx.upstream_pid,))
            growth = run.peak_rss_mb - run.rss_before_mb
            run.extra = {"rss_growth_mb": round(growth, 1), "in_flight_results": c,
                         "growth_per_result_in_flight_x": round(growth / c, 2)}
            ctx.add(run, ("1 MiB result", 1))
            print(f"  RSS growth {growth:.1f} MB with {c} x 1 MiB in flight "
                  f"({growth / c:.2f}x the result size per in-flight result)", flush=True)


def scenario_tools_list(ctx: Context) -> None:
    """tools/list with 50 upstreams of 100 tools each (first page; total pages reported)."""
    n = 10 if ctx.quick else 50
    print(f"  starting {n} lean upstreams with 100 tools each ...", flush=True)
    with lean_upstreams(n, 100) as ups:
        names = [f"u{i:02d}" for i in range(n)]
        policy = fanout_policy(ctx.workdir / "fanout.yaml", names)
        spec = ctx.spec(upstreams=[(name, u) for name, (u, _) in zip(names, ups, strict=True)], policy=policy)
        with triplock(spec, ctx.workdir, "fanout") as (url, pid):
            h = session_headers(url, ctx.auth)
            pages, tools = tools_pages(url, h)
            ctx.notes["tools_list"] = {"upstreams": n, "tools_per_upstream": 100, "tools_listed": tools,
                                       "pages": pages, "rss_mb": round(tree_rss_mb(pid), 1)}
            print(f"  {tools} tools listed in {pages} pages", flush=True)
            for c in ctx.conns:
                run = measure(f"tools/list p1 ({n}x100)", "triplock", url, LIST_BODY, h, connections=c,
                              seconds=ctx.duration, pid=pid)
                run.extra = {"pages": pages, "tools": tools}
                ctx.add(run)


def _telemetry_wired() -> bool:
    """True when the gateway builds audit/telemetry from [audit]/[telemetry] (the work has landed)."""
    import gateway.app

    src = inspect.getsource(gateway.app)
    return "settings.telemetry" in src or "settings.audit" in src


def scenario_telemetry(ctx: Context) -> None:
    """Telemetry and audit on versus off (skipped with a note until the gateway wires them)."""
    if not _telemetry_wired():
        ctx.notes["telemetry"] = ("skipped: gateway/config.py declares [telemetry] and [audit], but "
                                  "gateway/app.py build_gateway does not wire them yet, so on = off today")
        print("  telemetry/audit: " + ctx.notes["telemetry"], flush=True)
        return
    from load_tests.common import spawn
    from load_tests.harness import free_port, python

    body = call_body("echo", {"q": "hello"})
    sink_port = free_port()
    with spawn([python(), "-m", "load_tests.otlp_sink", str(sink_port)], f"http://127.0.0.1:{sink_port}/",
               ok=(200, 405)):
        on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        variants: list[tuple[str, TriplockSpec, dict[str, str]]] = [
            ("triplock telemetry+audit off", ctx.spec(audit_sinks=(), telemetry_prometheus=False), {}),
            ("triplock telemetry+audit on",
             ctx.spec(audit_sinks=("file",), audit_path=ctx.workdir / "audit.jsonl", telemetry_prometheus=True),
             on_env),
        ]
        for label, spec, env in variants:
            with triplock(spec, ctx.workdir, "tel", env=env) as (url, pid):
                h = session_headers(url, ctx.auth)
                for c in ctx.conns:
                    ctx.add(measure("telemetry on/off", label, url, body, h, connections=c, seconds=ctx.duration,
                                    pid=pid, upstream_pids=(ctx.upstream_pid,)), ("allowed", c))
    ctx.notes["telemetry"] = "on = audit file sink + OTLP/HTTP spans to a local sink + Prometheus; off = none"


def scenario_auth(ctx: Context) -> None:
    """The allowed path with a JWT access token, an API key and no authentication, interleaved.

    The JWT is RS256, signed by the test identity provider (``tests/identity/idp.py``), whose
    JWKS the gateway fetches over loopback; a validated token is cached by its hash until it
    expires, so this measures the cached path every agent's second call takes.
    """
    from tests.identity.idp import FakeIdp

    body = call_body("echo", {"q": "hello"})
    idp = FakeIdp().start()
    try:
        variants = (("triplock auth=jwt", ctx.spec(jwt_issuer=idp.issuer, jwt_jwks_url=idp.jwks_url)),
                    ("triplock auth=api_key", ctx.spec()),
                    ("triplock auth=none", ctx.spec(api_keys_file=None)))
        with contextlib.ExitStack() as stack:
            gateways = []
            for label, spec in variants:
                url, pid = stack.enter_context(triplock(spec, ctx.workdir, "auth"))
                if spec.jwt_issuer:
                    token = idp.token(aud=url, sub="bench-user", client_id="bench-agent", groups=["agents-run"],
                                      lifetime=3600)
                    auth = {"authorization": f"Bearer {token}"}
                else:
                    auth = ctx.auth if spec.api_keys_file else {}
                gateways.append((label, url, pid, session_headers(url, auth)))
            for c in ctx.conns:
                for rep in range(1 if ctx.quick else 2):
                    for label, url, pid, h in gateways:
                        ctx.add(measure("auth" if rep == 0 else "auth (repeat)", label, url, body, h, connections=c,
                                        seconds=ctx.duration, pid=pid, upstream_pids=(ctx.upstream_pid,)),
                                ("allowed", c))
    finally:
        idp.stop()
    ctx.notes["auth_scenario"] = "RS256 JWT from a loopback IdP (cached after the first call) vs API key vs none"


def scenario_store(ctx: Context, redis_url: str) -> None:
    """Embedded store (SQLite, memory) versus Redis on the allowed path, each in a fresh process."""
    body = call_body("echo", {"q": "hello"})
    for label, spec in (("triplock store=sqlite", ctx.spec()),
                        ("triplock store=memory", ctx.spec(store="memory")),
                        ("triplock store=redis", ctx.spec(store="redis", redis_url=redis_url))):
        with triplock(spec, ctx.workdir, "store") as (url, pid):
            h = session_headers(url, ctx.auth)
            for c in ctx.conns:
                ctx.add(measure("store", label, url, body, h, connections=c, seconds=ctx.duration, pid=pid,
                                upstream_pids=(ctx.upstream_pid,)), ("allowed", c))


def scenario_workers(ctx: Context, redis_url: str, redis_pid: int) -> None:
    """One versus two gateway processes sharing Redis, 16 connections in total."""
    body = call_body("echo", {"q": "hello"})
    total = max(ctx.conns)
    up = (ctx.upstream_pid, redis_pid)
    spec = ctx.spec(store="redis", redis_url=redis_url)
    # Two processes on two ports rather than server.workers = 2 on one: the same two gateways
    # sharing Redis, but each process's CPU and throughput can be read separately.
    ctx.notes["workers"] = ("two gateway processes sharing one Redis (what server.workers = 2 runs), on two "
                            "ports, each driven by its own wrk with half the connections; throughput summed")
    with triplock(spec, ctx.workdir, "w1") as (url1, pid1), triplock(spec, ctx.workdir, "w2") as (url2, pid2):
        h1, h2 = session_headers(url1, ctx.auth), session_headers(url2, ctx.auth)
        one = ctx.add(measure("workers (redis)", "triplock x1", url1, body, h1, connections=total,
                              seconds=ctx.duration, pid=pid1, upstream_pids=up), ("allowed", total))
        two = ctx.add(measure_parallel("workers (redis)", "triplock x2", [(url1, h1, pid1), (url2, h2, pid2)], body,
                                       connections=total // 2, seconds=ctx.duration, upstream_pids=up),
                      ("allowed", total))
    ctx.notes["workers_ratio"] = round(two.rps / one.rps, 2) if one.rps else None
    print(f"  two/one = {ctx.notes['workers_ratio']}; with two, per call: gateways {two.cpu_us_per_call:.0f} µs, "
          f"upstream+redis {two.upstream_cpu_us_per_call or 0:.0f} µs, wrk {two.loadgen_cpu_us_per_call or 0:.0f} µs "
          "(2 cores in all)", flush=True)


def scenario_pending(ctx: Context) -> None:
    """The allowed path with 10,000 pending approvals in the store versus an empty store (fresh processes)."""
    import asyncio

    from adapters.stores.sqlite_store import SqliteStore
    from load_tests.bench_store import fill

    count = 1000 if ctx.quick else 10_000
    full = ctx.workdir / "pending.sqlite"

    async def prefill() -> None:
        async with SqliteStore(full) as store:
            await fill(store, count)

    asyncio.run(prefill())
    body = call_body("echo", {"q": "hello"})
    c = max(ctx.conns)
    empty_label, full_label = "triplock 0 pending", f"triplock {count} pending"
    with triplock(ctx.spec(store_path=ctx.workdir / "empty.sqlite"), ctx.workdir, "pend0") as (u0, p0), \
            triplock(ctx.spec(store_path=full), ctx.workdir, "pendN") as (u1, p1):
        h0, h1 = session_headers(u0, ctx.auth), session_headers(u1, ctx.auth)
        for _ in range(1 if ctx.quick else 2):  # interleaved, so drift on the shared machine hits both
            for label, url, h, pid in ((empty_label, u0, h0, p0), (full_label, u1, h1, p1)):
                ctx.add(measure("pending approvals", label, url, body, h, connections=c, seconds=ctx.duration,
                                pid=pid, upstream_pids=(ctx.upstream_pid,)), ("allowed", c))


def scenario_profile(ctx: Context, gw_url: str, gw_pid: int) -> None:
    """py-spy profile of the allowed path under 16 connections, aggregated into stages."""
    from load_tests import profile_stages

    try:
        budget = profile_stages.profile(gw_url, gw_pid, session_headers(gw_url, ctx.auth),
                                        call_body("echo", {"q": "hello"}), seconds=ctx.duration,
                                        connections=max(ctx.conns), out_dir=ctx.workdir)
    except profile_stages.ProfileError as exc:
        ctx.notes["stage_budget"] = f"skipped: {exc}"
        print(f"  profile skipped: {exc}", flush=True)
        return
    ctx.notes["stage_budget"] = budget
    print(profile_stages.format_budget(budget), flush=True)


# --- output ------------------------------------------------------------------------------------

HEAD = (f"{'scenario':<24}{'target':<30}{'conns':>5}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"{'CPU µs/call':>12}{'peak MB':>8}{'x direct':>9}")


def _row(r: Run) -> str:
    ratio = f"{r.ratio_to_direct:.3f}" if r.ratio_to_direct is not None else "-"
    return (f"{r.scenario[:23]:<24}{r.target[:29]:<30}{r.connections:>5}{r.rps:>9.0f}{r.p50_ms:>8.2f}"
            f"{r.p99_ms:>8.2f}{r.errors:>7}{r.cpu_us_per_call:>12.0f}{r.peak_rss_mb:>8.0f}{ratio:>9}")


def summary(ctx: Context) -> dict[str, Any]:
    """The issue's targets, computed from this run's figures."""
    def first(scenario: str, target: str, c: int) -> Run | None:
        return next((r for r in ctx.runs if r.scenario == scenario and r.target == target and r.connections == c),
                    None)

    out: dict[str, Any] = {}
    hi, lo = max(ctx.conns), min(ctx.conns)
    d16, t16 = first("allowed", "direct", hi), first("allowed", "triplock", hi)
    d1, t1 = first("allowed", "direct", lo), first("allowed", "triplock", lo)
    if d16 and t16:
        out["cpu_per_call_vs_upstream"] = round(t16.cpu_us_per_call / d16.cpu_us_per_call, 2)
        out["cpu_per_call_vs_upstream_target"] = "<= 2.0"
        out["throughput_vs_direct_16"] = round(t16.rps / d16.rps, 3)
        out["throughput_vs_direct_16_target"] = ">= 0.35"
        peers_rps = [r.rps for r in ctx.runs if r.scenario == "allowed" and r.connections == hi
                     and r.target in ("fastmcp", "contextforge") and r.rps > 0]
        if peers_rps:
            out["throughput_vs_fastest_peer_16"] = round(t16.rps / max(peers_rps), 1)
            out["throughput_vs_fastest_peer_16_target"] = ">= 15"
    if d1 and t1:
        out["added_p50_ms_1"] = round(t1.p50_ms - d1.p50_ms, 3)
        out["added_p99_ms_1"] = round(t1.p99_ms - d1.p99_ms, 3)
        out["added_latency_target"] = "p50 <= 0.5 ms, p99 <= 2 ms"
    if "workers_ratio" in ctx.notes:
        out["two_workers_vs_one"] = ctx.notes["workers_ratio"]
        out["two_workers_target"] = ">= 1.6 (when the machine has the cores)"
    if isinstance(ctx.notes.get("sessions"), dict):
        out["rss_at_idle_sessions_mb"] = ctx.notes["sessions"]["rss_after_mb"]
        out["rss_at_idle_sessions_target"] = "<= 200 MB at 1,000"
    p0 = [r.rps for r in ctx.runs if r.scenario == "pending approvals" and r.target == "triplock 0 pending"]
    pn = [r.rps for r in ctx.runs if r.scenario == "pending approvals" and r.target != "triplock 0 pending"]
    if p0 and pn:
        out["allowed_rps_with_pending_vs_empty"] = round(sum(pn) / sum(p0), 3)
        out["allowed_rps_with_pending_target"] = "not measurably slower (~1.0 within noise)"
    return out


def write_results(ctx: Context, started: float, path: Path | None) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = path or RESULTS / f"compare-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_description(),
        "platform": platform.platform(), "duration_s": ctx.duration, "connections": list(ctx.conns),
        "wall_seconds": round(time.monotonic() - started, 1), "runs": [asdict(r) for r in ctx.runs],
        "notes": ctx.notes, "targets": summary(ctx),
    }
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


# --- main --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _base(workdir: Path) -> Iterator[tuple[str, int, str]]:
    """The shared lean upstream: (url, pid, name of the tool that gets held)."""
    with lean_upstreams(1, 3) as ups:
        url, pid = ups[0]
        names = upstream_tools(url)
        yield url, pid, "hold_me" if "hold_me" in names else "tool_0000"


def run(args: argparse.Namespace) -> Path:
    started = time.monotonic()
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = only - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    if not args.quick and not args.no_peers and "allowed" in only:
        print("peers:", peers.setup(list(peers.PACKAGES)), flush=True)
    with tempfile.TemporaryDirectory(prefix="triplock-compare-") as tmp:
        workdir = Path(tmp)
        key = api_key(workdir / "keys.json")
        with _base(workdir) as (up_url, up_pid, hold_tool):
            ctx = Context(duration=args.duration, conns=tuple(int(c) for c in args.connections.split(",")),
                          quick=args.quick, with_peers=not (args.quick or args.no_peers), workdir=workdir,
                          upstream_url=up_url, upstream_pid=up_pid, hold_tool=hold_tool, key=key)
            ctx.notes["auth"] = "Triplock: API key (auth.mode api_key); ContextForge: its JWT; FastMCP: none"
            print(f"{machine_description()}; {ctx.duration:.0f}s per run\n{HEAD}\n{'-' * len(HEAD)}", flush=True)
            steps: list[tuple[str, Callable[[], None]]] = []
            with triplock(ctx.spec(), workdir, "main") as (gw_url, gw_pid):
                if "allowed" in only:
                    scenario_allowed(ctx, gw_url, gw_pid)
                if "held" in only:
                    scenario_held(ctx, gw_url, gw_pid)
                if "sessions" in only:
                    scenario_sessions(ctx, gw_url, gw_pid)
                if "profile" in only and not args.quick:
                    scenario_profile(ctx, gw_url, gw_pid)
            if "blob" in only:
                steps.append(("blob", lambda: scenario_blob(ctx)))
            if "tools_list" in only:
                steps.append(("tools_list", lambda: scenario_tools_list(ctx)))
            if "telemetry" in only:
                steps.append(("telemetry", lambda: scenario_telemetry(ctx)))
            if "auth" in only:
                steps.append(("auth", lambda: scenario_auth(ctx)))
            if "pending" in only:
                steps.append(("pending", lambda: scenario_pending(ctx)))
            for name, step in steps:
                try:
                    step()
                except Exception as exc:
                    ctx.notes[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
                    print(f"  {name} failed: {exc}", flush=True)
            if only & {"store", "workers"}:
                with redis_server() as (redis_url, redis_pid):
                    if "store" in only:
                        scenario_store(ctx, redis_url)
                    if "workers" in only:
                        scenario_workers(ctx, redis_url, redis_pid)
            out = write_results(ctx, started, args.json)
    print("\ntargets (this run):")
    for k, v in summary(ctx).items():
        print(f"  {k}: {v}")
    print(f"\nwrote {out} ({time.monotonic() - started:.0f}s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (max 30; default 10)")
    parser.add_argument("--connections", default="1,16", help="concurrency levels (default 1,16)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, no peers, smaller fan-out: a smoke")
    parser.add_argument("--no-peers", action="store_true", help="skip FastMCP and ContextForge")
    parser.add_argument("--setup", action="store_true", help="only install the peers, then exit")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON here instead of results/")
    args = parser.parse_args(argv)
    if args.setup:
        status = peers.setup(list(peers.PACKAGES), force=False)
        print(json.dumps(status, indent=2))
        return 0 if all(not v.startswith("error") for v in status.values()) else 1
    if args.quick:
        args.duration = min(args.duration, 2.0)
    args.duration = max(1.0, min(args.duration, 30.0))  # load stays bounded in time
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
