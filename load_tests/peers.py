"""The peer gateways of the comparison: their setup (own virtual environments) and how each is run.

Each peer lives in ``load_tests/.peers/<name>`` (git-ignored), installed from PyPI by
``python -m load_tests.compare --setup`` (or on the first run). Nothing here is part of the
test suite. Every peer listens on 127.0.0.1 only and proxies to the same lean upstream.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from load_tests.harness import REPO, free_port, process, wait_ready

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
PACKAGES = {"fastmcp": "fastmcp", "contextforge": "mcp-contextforge-gateway"}
# ContextForge refuses to start on default secrets and refuses loopback upstreams (SSRF guard);
# these are the smallest changes to its embedded defaults (SQLite, JWT auth) that let it run here.
_CF_SECRET = "bench-only-jwt-secret-0123456789abcdef"
_CF_ENV = {
    "JWT_SECRET_KEY": _CF_SECRET,
    "AUTH_ENCRYPTION_SECRET": "bench-only-encryption-secret-0123456789",
    "PLATFORM_ADMIN_EMAIL": "admin@example.com",
    "PLATFORM_ADMIN_PASSWORD": "Bench-Admin-2026!",
    "MCPGATEWAY_ADMIN_API_ENABLED": "true",
    "MCPGATEWAY_UI_ENABLED": "false",
    "SSRF_ALLOW_LOCALHOST": "true",  # the lean upstream is on 127.0.0.1
    "LOG_LEVEL": "WARNING",
    # Its default limiter (tiered requests/minute, 10 concurrent tool calls) turns a load test into
    # a test of the limiter (HTTP 429s); off, so the proxy path itself is what gets measured.
    "RATE_LIMITING_ENABLED": "false",
    "TOOL_RATE_LIMIT": "1000",
    "TOOL_CONCURRENT_LIMIT": "64",
}


@dataclass
class PeerTarget:
    """A running peer: where to send MCP requests, with which headers, and how it names the tools."""

    name: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)
    tool_names: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tool(self, upstream_name: str) -> str:
        """The name this peer exposes for one of the upstream's tools."""
        return self.tool_names.get(upstream_name, upstream_name)


def venv_python(name: str) -> Path:
    return PEERS_DIR / name / "bin" / "python"


def installed_version(name: str) -> str | None:
    """The peer's package version in its venv, or None when it is not installed."""
    py = venv_python(name)
    if not py.exists():
        return None
    out = subprocess.run(
        [str(py), "-c", f"import importlib.metadata as m; print(m.version({PACKAGES[name]!r}))"],
        capture_output=True, text=True, check=False,
    )
    return out.stdout.strip() or None if out.returncode == 0 else None


def setup(names: list[str], *, force: bool = False) -> dict[str, str]:
    """Create each peer's venv and pip-install its package; returns name -> version or 'error: ...'."""
    status: dict[str, str] = {}
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        version = None if force else installed_version(name)
        if version:
            status[name] = version
            continue
        target = PEERS_DIR / name
        print(f"setup: installing {PACKAGES[name]} into {target.relative_to(REPO)} ...", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
            subprocess.run([str(venv_python(name)), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                           check=True, capture_output=True)
            subprocess.run([str(venv_python(name)), "-m", "pip", "install", "-q", PACKAGES[name]],
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            status[name] = f"error: {str(exc.stderr or exc)[-500:]}"
            continue
        status[name] = installed_version(name) or "error: installed but not importable"
    return status


@contextlib.contextmanager
def fastmcp_proxy(upstream_url: str) -> Iterator[PeerTarget]:
    """The FastMCP proxy (one connected upstream client, so the upstream session is reused)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    script = str(Path(__file__).resolve().parent / "fastmcp_proxy.py")
    # Any answer to GET means it is listening (FastMCP answers 400/405/406 without a session).
    with process([str(venv_python("fastmcp")), script, upstream_url, str(port)], url,
                 ok=(200, 400, 404, 405, 406), env={"FASTMCP_SHOW_CLI_BANNER": "false"}) as proc:
        yield PeerTarget("fastmcp", url, proc.pid,
                         notes=["create_proxy(connected Client): one upstream session reused for every call"])


def _cf_env(db: Path) -> dict[str, str]:
    return {**_CF_ENV, "DATABASE_URL": f"sqlite:///{db}"}


def _cf_token(env: dict[str, str]) -> str:
    """An admin JWT from ContextForge's own token tool (its defaults require a bearer JWT)."""
    out = subprocess.run(
        [str(venv_python("contextforge")), "-m", "mcpgateway.utils.create_jwt_token", "-u",
         env["PLATFORM_ADMIN_EMAIL"], "--admin", "--secret", _CF_SECRET, "--exp", "120"],
        capture_output=True, text=True, check=True, env={**os.environ, **env}, cwd=tempfile.gettempdir(),
    )
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def contextforge(upstream_url: str) -> Iterator[PeerTarget]:
    """ContextForge on its embedded defaults (SQLite file, JWT auth), the lean upstream registered.

    Registers the upstream as a gateway through the admin REST API (``POST /gateways``), reads the
    tool names it federated (``GET /tools``: ``<gateway-slug>-<tool>``), and is called through
    its streamable-HTTP endpoint ``/mcp`` with the bearer JWT.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        env = _cf_env(Path(tmp) / "contextforge.db")
        cmd = [str(PEERS_DIR / "contextforge" / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
        with _process_in(cmd, f"{base}/health", env, Path(tmp)) as proc:
            token = _cf_token(env)
            auth = {"authorization": f"Bearer {token}"}
            r = httpx.post(f"{base}/gateways", headers=auth, timeout=60,
                           json={"name": "lean", "url": upstream_url, "transport": "STREAMABLEHTTP"})
            if r.status_code >= 300:
                raise RuntimeError(f"ContextForge refused the upstream: {r.status_code} {r.text[:300]}")
            tools = httpx.get(f"{base}/tools", headers=auth, timeout=60).json()
            names = {t["originalName"]: t["name"] for t in tools if isinstance(t, dict) and "originalName" in t}
            yield PeerTarget("contextforge", f"{base}/mcp", proc.pid, auth, names, notes=[
                "embedded defaults (SQLite, JWT); SSRF_ALLOW_LOCALHOST=true to reach the 127.0.0.1 upstream",
                "rate limiting off (RATE_LIMITING_ENABLED=false, TOOL_RATE_LIMIT=1000, TOOL_CONCURRENT_LIMIT=64)",
                "upstream registered via POST /gateways; tools called via /mcp as <slug>-<tool>",
            ])


@contextlib.contextmanager
def _process_in(cmd: list[str], ready_url: str, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Like harness.process, but in a scratch working directory (ContextForge writes files to its cwd)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env}, start_new_session=True)
    try:
        wait_ready(ready_url, proc, deadline=120.0)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
