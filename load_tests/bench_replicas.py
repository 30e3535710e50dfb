"""Throughput with 1, 2 and 3 Triplock replicas behind HAProxy on one redis-server, with every process's CPU.

Each replica is a `triplock serve` process (one worker) on the Redis store, in front of the lean
upstream; HAProxy balances by `leastconn` and sticks on `Mcp-Session-Id` as
deploy/compose/haproxy.cfg does. The agents are ``--sessions`` MCP sessions opened through
HAProxy (so they spread over the replicas), one wrk thread each driving allowed ``tools/call``
on its session for ``--seconds``. Every process's CPU over the run is reported as a percentage
of one core: on a 2-core machine the replicas, HAProxy, Redis, the upstream and wrk share two
cores, so throughput cannot grow past that bound whatever the number of replicas.

Run: ``python -m load_tests.bench_replicas --seconds 5``. Bounded: three wrk runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from load_tests.common import (
    TriplockSpec,
    children_cpu,
    lean_upstreams,
    open_session,
    redis_server,
    spawn,
    spawn_many,
    tree_cpu,
    triplock_toml,
)
from load_tests.harness import MCP_HEADERS, _lua_string, free_port, machine_description, python

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
PROTOCOL = "2025-11-25"

HAPROXY_CFG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 65s
    timeout server 65s
    option redispatch
frontend mcp
    bind 127.0.0.1:{port}
    default_backend triplock
backend triplock
    balance leastconn
    stick-table type string len 128 size 1m expire 2h
    stick on req.hdr(mcp-session-id)
    stick store-response res.hdr(mcp-session-id)
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1:{port}
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 1
{servers}
"""

# One session per wrk thread (each thread's Lua state picks its own in setup()), and a JSON-RPC id
# per request, unique in its session: the gateway refuses a second request with the id of one
# still in flight in the same session.
LUA = """
local sids = {{{sids}}}
local n = 0
local threads = {{}}
function setup(thread)
  n = n + 1
  thread:set("sid", sids[(n - 1) % #sids + 1])
  thread:set("tid", n)
  table.insert(threads, thread)
end
local counter = 0
rpc_errors = 0  -- answers that are JSON-RPC errors or tool errors (HTTP 200, so wrk counts them as fine)
function response(status, headers, body)
  if string.find(body, '"error":', 1, true) or string.find(body, '"isError":true', 1, true) then
    rpc_errors = rpc_errors + 1
  end
end
function init(args)
  wrk.headers["mcp-session-id"] = sid
end
function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, {prefix} .. string.format("%d", tid * 1000000000 + counter) .. {suffix})
end
wrk.method = "POST"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  local rpc = 0
  for _, t in ipairs(threads) do rpc = rpc + (t:get("rpc_errors") or 0) end
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"errors":%d,"rpc_errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout, rpc,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_calls(url: str, sids: list[str], tool: str, arguments: dict[str, Any], *, threads: int, connections: int,
              seconds: float, work: Path) -> dict[str, Any]:
    """Drive ``tools/call`` of ``tool`` with wrk: thread i on session ``sids[i % len]``; returns wrk's summary."""
    headers = {**MCP_HEADERS, "mcp-protocol-version": PROTOCOL}
    params = json.dumps({"name": tool, "arguments": arguments}, separators=(",", ":"))
    script = LUA.format(sids=", ".join(_lua_string(s) for s in sids),
                        prefix=_lua_string('{"jsonrpc":"2.0","id":'),
                        suffix=_lua_string(',"method":"tools/call","params":' + params + "}"),
                        headers="\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}"
                                          for k, v in headers.items()))
    lua = work / f"wrk-{os.getpid()}-{time.monotonic_ns()}.lua"
    lua.write_text(script)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(seconds))}s",
                          "--timeout", "10s", "-s", str(lua), url],
                         capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    lua.unlink()
    return dict(json.loads(next(x for x in out.splitlines() if x.startswith("WRKJSON ")).removeprefix("WRKJSON ")))


def admin(sock: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def all_up(sock: Path, n: int, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            rows = [line.split(",") for line in admin(sock, "show stat").splitlines() if line.startswith("triplock,r")]
            if len(rows) == n and all(r[17] == "UP" for r in rows):
                return
        time.sleep(0.05)  # polling HAProxy's view of the health checks
    raise TimeoutError("HAProxy did not see every replica up")


def sessions_per_replica(sock: Path, n: int) -> list[int]:
    counts = [0] * n
    for line in admin(sock, "show table triplock").splitlines():
        if "server_key=r" in line:
            counts[int(line.split("server_key=r", 1)[1].split()[0])] += 1
    return counts


@contextlib.contextmanager
def replicas(n: int, work: Path, redis_url: str, upstream: str) -> Iterator[tuple[str, Path, list[int], int]]:
    """``n`` replicas and HAProxy; yields (MCP URL through HAProxy, stats socket, replica pids, HAProxy pid)."""
    lb_port = free_port()
    ports = [free_port() for _ in range(n)]
    cmds = []
    for i, port in enumerate(ports):
        spec = TriplockSpec(upstreams=[("lean", upstream)], store="redis", redis_url=redis_url)
        text = triplock_toml(spec, port).replace(
            f"port = {port}\n", f'port = {port}\nallowed_hosts = ["127.0.0.1:{lb_port}"]\n', 1)
        (work / f"r{n}-{i}.toml").write_text(text)
        cmds.append([python(), "-m", "gateway.cli", "serve", "--config", str(work / f"r{n}-{i}.toml")])
    sock = work / f"haproxy-{n}.sock"
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(ports))
    (work / f"haproxy-{n}.cfg").write_text(HAPROXY_CFG.format(socket=sock, port=lb_port, servers=servers))
    urls: list[str | None] = [f"http://127.0.0.1:{p}/readyz" for p in ports]
    with spawn_many(cmds, urls, cwd=work) as procs, \
            spawn([HAPROXY, "-f", str(work / f"haproxy-{n}.cfg"), "-db"], None) as lb:
        all_up(sock, n)
        yield f"http://127.0.0.1:{lb_port}/mcp", sock, [p.pid for p in procs], lb.pid


def run(n: int, work: Path, redis: tuple[str, int], upstream: tuple[str, int], sessions: int,
        connections: int, seconds: float) -> dict[str, Any]:
    with replicas(n, work, redis[0], upstream[0]) as (url, sock, pids, lb_pid):
        sids = [open_session(url) or "" for _ in range(sessions)]
        spread = sessions_per_replica(sock, n)
        named = {**{f"replica {i + 1}": p for i, p in enumerate(pids)}, "haproxy": lb_pid, "redis": redis[1],
                 "upstream": upstream[1]}
        cpu0, gen0, t0 = {k: tree_cpu(p) for k, p in named.items()}, children_cpu(), time.monotonic()
        data = wrk_calls(url, sids, "echo", {"x": 1}, threads=sessions, connections=connections, seconds=seconds,
                         work=work)
        wall = time.monotonic() - t0
        cpu1, gen1 = {k: tree_cpu(p) for k, p in named.items()}, children_cpu()
    cpu = {k: round(100 * (cpu1[k] - cpu0[k]) / wall) for k in named}
    cpu["wrk"] = round(100 * (gen1 - gen0) / wall)
    return {"replicas": n, "rps": round(data["requests"] * 1e6 / data["duration_us"]),
            "errors": data["errors"] + data["rpc_errors"],
            "p50_ms": round(data["p50_us"] / 1000, 2), "p99_ms": round(data["p99_us"] / 1000, 2),
            "sessions_per_replica": spread, "cpu_pct_of_one_core": cpu, "cpu_pct_total": sum(cpu.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_replicas")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=6, help="MCP sessions, one wrk thread each")
    parser.add_argument("--connections", type=int, default=24)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="triplock-replicas-") as tmp, redis_server() as redis, \
            lean_upstreams(1, 3) as ups:
        for n in (1, 2, 3):
            rows.append(run(n, Path(tmp), redis, ups[0], args.sessions, args.connections, args.seconds))
    print(f"replicas behind HAProxy, {args.sessions} sessions on {args.connections} connections, "
          f"{args.seconds:.0f} s each; {machine_description()}")
    print("| replicas | req/s | p50 / p99 | sessions per replica | CPU % of one core, per process | total |")
    print("|---:|---:|---:|---|---|---:|")
    for r in rows:
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_pct_of_one_core"].items())
        print(f"| {r['replicas']} | {r['rps']:,} | {r['p50_ms']} / {r['p99_ms']} ms | "
              f"{' / '.join(map(str, r['sessions_per_replica']))} | {cpu} | {r['cpu_pct_total']}% |")
    print("errors (HTTP, JSON-RPC or tool): " + ", ".join(f"{r['replicas']}: {r['errors']}" for r in rows))
    base = rows[0]["rps"] or 1
    print("throughput vs one replica: " + ", ".join(f"{r['replicas']}: {r['rps'] / base:.2f}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
