"""``triplock audit verify FILE...``: check an audit log's hash chain, name the first broken record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.telemetry.audit import GENESIS
from gateway.telemetry.audit_verify import read_lines, verify_lines


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the chain holds (a torn last line is reported, not an error), 1 at the first broken
    record, 2 when a file cannot be read."""
    files: list[Path] = args.files
    for f in files:
        if not f.is_file():
            print(f"triplock audit verify: {f}: no such file", file=sys.stderr)
            return 2
    anchor = GENESIS if args.from_genesis else None
    try:
        result = verify_lines(read_lines(files), expected_prev=anchor)
    except OSError as exc:
        print(f"triplock audit verify: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(str(f) for f in files)
    if not result.ok:
        print(f"BROKEN: {names}: line {result.broken_line}"
              f"{f' (event_id {result.broken_event_id})' if result.broken_event_id else ''}: {result.reason}. "
              f"{result.records} records before it verify.")
        return 1
    anchored = "genesis" if result.first_prev_hash == GENESIS else f"prev_hash {result.first_prev_hash}"
    note = "" if result.first_prev_hash in (GENESIS, None) else (
        " (the first record continues an earlier file: pass the earlier files first to check across them)")
    print(f"OK: {names}: {result.records} records, chain intact from {anchored}{note}; "
          f"last hash {result.last_hash}")
    if result.torn_tail:
        print(f"TRUNCATED TAIL: the last line is {result.torn_tail} bytes of a record a crash cut short "
              "(left out of the chain; the gateway removes it when it starts again)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``audit verify`` to the ``triplock`` command line."""
    audit = subparsers.add_parser("audit", help="audit log tools")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check the hash chain of audit JSONL files (oldest first)")
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    verify.add_argument("--from-genesis", action="store_true",
                        help="require the first record to start the chain (no earlier files exist)")
    verify.set_defaults(func=cmd_verify)


__all__ = ["cmd_verify", "register"]
