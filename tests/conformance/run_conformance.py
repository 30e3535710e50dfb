"""Run the official MCP conformance suite (server mode) and return per-scenario results.

The suite is the npm package `@modelcontextprotocol/conformance`, pinned with node 22 in this
folder's `package.json`/`package-lock.json` (install with `npm ci` here). Its CLI is run as

    node_modules/.bin/node node_modules/@modelcontextprotocol/conformance/dist/index.js \
        server --url URL --suite all -o OUTDIR

and writes `OUTDIR/server-<scenario>-<timestamp>/checks.json` for every scenario: a list of
checks, each with a `status` of SUCCESS, FAILURE, WARNING or INFO. A scenario **fails** when
any of its checks is a FAILURE, which is also the CLI's own verdict (its exit code) when no
baseline is given; WARNINGs (SHOULD-level advice) are kept separately.

The module also holds the small process helpers the conformance tests share (free loopback
port, readiness polling, starting the fixture server and server-everything), and a CLI:

    python tests/conformance/run_conformance.py http://127.0.0.1:8931/mcp
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
NODE = NODE_MODULES / ".bin" / "node"
CONFORMANCE_CLI = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EVERYTHING_ENTRY = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
LOOPBACK_SHIM = HERE / "loopback_only.mjs"
FIXTURE_SERVER = HERE / "fixture_server.py"
EXPECTED_FAILURES_EVERYTHING = HERE / "expected_failures_everything.txt"

Suite = Literal["all", "active", "pending"]
_SUMMARY_LINE = re.compile(r"^[✓✗] (?P<name>[a-z0-9-]+): (?P<ok>\d+) passed, (?P<bad>\d+) failed$")
_RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """The outcome of one scenario, from its `checks.json`."""

    name: str
    successes: int
    failures: tuple[str, ...]  # "check-id: message" for each FAILURE
    warnings: tuple[str, ...]  # the same for each WARNING

    @property
    def passed(self) -> bool:
        """True when no check failed (the CLI's verdict without a baseline)."""
        return not self.failures


@dataclass(slots=True)
class ConformanceRun:
    """Every scenario's result from one run of the suite against one URL."""

    url: str
    suite: str
    exit_code: int
    seconds: float
    output: str
    results: dict[str, ScenarioResult] = field(default_factory=dict)

    @property
    def failed(self) -> set[str]:
        """Names of the scenarios with at least one FAILURE check."""
        return {name for name, r in self.results.items() if not r.passed}

    @property
    def warned(self) -> set[str]:
        """Names of the scenarios with at least one WARNING check."""
        return {name for name, r in self.results.items() if r.warnings}

    def describe(self) -> str:
        """A human-readable table, one line per scenario, for logs and assertion messages."""
        lines = [f"conformance suite '{self.suite}' against {self.url}: {self.seconds:.1f}s, exit {self.exit_code}"]
        for name in sorted(self.results):
            r = self.results[name]
            verdict = "FAIL" if r.failures else ("warn" if r.warnings else "pass")
            lines.append(f"  {verdict}  {name}")
            lines.extend(f"          failure: {m}" for m in r.failures)
            lines.extend(f"          warning: {m}" for m in r.warnings)
        return "\n".join(lines)


def is_installed() -> bool:
    """True when `npm ci` has been run in this folder (node 22, the suite, server-everything)."""
    return NODE.exists() and CONFORMANCE_CLI.exists() and EVERYTHING_ENTRY.exists()


def require_loopback_url(url: str) -> None:
    """Refuse any target that is not on this machine: these tools only ever test loopback."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"refusing to target {url!r}: only loopback URLs (127.0.0.1, ::1, localhost) are allowed")


def node_env() -> dict[str, str]:
    """The environment for node processes: our pinned node 22 first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("NO_COLOR", "1")
    return env


def run_conformance(
    url: str, *, suite: Suite = "all", scenario: str | None = None, timeout: float = 300.0
) -> ConformanceRun:
    """Run the suite in server mode against `url` and parse every scenario's checks."""
    require_loopback_url(url)
    if not is_installed():
        raise FileNotFoundError(f"conformance suite not installed: run `npm ci` in {HERE}")
    with tempfile.TemporaryDirectory(prefix="mcp-conformance-") as out:
        cmd = [str(NODE), str(CONFORMANCE_CLI), "server", "--url", url, "-o", out]
        cmd += ["--scenario", scenario] if scenario else ["--suite", suite]
        started = time.monotonic()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=node_env(), cwd=HERE, check=False
        )
        seconds = time.monotonic() - started
        output = proc.stdout + proc.stderr
        run = ConformanceRun(
            url=url, suite=scenario or suite, exit_code=proc.returncode, seconds=seconds, output=output
        )
        for checks_file in sorted(Path(out).glob("server-*/checks.json")):
            match = _RESULT_DIR.match(checks_file.parent.name)
            if match:
                result = _parse_checks(match["name"], checks_file)
                run.results[result.name] = result
    # A scenario that crashed before writing checks.json still shows in the summary: count it failed.
    for line in output.splitlines():
        m = _SUMMARY_LINE.match(line.strip())
        if m and m["name"] not in run.results:
            run.results[m["name"]] = ScenarioResult(m["name"], 0, ("no checks.json written",), ())
    if not run.results:
        raise RuntimeError(f"the conformance CLI produced no results (exit {proc.returncode}):\n{output[-4000:]}")
    return run


def _parse_checks(name: str, path: Path) -> ScenarioResult:
    checks = json.loads(path.read_text(encoding="utf-8"))

    def lines(status: str) -> tuple[str, ...]:
        return tuple(
            f"{c.get('id')}: {c.get('errorMessage') or c.get('description', '')}"
            for c in checks
            if c.get("status") == status
        )

    successes = sum(1 for c in checks if c.get("status") == "SUCCESS")
    return ScenarioResult(name=name, successes=successes, failures=lines("FAILURE"), warnings=lines("WARNING"))


def load_expected_failures(path: Path = EXPECTED_FAILURES_EVERYTHING) -> dict[str, str]:
    """Read a baseline file: one `scenario-name  # explanation` per line; blank and `#` lines skipped."""
    expected: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, why = line.partition("#")
        expected[name.strip()] = why.strip()
    return expected


# --- process helpers shared by the tests -----------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, deadline_s: float = 20.0) -> None:
    """Poll until 127.0.0.1:`port` accepts connections; fail fast if `proc` exits first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {deadline_s}s")


@contextlib.contextmanager
def running(cmd: list[str], port: int, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[str]:
    """Start `cmd`, wait for its port, yield its MCP URL, and stop it (SIGTERM, then SIGKILL)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            try:
                wait_for_port(port, proc)
            except (RuntimeError, TimeoutError) as exc:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-4000:]
                raise RuntimeError(f"{' '.join(cmd)}: {exc}\n--- output ---\n{tail}") from None
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def fixture_server(port: int) -> contextlib.AbstractContextManager[str]:
    """Run `fixture_server.py` on 127.0.0.1:`port`."""
    return running([sys.executable, str(FIXTURE_SERVER), "--port", str(port)], port)


def everything_server(port: int) -> contextlib.AbstractContextManager[str]:
    """Run server-everything's streamable HTTP transport on 127.0.0.1:`port`.

    Its `app.listen(PORT)` would bind every interface, so `loopback_only.mjs` is preloaded to pin
    the bind to 127.0.0.1.
    """
    env = node_env() | {"PORT": str(port)}
    cmd = [str(NODE), "--import", str(LOOPBACK_SHIM), str(EVERYTHING_ENTRY), "streamableHttp"]
    return running(cmd, port, env=env, cwd=HERE)


def main(argv: list[str] | None = None) -> int:
    """CLI: run the suite against a loopback URL and print the per-scenario table."""
    parser = argparse.ArgumentParser(description="Run the MCP conformance suite against a loopback server.")
    parser.add_argument("url", help="MCP endpoint, e.g. http://127.0.0.1:8931/mcp")
    parser.add_argument("--suite", choices=("all", "active", "pending"), default="all")
    parser.add_argument("--scenario", help="run one scenario only")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    run = run_conformance(args.url, suite=args.suite, scenario=args.scenario)
    if args.json:
        payload = {
            name: {"passed": r.passed, "failures": r.failures, "warnings": r.warnings}
            for name, r in sorted(run.results.items())
        }
        print(json.dumps({"url": run.url, "seconds": round(run.seconds, 2), "scenarios": payload}, indent=2))
    else:
        print(run.describe())
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
