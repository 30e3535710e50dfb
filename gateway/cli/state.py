"""``triplock state show|clear``: what the gateway remembers of a principal or a session, and forgetting it.

A principal's legs (and the untrusted values that arrived) count across its sessions for
``legs.window_seconds``; a session's for as long as it lives. ``show`` prints them with where each
came from; ``clear`` makes every gateway process sharing the store forget them (audited as
``state.cleared``). Talks to a running gateway's ``/api/state`` with the token of a principal
holding ``show_state``/``clear_state`` (``agents-admin``), read from ``$TRIPLOCK_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.rest import common_options, reporting, request


def _subject(args: argparse.Namespace) -> dict[str, str]:
    params = {k: v for k, v in (("principal", args.principal), ("session", args.session)) if v}
    if not params:
        raise SystemExit("triplock state: give --principal ID and/or --session ID")
    return params


def cmd_show(args: argparse.Namespace) -> int:
    """Legs and trail kept for a principal and/or a session."""
    data = request(args, "GET", "/api/state", "the 'show_state' action", params=_subject(args))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for level, legs in (data.get("legs") or {}).items():
        print(f"{level} legs: {'+'.join(legs) or '-'}")
    trail = data.get("trail") or []
    if not trail:
        print("nothing remembered")
    for row in trail:
        # tool names and values come from upstreams and attackers: printed escaped, never interpreted
        text = f"  {row.get('when', '-')}  {row.get('tool', '-')}: {row.get('detail', '')}"
        print(text.encode("ascii", "backslashreplace").decode())
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    """Forget the legs and trail of a principal and/or a session, in every process."""
    data = request(args, "DELETE", "/api/state", "the 'clear_state' action", params=_subject(args))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        who = " and ".join(f"{k} {v}" for k, v in _subject(args).items())
        print(f"cleared what the gateway remembered of {who} ({data.get('cleared', 0)} kept entries removed)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``state`` and its subcommands to the ``triplock`` parser."""
    common = common_options()
    common.add_argument("--principal", help="the principal's id (as audit records show it)")
    common.add_argument("--session", help="an MCP session id")
    state = subparsers.add_parser("state", help="show or clear what the gateway remembers of a principal")
    sub = state.add_subparsers(dest="state_command", required=True)
    sub.add_parser("show", parents=[common], help=cmd_show.__doc__).set_defaults(
        func=reporting("triplock state", cmd_show))
    sub.add_parser("clear", parents=[common], help=cmd_clear.__doc__).set_defaults(
        func=reporting("triplock state", cmd_clear))
