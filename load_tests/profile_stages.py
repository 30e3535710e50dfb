"""Per-stage CPU budget of Triplock's allowed tools/call, from a py-spy profile taken under load.

    python -m load_tests.profile_stages [--duration 10] [--connections 16] [--raw FILE]

Starts the lean upstream and a Triplock process (the comparison's config: API-key auth, SQLite,
the compare policy), drives the allowed ``tools/call`` with wrk while ``py-spy record -r 400
-f raw --nonblocking`` samples the gateway, and assigns every sample to a stage by its
innermost frame that belongs to one (leaf first). Each stage's share of the samples times
the gateway's measured CPU per call gives µs per call. ``--raw FILE`` re-aggregates an
existing raw profile without running anything.

Stages: parse (HTTP request parsing in adapters/http/protocol.py + httptools, body read, JSON-RPC decode),
authenticate, decide (policy, access roles), state (session lookup, state cache, store,
approvals), forward (upstream pool, HTTP/1.1 client, upstream reply), respond (JSON encode,
ASGI send, the HTTP server's response write), telemetry (spans, metrics, audit events, the audit
file sink's thread), routing/glue (transport, dispatcher and pipeline code between the
stages), event loop (asyncio/uvloop scheduling and socket I/O not attributable to a stage), other.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from load_tests.common import tree_cpu

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (stage, path fragment, function names or None for any). First match from the leaf up wins.
RULES: list[tuple[str, str, frozenset[str] | None]] = [
    ("telemetry", "gateway/telemetry/tracing.py", None),
    ("telemetry", "gateway/telemetry/metrics.py", None),
    ("telemetry", "gateway/telemetry/observers.py", None),
    ("telemetry", "gateway/telemetry/audit.py", None),
    ("telemetry", "gateway/telemetry/otlp_wire.py", None),
    ("telemetry", "adapters/audit_sinks.py", None),
    ("telemetry", "opentelemetry/", None),
    ("telemetry", "prometheus_client/", None),
    ("authenticate", "gateway/identity/authenticators.py", None),
    ("authenticate", "gateway/identity/api_keys.py", None),
    ("authenticate", "gateway/identity/principal.py", None),
    ("decide", "policy/", None),
    ("decide", "gateway/guard/policy_runtime.py", None),
    ("decide", "gateway/identity/roles.py", None),
    ("state", "gateway/guard/state_cache.py", None),
    ("state", "gateway/ports/store.py", None),
    ("state", "adapters/store_", None),
    ("state", "gateway/mcp/sessions.py", None),
    ("state", "gateway/guard/hold.py", None),
    ("state", "aiosqlite/", None),
    ("state", "sqlite3/", None),
    ("state", "redis/", None),
    ("state", "gateway/guard/pipeline.py", frozenset({"_learn", "_legs_key", "_first_use_key", "_hold"})),
    ("forward", "adapters/http/client.py", None),
    ("forward", "adapters/upstreams/streamable_http.py", None),
    ("forward", "gateway/mcp/upstream_pool.py", None),
    ("forward", "gateway/ports/upstream.py", None),
    ("forward", "gateway/mcp/forward.py", None),
    ("forward", "gateway/guard/pipeline.py", frozenset({"_forward"})),
    ("parse", "gateway/mcp/jsonrpc.py",
     frozenset({"decode_message", "_too_deep", "_valid_id", "id", "method", "params"})),
    ("parse", "gateway/mcp/http_io.py", frozenset({"read_body", "accepts"})),
    ("parse", "adapters/http/protocol.py",
     frozenset({"data_received", "on_message_begin", "on_url", "on_header", "on_headers_complete", "on_body",
                "on_message_complete"})),
    ("parse", "adapters/http/cycle.py", frozenset({"receive"})),
    ("respond", "gateway/mcp/jsonrpc.py", frozenset({"encode", "result_response", "error_response"})),
    ("respond", "gateway/mcp/http_io.py", frozenset({"send_json", "send_empty", "send_error", "emit", "finish"})),
    ("respond", "adapters/http/cycle.py", frozenset({"send", "_start", "_body", "_payload"})),
    ("respond", "adapters/http/protocol.py", frozenset({"response_done"})),
    ("routing/glue", "gateway/mcp/endpoint.py", None),
    ("routing/glue", "gateway/mcp/router.py", None),
    ("routing/glue", "gateway/guard/pipeline.py", None),
    ("routing/glue", "gateway/app.py", None),
    ("routing/glue", "gateway/mcp/context.py", None),
    ("routing/glue", "adapters/http/cycle.py", None),
    ("routing/glue", "adapters/http/protocol.py", None),
    ("event loop", "asyncio/", None),
    ("event loop", "uvloop/", None),
]
STAGE_ORDER = ("parse", "authenticate", "decide", "state", "forward", "respond", "telemetry", "routing/glue",
               "event loop", "other")


class ProfileError(Exception):
    """py-spy is missing or cannot attach here."""


def stage_of(stack: list[tuple[str, str]]) -> tuple[str, str]:
    """The stage of one sampled stack (root first) and the frame that decided it (innermost match)."""
    for func, file in reversed(stack):
        bare = func.rsplit(".", 1)[-1]  # py-spy names methods Class.method
        for stage, fragment, funcs in RULES:
            if fragment in file and (funcs is None or bare in funcs):
                return stage, f"{_short(file)}:{func}"
    leaf = stack[-1] if stack else ("?", "")
    return "other", f"{_short(leaf[1])}:{leaf[0]}"


def _short(file: str) -> str:
    for anchor in ("site-packages/", "/gateway/", "/adapters/", "/policy/", "/python3.11/"):
        if anchor in file:
            tail = file.split(anchor, 1)[1]
            return (anchor.strip("/") + "/" + tail) if anchor in ("/gateway/", "/adapters/", "/policy/") else tail
    return file


def parse_raw(text: str, frames_out: Counter[str] | None = None) -> Counter[str]:
    """py-spy ``-f raw`` (collapsed stacks: ``frame;frame;... count``) to samples per stage.

    ``frames_out``, when given, also counts the deciding frame of each sample (``stage | file:function``).
    """
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        stack_text, _, n = line.rpartition(" ")
        if not stack_text or not n.isdigit():
            continue
        frames = []
        for frame in stack_text.split(";"):
            m = _FRAME.match(frame.strip())
            frames.append((m.group("func"), m.group("file")) if m else (frame, ""))
        if frames and frames[-1][0] == "_worker" and frames[-1][1].endswith("concurrent/futures/thread.py"):
            counts["idle"] += int(n)  # a pool thread blocked on its queue: not work (left out of the budget)
            continue
        stage, where = stage_of(frames)
        counts[stage] += int(n)
        if frames_out is not None:
            frames_out[f"{stage} | {where}"] += int(n)
    return counts


def budget_from(counts: Counter[str], cpu_us_per_call: float, rps: float | None = None,
                frames: Counter[str] | None = None, top: int = 25) -> dict[str, Any]:
    """Shares and µs per call per stage, in the fixed stage order (plus the top deciding frames)."""
    total = sum(counts.get(s, 0) for s in STAGE_ORDER) or 1
    stages = {s: {"samples": counts.get(s, 0), "share": round(counts.get(s, 0) / total, 4),
                  "us_per_call": round(counts.get(s, 0) / total * cpu_us_per_call, 1)} for s in STAGE_ORDER}
    out: dict[str, Any] = {"cpu_us_per_call": round(cpu_us_per_call, 1), "rps": rps, "samples": total,
                           "idle_thread_samples_excluded": counts.get("idle", 0), "stages": stages}
    if frames:
        out["top_frames"] = [{"frame": f, "share": round(n / total, 4),
                              "us_per_call": round(n / total * cpu_us_per_call, 1)} for f, n in frames.most_common(top)]
    return out


def format_budget(budget: dict[str, Any], top: int = 0) -> str:
    """The budget as text; ``top`` > 0 adds that many of the most sampled deciding frames."""
    lines = [f"stage budget (py-spy, {budget['samples']} samples; gateway CPU {budget['cpu_us_per_call']:.0f} µs/call)"]
    for name, s in budget["stages"].items():
        lines.append(f"  {name:<14}{s['us_per_call']:>8.1f} µs  {s['share'] * 100:>5.1f}%")
    for f in budget.get("top_frames", [])[:top]:
        lines.append(f"    {f['us_per_call']:>7.1f} µs  {f['share'] * 100:>5.1f}%  {f['frame']}")
    return "\n".join(lines)


def _py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise ProfileError("py-spy not installed (.venv/bin/pip install py-spy)")
    return exe


def profile(url: str, pid: int, headers: dict[str, str], body: dict[str, Any], *, seconds: float, connections: int,
            out_dir: Path) -> dict[str, Any]:
    """Profile ``pid`` while wrk drives ``url``; returns the stage budget (also keeps the raw file)."""
    from load_tests.harness import run_wrk

    raw = out_dir / f"profile-{pid}.txt"
    cmd = [_py_spy(), "record", "-r", "400", "-f", "raw", "--nonblocking", "-d", str(int(seconds) + 1),
           "-p", str(pid), "-o", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    result: dict[str, Any] = {}

    def drive() -> None:
        cpu0 = tree_cpu(pid)
        res = run_wrk(url, body, headers, connections=connections, seconds=seconds, target_pid=pid)
        result.update(rps=res.rps, cpu=(tree_cpu(pid) - cpu0) * 1e6 / max(1, res.requests))

    t = threading.Thread(target=drive)
    t.start()
    t.join()
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        raise ProfileError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-300:]}")
    frames: Counter[str] = Counter()
    budget = budget_from(parse_raw(raw.read_text(), frames), result["cpu"], result["rps"], frames)
    budget["note"] = ("measured with py-spy attached (--nonblocking, 400 Hz), so rps is a little below the "
                      "unprofiled run; µs per stage = share of samples x gateway CPU per call in the same run")
    keep = Path(__file__).resolve().parent / "results"
    keep.mkdir(exist_ok=True)
    shutil.copy(raw, keep / "profile-raw-latest.txt")
    return budget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--raw", type=Path, default=None, help="aggregate this raw py-spy file only")
    parser.add_argument("--cpu-us", type=float, default=0.0, help="with --raw: gateway CPU µs per call")
    parser.add_argument("--top", type=int, default=15, help="also list this many most sampled frames")
    args = parser.parse_args(argv)
    if args.raw:
        frames: Counter[str] = Counter()
        budget = budget_from(parse_raw(args.raw.read_text(), frames), args.cpu_us, None, frames)
        print(format_budget(budget, top=args.top))
        return 0
    from load_tests.common import TriplockSpec, api_key, call_body, lean_upstreams, session_headers, triplock

    with tempfile.TemporaryDirectory(prefix="triplock-profile-") as tmp:
        work = Path(tmp)
        key = api_key(work / "keys.json")
        auth = {"authorization": f"Bearer {key}"}
        with lean_upstreams(1, 3) as ups:
            spec = TriplockSpec(upstreams=[("lean", ups[0][0])], store_path=work / "state.sqlite",
                                api_keys_file=work / "keys.json")
            with triplock(spec, work) as (url, pid):
                budget = profile(url, pid, session_headers(url, auth), call_body("echo", {"q": "hello"}),
                                 seconds=min(args.duration, 30.0), connections=args.connections, out_dir=work)
    print(format_budget(budget, top=args.top))
    print(json.dumps(budget, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
