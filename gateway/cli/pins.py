"""``triplock pins list|diff|approve``: review and re-approve tool definitions that changed.

Talks to a running gateway's ``/api/pins`` with the token of a principal holding the ``pin``
action (an ``agents-admin`` API key, say), read from an environment variable (``--token-env``,
default ``TRIPLOCK_TOKEN``), never from the command line.

``diff`` prints the unified diff between the pinned and the current definition and the current
hash; ``approve`` needs that hash (``--hash``), so what is approved is exactly what was reviewed:
a definition that changed again in between is refused.

Exit codes: 0 done; 1 the gateway refused (404 unknown, 409 nothing to approve or stale hash,
401/403 token); 2 usage or missing token; 3 gateway unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TOKEN_ENV = "TRIPLOCK_TOKEN"


class CliError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    token = os.environ.get(args.token_env, "").strip()
    if not token:
        raise CliError(f"set ${args.token_env} to the token of a principal with the 'pin' action "
                       "(or choose another variable with --token-env)", 2)
    try:
        response = httpx.request(method, args.url.rstrip("/") + path, timeout=args.timeout,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the gateway at {args.url}: {exc}", 3) from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data
    detail = None
    if isinstance(data, dict):
        detail = data.get("message") or data.get("error_description") or data.get("error")
    raise CliError(f"HTTP {response.status_code}: {detail or response.text.strip()[:200]}", 1)


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
    """Re-pin one changed tool to the definition with ``--hash`` (as ``diff`` showed it)."""
    data = _request(args, "POST", "/api/pins/approve",
                    json={"upstream": args.upstream, "tool": args.tool, "hash": args.hash})
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(data.get("message", "approved"))
    return 0


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except CliError as exc:
            print(f"triplock pins: {exc}", file=sys.stderr)
            return exc.code

    run.__doc__ = func.__doc__
    return run


def register(subparsers: Any) -> None:
    """Add ``pins`` and its subcommands to the ``triplock`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("TRIPLOCK_URL", DEFAULT_URL),
                        help=f"gateway base URL (default {DEFAULT_URL}, or $TRIPLOCK_URL)")
    common.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                        help=f"env var holding your token (default {DEFAULT_TOKEN_ENV})")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")

    pins = subparsers.add_parser("pins", help="review and re-approve changed tool definitions")
    sub = pins.add_subparsers(dest="pins_command", required=True)

    ls = sub.add_parser("list", parents=[common], help="list pins and the tools whose definition changed")
    ls.set_defaults(func=_guard(cmd_list))

    for name, func, text in (("diff", cmd_diff, "show what changed in one tool's definition"),
                             ("approve", cmd_approve, "approve one tool's new definition (re-pin it)")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("upstream", help="the upstream's configured name")
        p.add_argument("tool", help="the tool's name at its upstream (without the prefix)")
        if name == "approve":
            p.add_argument("--hash", required=True, help="the current hash, as `triplock pins diff` printed it")
        p.set_defaults(func=_guard(func))
