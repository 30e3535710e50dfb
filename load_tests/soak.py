"""Soak: bounded mixed traffic against a real gateway, and a verdict on whether it stays flat.

One lean upstream (``lean_upstream.py``), one Triplock (API-key auth, SQLite or Redis store,
audit file, /metrics, ``hold_wait = 0``) and, for ``--duration`` seconds (capped at 2 h):

- **wrk with a Lua script** (one thread, ``--connections`` connections, paced by wrk's
  ``delay()`` hook) sends a fixed shuffled mix on one long-lived MCP session: allowed calls
  (``echo``), held calls (``tool_0000``, answered "pending approval" at once: the identical repeat
  finds the same pending approval), denied calls (``tool_0001``, a deny rule) and 1 MiB results
  (``blob``);
- **asyncio + httpx** opens and closes new sessions alongside (``initialize``, ``initialized``,
  one allowed call, ``DELETE``), ``--sessions-per-second`` of them;
- every ``--sample-every`` seconds it samples the gateway's RSS, its open file descriptors
  (``/proc/PID/fd``) and the store's key count (rows of every SQLite table, or Redis ``DBSIZE``).

The rate is ``--rate`` requests/s, or half the capacity measured first with a short wrk run of
allowed calls (the gateway's allowed-call throughput at ``--connections``).

**Flat** means, over the samples after warm-up (the first fifth of the run, at least two
samples) split in thirds: the median of the last third is within ``max(8 MB, 10 %)`` of the first
third's for RSS, within ``max(20 keys, 10 %)`` for the store, and the largest fd count of the last
third is within 8 of the first third's. Why these: Python's allocator keeps freed arenas and a
1 MiB result in flight costs a few MB, so RSS moves by several MB between samples without any
leak, and medians of thirds ignore such spikes; the store holds a few rows per open session, and
sessions are opened and closed continuously, so its count moves by a handful; file descriptors
are the listening and connected sockets, the store and the audit file, so they move only with
connections being opened. A leak proportional to traffic (even 1 KB per call at ~1,000 calls/s)
or to sessions (a row per closed session) passes these bounds within a minute or two. The run
also fails on any wrk error (socket error, timeout, non-2xx), any failed session cycle, or a
mix answer that is not what the policy says (checked before and after the run).

    python -m load_tests.soak --duration 60
    python -m load_tests.soak --duration 3600 --rate 800 --store redis --json soak.json
    python -m load_tests.soak --duration 30 --ci     # CI: short capacity probe, exit 1 unless flat
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from load_tests.common import (
    POLICY,
    PROTOCOL,
    TriplockSpec,
    api_key,
    call_body,
    check_call,
    lean_upstreams,
    redis_server,
    session_headers,
    triplock,
)
from load_tests.harness import MCP_HEADERS, machine_description, run_wrk
from load_tests.soak_checks import Sample, key_total, open_fds, redis_keys, rss_mb, sqlite_keys, verdict

MAX_DURATION = 7200.0
BIG_BYTES = 1024 * 1024
# Per 100 requests of the wrk mix.
MIX = {"allowed": 85, "held": 7, "denied": 7, "big": 1}
BODIES: dict[str, dict[str, Any]] = {
    "allowed": call_body("echo", {"q": "soak"}),
    "held": call_body("tool_0000", {"to": "someone@outside.example", "body": "soak"}),
    "denied": call_body("tool_0001", {}),
    "big": call_body("blob", {"size": BIG_BYTES}),
}
# What each kind's answer must start with (``check_call``'s description of it).
EXPECTED = {"allowed": "ok: 2 chars: ok", "held": "isError:", "denied": "isError: 44 chars: Denied by policy",
            "big": f"ok: {BIG_BYTES} chars"}

_LUA = """
wrk.method = "POST"
{headers}
local bodies = {{{bodies}}}
local order = {{{order}}}
local reqs = {{}}
local n = 0
init = function(args)
  for i, b in ipairs(bodies) do reqs[i] = wrk.format("POST", nil, nil, b) end
end
request = function()
  n = n + 1
  return reqs[order[(n % #order) + 1]]
end
delay = function() return {delay_ms} end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def mix_order(seed: int = 15) -> list[int]:
    """The 100-request cycle wrk repeats: indices (1-based, Lua) into the bodies, shuffled once."""
    order = [i for i, kind in enumerate(MIX, start=1) for _ in range(MIX[kind])]
    random.Random(seed).shuffle(order)
    return order


def lua_script(headers: dict[str, str], delay_ms: int) -> str:
    """wrk's script: the mix on one session, each connection pausing ``delay_ms`` between requests."""
    return _LUA.format(
        headers="\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()),
        bodies=", ".join(_lua_string(json.dumps(BODIES[k])) for k in MIX),
        order=", ".join(map(str, mix_order())),
        delay_ms=max(0, delay_ms),
    )


def soak_policy(path: Path) -> Path:
    """The compare policy plus a deny rule for ``tool_0001`` (so the mix has denied calls)."""
    text = POLICY.read_text().rstrip("\n") + "\n"
    text += "rules:\n  - {id: soak-deny, action: deny, tools: [tool_0001]}\n"
    path.write_text(text)
    return path


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Churn:
    """Sessions opened, used and closed alongside the mix."""

    closed: int = 0
    failures: list[str] = field(default_factory=list)


async def churn_sessions(url: str, auth: dict[str, str], per_second: float, stop: asyncio.Event, churn: Churn) -> None:
    """Open a session, make one allowed call, DELETE it; ``per_second`` times a second until ``stop``."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}}
    loop = asyncio.get_running_loop()
    start, n = loop.time(), 0
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            n += 1
            try:
                r = await client.post(url, headers={**MCP_HEADERS, **auth}, json=init)
                sid = r.headers.get("mcp-session-id", "")
                h = {**MCP_HEADERS, **auth, "mcp-protocol-version": PROTOCOL, "mcp-session-id": sid}
                await client.post(url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
                call = await client.post(url, headers=h, json=BODIES["allowed"])
                gone = await client.delete(url, headers=h)
                if r.status_code != 200 or not sid or call.status_code != 200 or gone.status_code >= 300:
                    churn.failures.append(f"init {r.status_code}, call {call.status_code}, delete {gone.status_code}")
                else:
                    churn.closed += 1
            except httpx.HTTPError as exc:
                churn.failures.append(f"{type(exc).__name__}: {exc}")
            # on a schedule (start + n / per_second), so a slow cycle does not lower the rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, start + n / per_second - loop.time()))


async def drive(url: str, headers: dict[str, str], auth: dict[str, str], *, pid: int, keys: Any, duration: float,
                connections: int, delay_ms: int, sample_every: float, sessions_per_second: float,
                workdir: Path) -> tuple[dict[str, Any], list[Sample], Churn]:
    """Run wrk's mix for ``duration`` with session churn beside it, sampling the gateway as it goes."""
    lua = workdir / "soak.lua"
    lua.write_text(lua_script(headers, delay_ms))
    stop, churn, samples = asyncio.Event(), Churn(), []
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, int(duration))}s", "--timeout", "10s", "-s", str(lua), url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    t0 = time.monotonic()
    churner = asyncio.create_task(churn_sessions(url, auth, sessions_per_second, stop, churn))
    wait_wrk = asyncio.create_task(proc.communicate())
    try:
        while not wait_wrk.done():
            counts = await asyncio.to_thread(keys)
            samples.append(Sample(round(time.monotonic() - t0, 1), rss_mb(pid), open_fds(pid), key_total(counts),
                                  churn.closed, counts))
            print(_row(samples[-1]), flush=True)
            await asyncio.wait([wait_wrk], timeout=sample_every)
    finally:
        stop.set()
        await churner
        if not wait_wrk.done():
            proc.kill()
    out, err = await wait_wrk
    line = next((x for x in out.decode().splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {err.decode()[:300]}")
    return json.loads(line.removeprefix("WRKJSON ")), samples, churn


def _row(s: Sample) -> str:
    return f"{s.t:>8.1f} {s.rss_mb:>9.1f} {s.fds:>6} {s.keys:>7} {s.sessions_closed:>9}"


HEADER = f"{'t s':>8} {'RSS MB':>9} {'fds':>6} {'keys':>7} {'sessions':>9}"


def pace(url: str, headers: dict[str, str], connections: int, rate: float, workdir: Path, pid: int) -> int:
    """The per-connection delay (ms) that gives about ``rate`` req/s: a 2 s paced run measures
    how long a request itself takes, and the delay is what is left of the wanted cycle."""
    cycle_ms = connections * 1000 / rate
    delay = round(cycle_ms)
    lua = workdir / "pace.lua"
    lua.write_text(lua_script(headers, delay))
    import subprocess

    out = subprocess.run(["wrk", "-t1", f"-c{connections}", "-d2s", "--timeout", "10s", "-s", str(lua), url],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    data = json.loads(next(x for x in out.splitlines() if x.startswith("WRKJSON ")).removeprefix("WRKJSON "))
    measured = data["requests"] / (data["duration_us"] / 1e6)
    latency_ms = max(0.0, connections * 1000 / measured - delay) if measured else 0.0
    return max(0, round(cycle_ms - latency_ms))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the upstream and the gateway, measure or take the rate, soak, and judge."""
    duration = min(args.duration, MAX_DURATION)
    result: dict[str, Any] = {"machine": machine_description(), "duration_s": duration, "store": args.store,
                              "connections": args.connections, "mix_per_100": MIX}
    with tempfile.TemporaryDirectory(prefix="triplock-soak-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        store_path = work / "state.sqlite"
        redis_url = stack.enter_context(redis_server())[0] if args.store == "redis" else None
        (up_url, _up_pid), = stack.enter_context(lean_upstreams(1, tools=4))
        spec = TriplockSpec(upstreams=[("lean", up_url)], store=args.store,
                            store_path=store_path if args.store == "sqlite" else None, redis_url=redis_url,
                            api_keys_file=work / "keys.json", hold_wait=0.0, audit_path=work / "audit.jsonl",
                            audit_sinks=("file",), policy=soak_policy(work / "soak.yaml"))
        auth = {"authorization": f"Bearer {api_key(work / 'keys.json')}"}
        url, pid = stack.enter_context(triplock(spec, work, "soak"))  # limits off: harness.UNLIMITED
        headers = session_headers(url, auth)
        checks_before = {k: check_call(url, body, headers) for k, body in BODIES.items()}
        if args.rate:
            rate = float(args.rate)
        else:
            probe = run_wrk(url, BODIES["allowed"], headers, connections=args.connections,
                            seconds=2 if args.ci else 5, target_pid=pid)
            result["capacity_rps"] = round(probe.rps)
            rate = probe.rps / 2
        delay_ms = pace(url, headers, args.connections, rate, work, pid)
        result.update(target_rps=round(rate), delay_ms=delay_ms)
        print(f"{result['machine']}; store {args.store}; target {rate:.0f} req/s"
              f"{' (half of ' + str(result['capacity_rps']) + ' measured)' if 'capacity_rps' in result else ''}; "
              f"{args.connections} connections, {delay_ms} ms between requests; {duration:.0f} s; "
              f"{args.sessions_per_second}/s sessions opened and closed", flush=True)
        print(HEADER, flush=True)
        keys = (lambda: sqlite_keys(store_path)) if args.store == "sqlite" else (lambda: redis_keys(str(redis_url)))
        wrk, samples, churn = asyncio.run(drive(
            url, headers, auth, pid=pid, keys=keys, duration=duration, connections=args.connections,
            delay_ms=delay_ms, sample_every=args.sample_every, sessions_per_second=args.sessions_per_second,
            workdir=work))
        checks_after = {k: check_call(url, body, headers) for k, body in BODIES.items()}
    seconds = wrk["duration_us"] / 1e6
    result.update(requests=wrk["requests"], achieved_rps=round(wrk["requests"] / seconds) if seconds else 0,
                  p50_ms=wrk["p50_us"] / 1000, p99_ms=wrk["p99_us"] / 1000, wrk_errors=wrk["errors"],
                  sessions_closed=churn.closed, session_failures=churn.failures[:5],
                  checks={"before": checks_before, "after": checks_after},
                  samples=[asdict(s) for s in samples])
    v = verdict(samples, duration)
    wrong = [f"{k} ({when}): {c!r}" for when, cs in (("before", checks_before), ("after", checks_after))
             for k, c in cs.items() if not c.startswith(EXPECTED[k])]
    if wrong:
        v.flat = False
        v.reasons.append("unexpected answers: " + "; ".join(wrong))
    if wrk["errors"]:
        v.flat = False
        v.reasons.append(f"{wrk['errors']} wrk errors")
    if churn.failures:
        v.flat = False
        v.reasons.append(f"{len(churn.failures)} failed session cycles, e.g. {churn.failures[0]}")
    result["verdict"] = {"pass": v.flat, "reasons": v.reasons, "lines": v.lines}
    return result


def report(result: dict[str, Any]) -> None:
    print(f"\n{result['requests']} requests in {result['duration_s']:.0f} s: {result['achieved_rps']} req/s "
          f"(target {result['target_rps']}), p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
          f"{result['wrk_errors']} errors; {result['sessions_closed']} sessions opened and closed")
    for kind, answer in result["checks"]["after"].items():
        print(f"  {kind:<8} {re.sub(r'[0-9a-f]{16,}', '…', answer)[:110]}")
    samples = result["samples"]
    if samples:
        first, last = samples[0]["by_table"], samples[-1]["by_table"]
        print("  store keys, first -> last sample: " + ", ".join(
            f"{k} {first.get(k, 0)} -> {last.get(k, 0)}" for k in sorted(set(first) | set(last))))
    for line in result["verdict"]["lines"]:
        print("  " + line)
    status = "FLAT" if result["verdict"]["pass"] else "NOT FLAT: " + "; ".join(result["verdict"]["reasons"])
    print(f"verdict: {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0,
                        help=f"seconds of mixed traffic (max {MAX_DURATION:.0f})")
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: half the measured capacity)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--sample-every", type=float, default=None, help="seconds between samples (default 5; CI 3)")
    parser.add_argument("--sessions-per-second", type=float, default=2.0, help="sessions opened and closed per second")
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--ci", action="store_true", help="short capacity probe, samples every 3 s")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures and samples here")
    args = parser.parse_args(argv)
    if args.sample_every is None:
        args.sample_every = 3.0 if args.ci else 5.0
    if args.duration <= 0 or args.connections < 1 or args.sessions_per_second <= 0 or args.sample_every <= 0:
        parser.error("--duration, --connections, --sessions-per-second and --sample-every must be positive")
    result = run(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["verdict"]["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
