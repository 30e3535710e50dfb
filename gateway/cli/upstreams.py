"""``triplock upstreams authorize NAME`` and ``triplock upstreams status``: connecting an upstream that needs
a person's OAuth grant (``oauth_grant = "authorization_code"``), and seeing its grants.

``authorize`` asks the running gateway for the authorization URL (``POST /api/upstreams/NAME/authorize``),
prints it (``--open`` also opens it in a browser), then waits until the sign-in is finished (the grant's
``authorized_at`` changes) or ``--wait`` seconds pass. ``status`` prints per upstream: connected or
what it needs, its scopes and expiry; never a token. The token is read from ``$TRIPLOCK_TOKEN`` and
needs the ``connect_upstream`` action (``agents-admin``).
"""

from __future__ import annotations

import argparse
import json
import time
import webbrowser
from typing import Any

from gateway.cli.rest import CliError, common_options, reporting, request

NEEDS = "the 'connect_upstream' action"


def _grants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    data = request(args, "GET", "/api/upstreams/status", NEEDS)
    return {u["upstream"]: u for u in data.get("upstreams", [])}


def _when(stamp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if isinstance(stamp, int | float) else "-"


def cmd_authorize(args: argparse.Namespace) -> int:
    """Sign in for an upstream: print the authorization URL, wait until it is connected."""
    before = _grants(args).get(args.name, {}).get("authorized_at")
    data = request(args, "POST", f"/api/upstreams/{args.name}/authorize", NEEDS, json={})
    url = data["authorization_url"]
    print(f"Open this URL in a browser and sign in for upstream {args.name}:\n\n  {url}\n", flush=True)
    if args.open:
        webbrowser.open(url)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        time.sleep(1.0)  # polling interval of the status API
        grant = _grants(args).get(args.name, {})
        if grant.get("authorized_at") != before and grant.get("authorized_at") is not None:
            scopes = " ".join(grant.get("scopes") or []) or "-"
            print(f"upstream {args.name}: connected by {grant.get('by')} (scopes {scopes}, token expires"
                  f" {_when(grant.get('expires_at'))})")
            return 0
    raise CliError(f"upstream {args.name} was not connected within {args.wait:g}s (the link stays valid for"
                   " 10 minutes; run the command again for a new one)", 1)


def cmd_status(args: argparse.Namespace) -> int:
    """Per upstream that needs sign-in: connected or what it needs, scopes, expiry (never tokens)."""
    grants = _grants(args)
    if args.json:
        print(json.dumps(list(grants.values()), indent=2))
        return 0
    if not grants:
        print("no upstream uses oauth_grant = 'authorization_code'")
    for name, g in grants.items():
        state = "connected" if g.get("connected") else "needs sign-in"
        print(f"{name}: {state}; scopes {' '.join(g.get('scopes') or []) or '-'}; token expires"
              f" {_when(g.get('expires_at'))}{'; refreshable' if g.get('refreshable') else ''}")
        if not g.get("connected"):
            print(f"  {g.get('detail', '')}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``upstreams`` and its subcommands to the ``triplock`` parser."""
    common = common_options()
    ups = subparsers.add_parser("upstreams", help="connect upstreams that need a person's sign-in; see their grants")
    sub = ups.add_subparsers(dest="upstreams_command", required=True)
    authorize = sub.add_parser("authorize", parents=[common], help=cmd_authorize.__doc__)
    authorize.add_argument("name", help="the upstream's name (oauth_grant = 'authorization_code')")
    authorize.add_argument("--open", action="store_true", help="open the URL in this machine's browser")
    authorize.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the sign-in (300)")
    authorize.set_defaults(func=reporting("triplock upstreams", cmd_authorize))
    sub.add_parser("status", parents=[common], help=cmd_status.__doc__).set_defaults(
        func=reporting("triplock upstreams", cmd_status))
