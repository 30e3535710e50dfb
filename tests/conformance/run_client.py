"""Run the conformance suite's *client* scenarios with Triplock as the client (see triplock_client.py).

Each scenario runs alone, one after another (each starts a Triplock process; the suite's own
"in parallel" mode would start dozens at once):

    node_modules/.bin/node CLI client --command "python triplock_client.py" --scenario NAME \
        [--spec-version REV] -o OUTDIR

CLI: ``python tests/conformance/run_client.py [--suite 0.1|0.2] [--spec-version REV] [NAME ...]``
prints one line per scenario and the totals.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conformance.run_conformance import CONFORMANCE_CLI, HERE, NODE, ScenarioResult, _parse_checks, node_env
from tests.conformance.run_requirements import CLI_V2

CLIENT = HERE / "triplock_client.py"
CLIS = {"0.1": CONFORMANCE_CLI, "0.2": CLI_V2}
EXPECTED_FAILURES_CLIENT = HERE / "expected_failures_client.txt"
_LISTED = re.compile(r"^\s+- (?P<name>\S+) \[(?P<versions>[^\]]*)\]$")


def client_scenarios(suite: str) -> dict[str, tuple[str, ...]]:
    """Every client scenario the suite lists, with the spec versions it is tagged with."""
    out = subprocess.run([str(NODE), str(CLIS[suite]), "list", "--client"], capture_output=True, text=True,
                         env=node_env(), cwd=HERE, check=True, timeout=60).stdout
    return {m["name"]: tuple(m["versions"].split(",")) for line in out.splitlines() if (m := _LISTED.match(line))}


def run_client_scenario(suite: str, scenario: str, spec_version: str | None = None,
                        timeout_ms: int = 45_000) -> ScenarioResult:
    """One client scenario with Triplock as the client; a scenario that wrote no checks counts as failed."""
    with tempfile.TemporaryDirectory(prefix="mcp-client-conformance-") as out:
        cmd = [str(NODE), str(CLIS[suite]), "client", "--command", f"{sys.executable} {CLIENT}",
               "--scenario", scenario, "--timeout", str(timeout_ms), "-o", out]
        if spec_version:
            cmd += ["--spec-version", spec_version, "--force"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=node_env(), cwd=HERE, check=False,
                              timeout=timeout_ms / 1000 + 60)
        found = sorted(Path(out).rglob("checks.json"))
        if not found:
            return ScenarioResult(scenario, 0, (f"no checks.json written (exit {proc.returncode})",), ())
        result = _parse_checks(scenario, found[0])
        client_failed = proc.returncode != 0 and not result.failures and "Client exited with code" in proc.stderr
        if client_failed:  # every check passed but the calls through Triplock did not complete
            return ScenarioResult(scenario, result.successes, ("the client run exited non-zero",), result.warnings)
        return result


def load_expected(path: Path = EXPECTED_FAILURES_CLIENT) -> dict[str, str]:
    """``suite/scenario`` -> why it is expected to fail (one ``0.2@2026-07-28/name  # why`` per line)."""
    expected: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, why = line.partition("#")
            expected[key.strip()] = why.strip()
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Client conformance scenarios with Triplock as the client.")
    parser.add_argument("--suite", choices=sorted(CLIS), default="0.1")
    parser.add_argument("--spec-version", help="run each scenario at this revision (e.g. 2026-07-28)")
    parser.add_argument("scenarios", nargs="*", help="default: every client scenario the suite lists")
    args = parser.parse_args(argv)
    names = args.scenarios or sorted(client_scenarios(args.suite))
    failed = 0
    for name in names:
        r = run_client_scenario(args.suite, name, args.spec_version)
        failed += not r.passed
        print(f"{'pass' if r.passed else 'FAIL'}  {name}  ({r.successes} ok)", flush=True)
        for f in r.failures[:3]:
            print(f"        {f[:300]}", flush=True)
    print(f"{len(names) - failed} of {len(names)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
