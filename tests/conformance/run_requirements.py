"""Run the 0.2 conformance suite's frozen requirement sets (server mode) and parse the results.

The 0.2 line (pinned as the npm alias `conformance-0.2` next to 0.1.16 in this folder's
`package.json`) scores a server against the scenarios a spec revision requires, frozen at its
release, each run at that revision's wire:

    node_modules/.bin/node node_modules/conformance-0.2/dist/index.js \
        server --url URL --requirements 2026-07-28 -o OUTDIR

Per scenario it writes `OUTDIR/server-<scenario>-<timestamp>/checks.json` as 0.1 does. Its
summary also names the scenarios it ran but does not score ("Not scored for <revision>":
extensions, pending ones); :attr:`RequirementsRun.scored` leaves those out.

CLI: `python tests/conformance/run_requirements.py URL 2026-07-28`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conformance.run_conformance import (
    _RESULT_DIR,
    _SUMMARY_LINE,
    HERE,
    NODE,
    ScenarioResult,
    _parse_checks,
    node_env,
    require_loopback_url,
)

CLI_V2 = HERE / "node_modules" / "conformance-0.2" / "dist" / "index.js"
REVISIONS = ("2025-11-25", "2026-07-28")
EXPECTED_FAILURES = HERE / "expected_failures_requirements.txt"
_NOT_SCORED = re.compile(r"^[✓✗] (?P<name>[a-z0-9-]+) \((?P<why>[a-z-]+)\)$")


@dataclass(slots=True)
class RequirementsRun:
    """One requirement set's scenarios against one URL."""

    url: str
    revision: str
    exit_code: int
    seconds: float
    output: str
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    not_scored: set[str] = field(default_factory=set)

    @property
    def scored(self) -> dict[str, ScenarioResult]:
        return {n: r for n, r in self.results.items() if n not in self.not_scored}

    @property
    def failed(self) -> set[str]:
        """The scored scenarios with at least one FAILURE check."""
        return {n for n, r in self.scored.items() if not r.passed}

    def describe(self) -> str:
        scored = self.scored
        lines = [
            f"requirements {self.revision} against {self.url}: {len(scored) - len(self.failed)}/{len(scored)} scored"
            f" scenarios pass ({len(self.not_scored)} not scored), {self.seconds:.1f}s, exit {self.exit_code}"
        ]
        for name in sorted(self.results):
            r = self.results[name]
            tag = " (not scored)" if name in self.not_scored else ""
            lines.append(f"  {'FAIL' if r.failures else 'pass'}  {name}{tag}")
            lines.extend(f"          failure: {m}" for m in r.failures)
        return "\n".join(lines)


def is_installed() -> bool:
    return NODE.exists() and CLI_V2.exists()


def run_requirements(url: str, revision: str, *, timeout: float = 300.0) -> RequirementsRun:
    """Run the scenarios ``revision`` requires against ``url`` (a loopback MCP endpoint)."""
    require_loopback_url(url)
    if revision not in REVISIONS:
        raise ValueError(f"unknown requirement set {revision!r}; known: {REVISIONS}")
    with tempfile.TemporaryDirectory(prefix="mcp-requirements-") as out:
        cmd = [str(NODE), str(CLI_V2), "server", "--url", url, "--requirements", revision, "-o", out]
        started = time.monotonic()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=node_env(), cwd=HERE, check=False
        )
        output = proc.stdout + proc.stderr
        run = RequirementsRun(url, revision, proc.returncode, time.monotonic() - started, output)
        for checks_file in sorted(Path(out).glob("server-*/checks.json")):
            match = _RESULT_DIR.match(checks_file.parent.name)
            if match:
                run.results[match["name"]] = _parse_checks(match["name"], checks_file)
    for line in output.splitlines():
        text = line.strip()
        summary = _SUMMARY_LINE.match(text)
        if summary and summary["name"] not in run.results:
            run.results[summary["name"]] = ScenarioResult(summary["name"], 0, ("no checks.json written",), ())
        unscored = _NOT_SCORED.match(text)
        if unscored:
            run.not_scored.add(unscored["name"])
    if not run.results:
        raise RuntimeError(f"the conformance CLI produced no results (exit {proc.returncode}):\n{output[-4000:]}")
    return run


def load_expected(path: Path = EXPECTED_FAILURES) -> dict[tuple[str, str, str], str]:
    """``(revision, where, scenario) -> why`` from lines ``REVISION WHERE SCENARIO  # why``.

    ``where`` is ``direct`` (the fixture alone) or ``triplock`` (the fixture behind Triplock).
    """
    expected: dict[tuple[str, str, str], str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, why = line.partition("#")
        revision, where, name = head.split()
        if not why.strip():
            raise ValueError(f"{path.name}: {name} has no explanation")
        expected[(revision, where, name)] = why.strip()
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a conformance requirement set against a loopback server.")
    parser.add_argument("url")
    parser.add_argument("revision", choices=REVISIONS)
    args = parser.parse_args(argv)
    run = run_requirements(args.url, args.revision)
    print(run.describe())
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
