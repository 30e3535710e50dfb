"""``python -m load_tests.agent_corpus``: replay the labelled corpus through a real gateway.

Options: ``--families mail,banking``, ``--limit N`` (sessions per family), ``--json out.json``,
``--policy controlled|FILE``, ``--setup fresh|first-use-approved|both``, ``--principals
per-session|shared``, ``--check`` (exit 1 when a goal is missed). Exit 2 on a harness error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from load_tests.agent_corpus import corpus
from load_tests.agent_corpus.replay import HarnessError
from load_tests.agent_corpus.report import table
from load_tests.agent_corpus.run import Principals, Setup, run
from load_tests.harness import REPO


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, replay, print the tables; the exit code as documented above."""
    p = argparse.ArgumentParser(prog="python -m load_tests.agent_corpus", description=__doc__.split("\n")[0])
    p.add_argument("--families", default="", help=f"comma-separated, of: {', '.join(corpus.FAMILIES)}")
    p.add_argument("--limit", type=int, default=None, help="at most N sessions per family (both kinds)")
    p.add_argument("--json", type=Path, default=None, help="write every figure and step outcome here")
    p.add_argument("--policy", default="controlled", help="a preset name (plus the org conditions) or a policy file")
    p.add_argument("--setup", choices=("fresh", "first-use-approved", "both"), default="both")
    p.add_argument("--principals", choices=("per-session", "shared"), default="per-session")
    p.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = p.parse_args(argv)
    try:
        sessions = corpus.load([f for f in args.families.split(",") if f] or None, args.limit)
    except corpus.CorpusError as exc:
        print(f"corpus: {exc}", file=sys.stderr)
        return 2
    setups = ["fresh", "first-use-approved"] if args.setup == "both" else [args.setup]
    report: dict[str, Any] = {"commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "sessions": len(sessions), "runs": []}
    met = True
    print(f"corpus: {len(sessions)} sessions ({sum(s.kind == 'attack' for s in sessions)} attacks), "
          f"policy {args.policy}, principals {args.principals}, commit {report['commit']}")
    for setup in setups:
        try:
            result = asyncio.run(run(sessions, cast(Setup, setup), args.policy, cast(Principals, args.principals)))
        except (HarnessError, RuntimeError, OSError) as exc:
            print(f"harness error ({setup}): {exc}", file=sys.stderr)
            return 2
        print()
        print(table(setup, result.figures))
        through = result.misses["harmful_through_by_decision"]
        if through:
            print("harmful calls through, by decision:")
            for key, n in through:
                print(f"  {n:>4}  {key}")
        holds = result.misses["benign_holds_by_rule"][:12]
        if holds:
            print("benign holds, by tool and rule:")
            for key, n in holds:
                print(f"  {n:>4}  {key}")
        print(f"({result.seconds:.0f} s; warm-up approvals: {result.to_dict()['warmup_approvals']})")
        met = met and result.figures["all"].goals_met
        report["runs"].append(result.to_dict())
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    raise SystemExit(main())
