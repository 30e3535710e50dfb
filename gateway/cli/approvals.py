"""``triplock approvals list|show|approve|deny``: decide held calls from a terminal.

Talks to a running gateway's REST API (``/api/approvals``) with a bearer credential read from
an environment variable, never from the command line, where it would land in shell history and
``ps``: ``--token-env`` (default ``TRIPLOCK_APPROVER_TOKEN``, an approver token), or else
``TRIPLOCK_TOKEN``, the principal's own API key or access token (an approver is a principal).

Everything the gateway sends back is attacker-influenced text (tool names, principals,
arguments), so it is printed through :func:`gateway.approvals.visible_text.to_terminal`: control
characters (ESC: terminal escape sequences), bidi overrides and zero-width characters become
``⟨U+001B⟩`` markers, and look-alike host names are flagged with their punycode.

``approve ID --scope once|session|principal_tool [--minutes N]`` chooses what the approval covers:
this exact call once (the default), this call repeatedly in its session until the approval
expires, or any call of this tool by this principal for N minutes (the gateway's maximum applies).

Exit codes: 0 done; 1 the gateway refused (404 unknown, 409 already decided or expired,
403 own call, 400 a bad scope or minutes, 401 bad token); 2 usage or missing token; 3 gateway
unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any
from urllib.parse import quote

from gateway.approvals.visible_text import to_terminal
from gateway.cli.rest import CliError, common_options, reporting, send

DEFAULT_TOKEN_ENV = "TRIPLOCK_APPROVER_TOKEN"
PRINCIPAL_TOKEN_ENV = "TRIPLOCK_TOKEN"  # the principal's own API key or JWT (also used by `triplock suspend`)
STATES = ("pending", "approved", "denied", "expired", "executed")
SCOPES = ("once", "session", "principal_tool")


def _token(token_env: str) -> str:
    """The bearer credential: ``token_env``, or the principal's own token when that is the unset default."""
    token = os.environ.get(token_env, "").strip()
    if not token and token_env == DEFAULT_TOKEN_ENV:
        token = os.environ.get(PRINCIPAL_TOKEN_ENV, "").strip()
    if not token:
        raise CliError(f"set an approver token in ${token_env}, or your API key or access token in "
                       f"${PRINCIPAL_TOKEN_ENV} (or choose another variable with --token-env)", 2)
    return token


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return send(args, method, path, _token(args.token_env), **kwargs)
    except CliError as exc:
        detail = str(exc)
        if isinstance(exc.data, dict) and isinstance(exc.data.get("approval"), dict):
            a = exc.data["approval"]
            detail += f" (state {a.get('state')}, decided by {a.get('decided_by') or '-'})"
        raise CliError(to_terminal(detail), exc.code) from None


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if isinstance(ts, int | float) else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    rows = [[to_terminal(c) for c in row] for row in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _print_approval(a: dict[str, Any]) -> None:
    tool = a.get("exposed_name") or f"{a.get('upstream')}/{a.get('tool')}"
    fields = [
        ("id", a.get("id")), ("state", a.get("state")), ("tool", tool), ("upstream", a.get("upstream")),
        ("principal", a.get("principal")), ("session", a.get("session_id")), ("category", a.get("category")),
        ("legs", f"{a.get('legs_before') or '-'} -> {a.get('legs_after') or '-'}"),
        ("rules", ", ".join(a.get("rule_ids") or []) or "-"), ("reasons", "; ".join(a.get("reasons") or []) or "-"),
        ("created", _when(a.get("created_at"))), ("expires", _when(a.get("expires_at"))),
    ]
    if a.get("abandoned_at"):
        fields.append(("abandoned", f"the agent stopped waiting at {_when(a.get('abandoned_at'))}"))
    if a.get("decided_by") or a.get("decided_at"):
        fields += [("decided by", a.get("decided_by")), ("decided", _when(a.get("decided_at"))),
                   ("reason", a.get("reason"))]
    if a.get("state") in ("approved", "executed") or a.get("scope_until"):
        fields.append(("scope", f"{a.get('scope') or 'once'} until {_when(a.get('scope_until'))}"))
    for key, value in fields:
        print(f"{key + ':':<12} {to_terminal(value) if value not in (None, '') else '-'}")
    print("arguments:")
    try:
        pretty = json.dumps(json.loads(a.get("args_preview") or "null"), indent=2, ensure_ascii=False)
    except ValueError:
        pretty = str(a.get("args_preview"))
    print(to_terminal(pretty, multiline=True))


def cmd_list(args: argparse.Namespace) -> int:
    params = {k: v for k in ("state", "upstream", "tool", "principal")
              if (v := getattr(args, k)) is not None}
    params["limit"] = str(args.limit)
    data = _request(args, "GET", "/api/approvals", params=params)
    approvals = data.get("approvals", []) if isinstance(data, dict) else []
    if args.json:
        print(json.dumps(approvals, indent=2))
        return 0
    if not approvals:
        print("no approvals match")
        return 0
    rows = [[a["id"], a["state"] + (" (abandoned)" if a.get("abandoned_at") else ""), a["principal"],
             a.get("exposed_name") or f"{a['upstream']}/{a['tool']}",
             f"{a.get('legs_before') or '-'}>{a.get('legs_after') or '-'}", _when(a.get("created_at")),
             _when(a.get("expires_at"))] for a in approvals]
    print(_table(rows, ["ID", "STATE", "PRINCIPAL", "TOOL", "LEGS", "CREATED", "EXPIRES"]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    data = _request(args, "GET", f"/api/approvals/{_quote(args.id)}")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_approval(data)
    return 0


def _decide(args: argparse.Namespace, verb: str) -> int:
    body: dict[str, Any] = {"reason": args.reason or ""}
    if verb == "approve":
        if args.minutes is not None and args.scope != "principal_tool":
            raise CliError("--minutes goes with --scope principal_tool only", 2)
        if args.scope == "principal_tool" and args.minutes is None:
            raise CliError("--scope principal_tool needs --minutes N", 2)
        body["scope"] = args.scope
        if args.minutes is not None:
            body["minutes"] = args.minutes
    data = _request(args, "POST", f"/api/approvals/{_quote(args.id)}/{verb}", json=body)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        line = f"{data.get('state')}: {data.get('id')} by {data.get('decided_by')}"
        if verb == "approve":
            line += f", scope {data.get('scope')} until {_when(data.get('scope_until'))}"
        print(to_terminal(line))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


def cmd_deny(args: argparse.Namespace) -> int:
    return _decide(args, "deny")


def _quote(approval_id: str) -> str:
    # Ids are [A-Za-z0-9_-]; quoting keeps a stray '/' or '?' from addressing another route.
    return quote(approval_id, safe="")


def _reporting(func: Any) -> Any:
    return reporting("triplock approvals", func)


def register(subparsers: Any) -> None:
    """Add ``approvals`` and its subcommands to the ``triplock`` parser."""
    common = common_options(DEFAULT_TOKEN_ENV, f"env var holding the approver token (default {DEFAULT_TOKEN_ENV}; "
                                               f"when unset, ${PRINCIPAL_TOKEN_ENV}: your own API key or access token)")

    approvals = subparsers.add_parser("approvals", help="list and decide held calls")
    sub = approvals.add_subparsers(dest="approvals_command", required=True)

    ls = sub.add_parser("list", parents=[common], help="list approvals (default: pending)")
    ls.add_argument("--state", choices=(*STATES, "all"), default="pending")
    ls.add_argument("--upstream")
    ls.add_argument("--tool")
    ls.add_argument("--principal")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=_reporting(_list_all_states))

    show = sub.add_parser("show", parents=[common], help="show one approval, arguments included")
    show.add_argument("id")
    show.set_defaults(func=_reporting(cmd_show))

    approve = sub.add_parser("approve", parents=[common], help="approve one held call (by default: runs once)")
    approve.add_argument("id")
    approve.add_argument("--reason", "-r", default="", help="why (recorded in the audit log)")
    approve.add_argument("--scope", choices=SCOPES, default="once",
                         help="what the approval covers: once (this exact call, once; default), session (this "
                              "call repeatedly in its session until the approval expires), principal_tool (any "
                              "call of this tool by this principal for --minutes)")
    approve.add_argument("--minutes", type=int, help="how long a principal_tool approval lasts")
    approve.set_defaults(func=_reporting(cmd_approve))

    deny = sub.add_parser("deny", parents=[common], help="deny one held call")
    deny.add_argument("id")
    deny.add_argument("--reason", "-r", required=True, help="why (shown to the agent)")
    deny.set_defaults(func=_reporting(cmd_deny))


def _list_all_states(args: argparse.Namespace) -> int:
    if args.state == "all":
        args.state = None
    return cmd_list(args)
