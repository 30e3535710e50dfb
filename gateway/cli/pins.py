"""``triplock pins list|new|diff|approve``: review new tools and tool definitions that changed.

Talks to a running gateway's ``/api/pins`` with the token of a principal holding the ``pin``
action (an ``agents-admin`` API key, say), read from an environment variable (``--token-env``,
default ``TRIPLOCK_TOKEN``), never from the command line.

``diff`` prints the unified diff between the pinned and the current definition and the current
hash; ``approve`` needs that hash (``--hash``), so what is approved is exactly what was reviewed:
a definition that changed again in between is refused. ``new`` lists the tools nobody reviewed
yet (no pin, no first-use record) with their current hash; ``approve`` on one of them approves it
once for everyone (its first use is recorded and that definition pinned).

Exit codes: 0 done; 1 the gateway refused (404 unknown, 409 nothing to approve or stale hash,
401/403 token); 2 usage or missing token; 3 gateway unreachable.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from gateway.cli.rest import common_options, reporting, request


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    return request(args, method, path, "the 'pin' action (an agents-admin API key, say)", **kwargs)


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if isinstance(ts, int | float) else "-"


def cmd_list(args: argparse.Namespace) -> int:
    """Every pin, and the tools withheld because their definition changed."""
    data = _request(args, "GET", "/api/pins")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    changed = data.get("changed", [])
    if changed:
        print("changed since pinned (withheld from agents until approved):")
        for c in changed:
            print(f"  {c['exposed']}  (upstream {c['upstream']}, tool {c['tool']})")
            print(f"    pinned {c['pinned_hash']}  current {c['current_hash']}")
        print()
    else:
        print("no tool definition changed since it was pinned")
    for p in data.get("pins", []):
        state = "CHANGED" if p.get("changed") else "ok"
        print(f"{p['upstream']:<20} {p['tool']:<32} {state:<8} {p['hash'][:19]}  by {p['pinned_by']} "
              f"at {_when(p.get('pinned_at'))}")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    """The tools nobody reviewed yet, with the hash ``approve`` needs."""
    data = _request(args, "GET", "/api/pins")
    new = data.get("new", [])
    if args.json:
        print(json.dumps(new, indent=2))
        return 0
    if not new:
        print("no new tool waits for review")
        return 0
    print("new tools, not reviewed yet (their first use may be held until approved):")
    for n in new:
        description = str((n.get("current_definition") or {}).get("description", ""))
        print(f"  {n['exposed']}  ({n['effect']}; upstream {n['upstream']}, tool {n['tool']})")
        # The description is the upstream's text: shown, never interpreted (ASCII-escaped, one line).
        print(f"    description: {description.encode('ascii', 'backslashreplace').decode()[:200]!r}")
        print(f"    to approve: triplock pins approve {n['upstream']} {n['tool']} --hash {n['current_hash']}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """The unified diff of one changed tool, and the hash ``approve`` needs."""
    data = _request(args, "GET", "/api/pins/review", params={"upstream": args.upstream, "tool": args.tool})
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"tool:     {data['exposed']} (upstream {data['upstream']}, tool {data['tool']})")
    print(f"pinned:   {data['pinned_hash']}")
    print(f"current:  {data['current_hash']}")
    if data.get("pinned_definition") is None:
        print("note:     the pinned definition was not recorded; the whole current definition shows as added")
    print()
    # The description is the upstream's text: printed as is, but never interpreted (ASCII-escaped).
    print(data["diff"].encode("ascii", "backslashreplace").decode())
    print()
    print(f"to approve: triplock pins approve {args.upstream} {args.tool} --hash {data['current_hash']}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """Re-pin one changed tool, or approve a new one, with the definition ``--hash`` names (as ``diff``
    or ``new`` showed it)."""
    data = _request(args, "POST", "/api/pins/approve",
                    json={"upstream": args.upstream, "tool": args.tool, "hash": args.hash})
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(data.get("message", "approved"))
    return 0


def _guard(func: Any) -> Any:
    return reporting("triplock pins", func)


def register(subparsers: Any) -> None:
    """Add ``pins`` and its subcommands to the ``triplock`` parser."""
    common = common_options()

    pins = subparsers.add_parser("pins", help="review and re-approve changed tool definitions")
    sub = pins.add_subparsers(dest="pins_command", required=True)

    ls = sub.add_parser("list", parents=[common], help="list pins and the tools whose definition changed")
    ls.set_defaults(func=_guard(cmd_list))
    new = sub.add_parser("new", parents=[common], help="list the tools nobody reviewed yet")
    new.set_defaults(func=_guard(cmd_new))

    for name, func, text in (("diff", cmd_diff, "show what changed in one tool's definition"),
                             ("approve", cmd_approve, "approve a new tool for everyone, or a changed "
                                                      "tool's new definition (re-pin it)")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("upstream", help="the upstream's configured name")
        p.add_argument("tool", help="the tool's name at its upstream (without the prefix)")
        if name == "approve":
            p.add_argument("--hash", required=True,
                           help="the current hash, as `triplock pins diff` or `triplock pins new` printed it")
        p.set_defaults(func=_guard(func))
