"""Building blocks of the comparison: process trees, measured wrk runs, Triplock configs, sessions.

Everything runs on 127.0.0.1. CPU is accounted per *process tree* (a target that forks workers
is charged for all of them) and the load generator's own CPU is the wrk child's rusage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from load_tests.harness import (
    CLK_TCK,
    MCP_HEADERS,
    REPO,
    UNLIMITED,
    free_port,
    open_session,
    python,
    run_wrk,
    wait_ready,
)

POLICY = Path(__file__).resolve().parent / "policies" / "compare.yaml"
PROTOCOL = "2025-11-25"


# --- processes ---------------------------------------------------------------------------------

def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _stat_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(root: int) -> float:
    """User + system CPU seconds of a process tree (live members only)."""
    total = 0.0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            total += _stat_cpu(pid)
    return total


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def tree_rss_mb(root: int, *, peak: bool = False) -> float:
    """Resident set size (or peak, VmHWM) of a process tree in MiB, summed over its members."""
    key = "VmHWM:" if peak else "VmRSS:"
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            total += _status_kb(pid, key)
    return total / 1024


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (wrk runs), for load-generator accounting."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@contextlib.contextmanager
def spawn(cmd: list[str], ready_url: str | None = None, *, ok: tuple[int, ...] = (200,),
          env: dict[str, str] | None = None, cwd: Path = REPO,
          deadline: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process group on loopback, wait until ``ready_url`` answers, stop it afterwards."""
    with spawn_many([cmd], [ready_url], ok=ok, env=env, cwd=cwd, deadline=deadline) as procs:
        yield procs[0]


@contextlib.contextmanager
def spawn_many(cmds: list[list[str]], ready_urls: list[str | None], *, ok: tuple[int, ...] = (200,),
               env: dict[str, str] | None = None, cwd: Path = REPO,
               deadline: float = 60.0) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start several processes at once (in parallel), then wait for each to be ready."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in cmds:
            procs.append(subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env={**os.environ, **UNLIMITED, **(env or {})},
                                          start_new_session=True))
        for proc, url in zip(procs, ready_urls, strict=True):
            if url:
                wait_ready(url, proc, deadline=deadline, ok=ok)
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """A throw-away redis-server on a free loopback port, persistence off: yields (url, pid)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with spawn(cmd, None) as proc:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid


# --- MCP helpers -------------------------------------------------------------------------------

def call_body(tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments or {}}}


LIST_BODY: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


def session_headers(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Open an MCP session on ``url`` and return the headers every later request carries."""
    sid = open_session(url, extra)
    h = {**MCP_HEADERS, "mcp-protocol-version": PROTOCOL, **(extra or {})}
    if sid:
        h["mcp-session-id"] = sid
    return h


def parse_reply(r: httpx.Response) -> dict[str, Any]:
    """A JSON-RPC reply from a JSON or an SSE response body."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if isinstance(msg, dict) and "id" in msg:
                    return msg
        raise ValueError("no JSON-RPC reply in the event stream")
    return dict(r.json())


def check_call(url: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    """Send ``body`` once and describe the answer (so a run of fast errors cannot pass as a result)."""
    r = httpx.post(url, headers=headers, json=body, timeout=60)
    if r.status_code >= 300:
        return f"HTTP {r.status_code}: {r.text[:160]}"
    msg = parse_reply(r)
    if "error" in msg:
        return f"JSON-RPC error: {json.dumps(msg['error'])[:160]}"
    result = msg.get("result") or {}
    if "tools" in result:
        return f"ok: {len(result['tools'])} tools, nextCursor={'yes' if result.get('nextCursor') else 'no'}"
    text = ""
    for c in result.get("content") or []:
        if isinstance(c, dict) and c.get("type") == "text":
            text = str(c.get("text", ""))
            break
    flag = "isError" if result.get("isError") else "ok"
    return f"{flag}: {len(text)} chars: {text[:100]}"


# --- measured runs -----------------------------------------------------------------------------

@dataclass
class Run:
    """One wrk run against one target, with the CPU every process on the machine's path took."""

    scenario: str
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    seconds: float
    cpu_us_per_call: float
    peak_rss_mb: float
    rss_before_mb: float
    upstream_cpu_us_per_call: float | None = None
    loadgen_cpu_us_per_call: float | None = None
    check: str = ""
    ratio_to_direct: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def measure(scenario: str, target: str, url: str, body: dict[str, Any], headers: dict[str, str], *,
            connections: int, seconds: float, pid: int, upstream_pids: tuple[int, ...] = ()) -> Run:
    """Drive ``url`` with wrk and charge the target's process tree, the upstream and wrk separately."""
    check = check_call(url, body, headers)
    rss0 = tree_rss_mb(pid)
    cpu0, up0, gen0 = tree_cpu(pid), sum(tree_cpu(p) for p in upstream_pids), children_cpu()
    res = run_wrk(url, body, headers, connections=connections, seconds=seconds, target_pid=pid)
    cpu1, up1, gen1 = tree_cpu(pid), sum(tree_cpu(p) for p in upstream_pids), children_cpu()
    n = max(1, res.requests)
    return Run(
        scenario=scenario, target=target, connections=connections, rps=res.rps, p50_ms=res.p50_ms,
        p99_ms=res.p99_ms, errors=res.errors, requests=res.requests, seconds=res.seconds,
        cpu_us_per_call=(cpu1 - cpu0) * 1e6 / n, peak_rss_mb=tree_rss_mb(pid, peak=True), rss_before_mb=rss0,
        upstream_cpu_us_per_call=(up1 - up0) * 1e6 / n if upstream_pids else None,
        loadgen_cpu_us_per_call=(gen1 - gen0) * 1e6 / n, check=check,
    )


def measure_parallel(scenario: str, target: str, legs: list[tuple[str, dict[str, str], int]], body: dict[str, Any],
                     *, connections: int, seconds: float, upstream_pids: tuple[int, ...] = ()) -> Run:
    """Several gateway processes driven at once by one wrk each (``legs``: url, headers, pid); sums."""
    checks = [check_call(u, body, h) for u, h, _ in legs]
    pids = [p for _, _, p in legs]
    cpu0, up0, gen0 = sum(map(tree_cpu, pids)), sum(map(tree_cpu, upstream_pids)), children_cpu()
    with ThreadPoolExecutor(len(legs)) as pool:
        futures = [pool.submit(run_wrk, u, body, h, connections=connections, seconds=seconds, target_pid=p)
                   for u, h, p in legs]
        results = [f.result() for f in futures]
    cpu1, up1, gen1 = sum(map(tree_cpu, pids)), sum(map(tree_cpu, upstream_pids)), children_cpu()
    n = max(1, sum(r.requests for r in results))
    return Run(
        scenario=scenario, target=target, connections=connections * len(legs),
        rps=sum(r.rps for r in results), p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results), errors=sum(r.errors for r in results), requests=n,
        seconds=max(r.seconds for r in results), cpu_us_per_call=(cpu1 - cpu0) * 1e6 / n,
        peak_rss_mb=sum(tree_rss_mb(p, peak=True) for p in pids), rss_before_mb=0.0,
        upstream_cpu_us_per_call=(up1 - up0) * 1e6 / n if upstream_pids else None,
        loadgen_cpu_us_per_call=(gen1 - gen0) * 1e6 / n, check="; ".join(checks),
        extra={"per_process_rps": [r.rps for r in results]},
    )


# --- Triplock ----------------------------------------------------------------------------------

@dataclass
class TriplockSpec:
    """What one Triplock process is configured with (rendered to TOML by :func:`triplock_toml`)."""

    upstreams: list[tuple[str, str]]  # (name, url); prefix "" when there is only one
    store: str = "sqlite"
    store_path: Path | None = None
    redis_url: str | None = None
    api_keys_file: Path | None = None
    jwt_issuer: str | None = None  # set: auth.mode "jwt" against this issuer's JWKS (API keys still accepted)
    jwt_jwks_url: str | None = None
    hold_wait: float = 0.0
    audit_sinks: tuple[str, ...] | None = None  # None = the gateway's default (file, in the workdir); () = off
    audit_path: Path | None = None
    telemetry_prometheus: bool | None = None
    policy: Path = POLICY


def triplock_toml(spec: TriplockSpec, port: int) -> str:
    """A Triplock config for one benchmark process (only keys the gateway's config declares)."""
    single = len(spec.upstreams) == 1
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}", 'log_level = "warning"', ""]
    for name, url in spec.upstreams:
        lines += ["[[upstreams]]", f'name = "{name}"', *(['prefix = ""'] if single else []),
                  'transport = "http"', f'url = "{url}"', ""]
    lines += ["[policy]", f'file = "{spec.policy}"', "", "[store]", f'kind = "{spec.store}"']
    if spec.store_path:
        lines.append(f'path = "{spec.store_path}"')
    if spec.redis_url:
        lines.append(f'redis_url = "{spec.redis_url}"')
    lines += ["", "[approvals]", f"hold_wait = {spec.hold_wait}", ""]
    if spec.jwt_issuer:
        lines += ["[auth]", 'mode = "jwt"', f'issuer = "{spec.jwt_issuer}"', f'jwks_url = "{spec.jwt_jwks_url}"',
                  f'resource = "{mcp_url(port)}"',  # the token audience
                  *([f'api_keys_file = "{spec.api_keys_file}"'] if spec.api_keys_file else []), ""]
    elif spec.api_keys_file:
        lines += ["[auth]", 'mode = "api_key"', f'api_keys_file = "{spec.api_keys_file}"', ""]
    if spec.audit_sinks is not None:
        sinks = ", ".join(f'"{s}"' for s in spec.audit_sinks)
        lines += ["[audit]", f"sinks = [{sinks}]"]
        if spec.audit_path:
            lines.append(f'path = "{spec.audit_path}"')
        lines.append("")
    if spec.telemetry_prometheus is not None:
        lines += ["[telemetry]", f"prometheus = {'true' if spec.telemetry_prometheus else 'false'}", ""]
    return "\n".join(lines)


def mcp_url(port: int) -> str:
    """A benchmark gateway's MCP endpoint, which is also its canonical URL (a JWT's audience)."""
    return f"http://127.0.0.1:{port}/mcp"


def fanout_policy(path: Path, names: list[str]) -> Path:
    """The compare policy plus one entry per fan-out upstream (an upstream the policy does not
    name is not published at all), its tools left to the defaults."""
    text = POLICY.read_text().rstrip("\n") + "\n"
    for name in names:
        text += f"  {name}:\n    action_control: allow_all\n    new_actions_default: hold\n"
    path.write_text(text)
    return path


def api_key(path: Path) -> str:
    """Create a Triplock API key for the benchmark agent (group agents-run may call every tool)."""
    from gateway.identity.api_keys import KeyStore

    token, _ = KeyStore(path).create("bench-user", ("agents-run",), "bench-agent", "benchmark")
    return token


@contextlib.contextmanager
def triplock(spec: TriplockSpec, workdir: Path, tag: str = "gw",
             env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """Start one Triplock process; yields (MCP URL, pid)."""
    port = free_port()
    cfg = workdir / f"{tag}-{port}.toml"
    cfg.write_text(triplock_toml(spec, port))
    cmd = [python(), "-m", "gateway.cli", "serve", "--config", str(cfg)]
    with spawn(cmd, f"http://127.0.0.1:{port}/readyz", env=env, cwd=workdir) as proc:
        yield mcp_url(port), proc.pid


def lean_cmd(port: int, tools: int = 3) -> list[str]:
    return [python(), "-m", "load_tests.lean_upstream", str(port), "--tools", str(tools)]


@contextlib.contextmanager
def lean_upstreams(count: int, tools: int) -> Iterator[list[tuple[str, int]]]:
    """``count`` lean upstream processes, started in parallel; yields [(url, pid)]."""
    ports = [free_port() for _ in range(count)]
    urls = [f"http://127.0.0.1:{p}/mcp" for p in ports]
    with spawn_many([lean_cmd(p, tools) for p in ports], urls, ok=(405,), deadline=120) as procs:
        yield [(u, p.pid) for u, p in zip(urls, procs, strict=True)]


# --- sessions ----------------------------------------------------------------------------------

async def _open_sessions(url: str, auth: dict[str, str], body: dict[str, Any], count: int,
                         parallel: int) -> list[str]:
    """Open ``count`` MCP sessions (initialize, initialized, one tools/call each); returns their ids."""
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    sem = asyncio.Semaphore(parallel)
    client_info = {"name": "bench", "version": "1"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": client_info}}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one() -> str:
            async with sem:
                r = await client.post(url, headers={**MCP_HEADERS, **auth}, json=init)
                r.raise_for_status()
                sid = r.headers.get("mcp-session-id", "")
                h = {**MCP_HEADERS, **auth, "mcp-protocol-version": PROTOCOL, "mcp-session-id": sid}
                await client.post(url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
                r = await client.post(url, headers=h, json=body)
                r.raise_for_status()
                return sid

        return list(await asyncio.gather(*(one() for _ in range(count))))


def open_sessions(url: str, auth: dict[str, str], body: dict[str, Any], count: int, parallel: int = 32) -> list[str]:
    return asyncio.run(_open_sessions(url, auth, body, count, parallel))


def tools_pages(url: str, headers: dict[str, str]) -> tuple[int, int]:
    """Walk tools/list by cursor: (pages, tools)."""
    pages = tools = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"cursor": cursor} if cursor else {}
        r = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params},
                       timeout=60)
        result = parse_reply(r).get("result") or {}
        pages += 1
        tools += len(result.get("tools") or [])
        cursor = result.get("nextCursor")
        if not cursor or pages > 1000:
            return pages, tools


def upstream_tools(url: str) -> list[str]:
    """Tool names a (lean) upstream lists."""
    h = session_headers(url)
    return [t["name"] for t in parse_reply(httpx.post(url, headers=h, json=LIST_BODY, timeout=30))["result"]["tools"]]
