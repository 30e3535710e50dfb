"""Helpers the tests share: free ports, readiness polling, real processes on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PASSTHROUGH = REPO / "tests" / "policies" / "passthrough.yaml"  # monitor mode: nothing held (protocol tests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(
    url: str, proc: subprocess.Popen[bytes] | None = None, deadline: float = 30.0, ok: tuple[int, ...] = (200,)
) -> None:
    """Poll ``url`` until it answers with a status in ``ok``; fail fast if ``proc`` dies."""
    end = time.monotonic() + deadline
    last: Exception | int | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready:\n{out[-3000:]}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code in ok:
                return
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)  # polling interval, not synchronisation: readiness is checked each round
    raise TimeoutError(f"{url} not ready after {deadline}s (last: {last!r})")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, port: int, upstreams: list[dict[str, Any]], **sections: dict[str, Any]) -> Path:
    """Write a gateway TOML config: ``[server]`` on ``port``, the upstreams, any extra sections.

    Unless a ``policy`` section is given, the passthrough (monitor-mode) policy and the memory
    store are used: protocol tests must not wait on approvals; unless ``limits`` is given, the
    per-principal request rate is not limited.
    """
    sections.setdefault("policy", {"file": str(PASSTHROUGH)})
    sections.setdefault("store", {"kind": "memory"})
    sections.setdefault("audit", {"path": str(path.parent / "audit.jsonl")})
    # Tests drive one principal fast; the rate limit has its own tests (tests/mcp/test_principal_limits.py).
    sections.setdefault("limits", {"requests_per_second": 0})
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}"]
    for k, v in sections.pop("server", {}).items():
        lines.append(f"{k} = {toml_value(v)}")
    for name, body in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in body.items())
    for up in upstreams:
        lines.append("[[upstreams]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in up.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def running(
    cmd: list[str], ready_url: str | None, env: dict[str, str] | None = None, ready_status: tuple[int, ...] = (200,)
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until the block ends; wait for ``ready_url`` first. Output is kept for failures."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        if ready_url:
            wait_until_ready(ready_url, proc, ok=ready_status)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def demo_http_cmd(port: int) -> list[str]:
    return [PY, "-m", "gateway.cli", "demo-upstream", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]


def gateway_cmd(config: Path) -> list[str]:
    return [PY, "-m", "gateway.cli", "serve", "--config", str(config)]


MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def initialize(
    client: httpx.Client, url: str, version: str = "2025-11-25", headers: dict[str, str] | None = None
) -> str:
    """Open a handshake-era session with raw HTTP (``headers``: e.g. a bearer token); returns the session id."""
    r = client.post(
        url,
        headers={**MCP_HEADERS, **(headers or {})},
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
        },
    )
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    client.post(
        url,
        headers={**MCP_HEADERS, **(headers or {}), "mcp-session-id": sid, "mcp-protocol-version": version},
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )
    return sid


def create_api_key(keys_file: Path, principal: str, groups: str = "agents-run") -> str:
    """A Triplock API key for ``principal``, made with the real `triplock keys create`."""
    created = subprocess.run(
        [
            PY,
            "-m",
            "gateway.cli",
            "keys",
            "create",
            "--file",
            str(keys_file),
            "--principal",
            principal,
            "--groups",
            groups,
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(created.stdout)["key"])


def serve_upstream_main(build: Any, description: str | None, argv: list[str] | None = None) -> int:
    """``python -m tests.x --port N``: run the module's SDK server (``build()``) over streamable HTTP on loopback."""
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(build().run_streamable_http_async(host="127.0.0.1", port=args.port))
    return 0
