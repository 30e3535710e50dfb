"""``triplock keys create|list|revoke`` and ``triplock suspend|resume``.

Keys are managed directly in the key file (``auth.api_keys_file`` of ``--config``, or
``--file``); a running gateway picks changes up within a second. Suspension goes through the
running gateway's REST API, so it is authenticated, role-checked, audited, and reaches every
gateway process sharing the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from gateway.approvals.visible_text import to_terminal
from gateway.config import ConfigError, load_settings
from gateway.identity.api_keys import KeyStore


def _key_store(args: argparse.Namespace) -> KeyStore:
    if args.file is not None:
        return KeyStore(args.file)
    try:
        settings = load_settings(args.config, demo_default=False)
    except ConfigError as exc:
        print(f"triplock: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return KeyStore(settings.auth.api_keys_file)


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create a key and print it once; only its hash is stored."""
    groups = tuple(g.strip() for g in (args.groups or "").split(",") if g.strip())
    store = _key_store(args)
    try:
        token, record = store.create(args.principal, groups, args.agent, args.description or "")
    except (ValueError, OSError) as exc:
        print(f"triplock: {exc}", file=sys.stderr)
        return 2
    # Say which file now holds the key's hash: the gateway must read that same file (auth.api_keys_file).
    written = store.path.resolve()
    if args.json:
        print(json.dumps({"key": token, **record.public(), "key_file": str(written)}))
    else:
        print(token)
        print(f"key id {record.id} for principal {record.principal} (agent {record.agent}, "
              f"groups {','.join(record.groups) or '-'}) written to {written}. "
              "Store the key now: it is not shown again.", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    records = _key_store(args).list()
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    print(f"{'ID':<13} {'PRINCIPAL':<24} {'AGENT':<24} {'GROUPS':<30} STATE")
    for r in records:
        state = "active" if r.active else "revoked"
        print(f"{r.id:<13} {r.principal:<24} {r.agent:<24} {','.join(r.groups) or '-':<30} {state}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    record = _key_store(args).revoke(args.id)
    if record is None:
        print(f"triplock: no API key with id {args.id!r}", file=sys.stderr)
        return 1
    print(f"revoked {record.id} (principal {record.principal})")
    return 0


def _api(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    token = os.environ.get(args.token_env)
    if not token:
        print(f"triplock: set {args.token_env} to an API key or token with the suspend role", file=sys.stderr)
        return 2
    url = args.url.rstrip("/") + path
    try:
        resp = httpx.request(method, url, json=body, headers={"authorization": f"Bearer {token}"}, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"triplock: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        doc = resp.json()
    except ValueError:
        doc = {"error": resp.text[:300]}
    if resp.status_code >= 400:
        # The gateway's message may quote a target the caller typed: printed without control characters.
        print(to_terminal(f"triplock: HTTP {resp.status_code}: {doc.get('error_description') or doc.get('error')}"),
              file=sys.stderr)
        return 1
    print(json.dumps(doc))
    return 0


def _target(args: argparse.Namespace) -> str:
    return f"agent:{args.agent}" if args.agent else f"principal:{args.principal}"


def cmd_suspend(args: argparse.Namespace) -> int:
    """Suspend an agent (or principal) at once, through the running gateway."""
    return _api(args, "POST", "/api/suspensions", {"target": _target(args), "reason": args.reason or ""})


def cmd_resume(args: argparse.Namespace) -> int:
    return _api(args, "DELETE", "/api/suspensions/" + quote(_target(args), safe=":"))


def _api_options(p: argparse.ArgumentParser) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", help="agent id")
    who.add_argument("--principal", help="principal id")
    p.add_argument("--url", default=os.environ.get("TRIPLOCK_URL", "http://127.0.0.1:8080"),
                   help="the running gateway (default: $TRIPLOCK_URL or http://127.0.0.1:8080)")
    p.add_argument("--token-env", default="TRIPLOCK_TOKEN", help="env var holding your token (default TRIPLOCK_TOKEN)")


def register(subparsers: Any) -> None:
    """Add ``keys``, ``suspend`` and ``resume`` to the ``triplock`` command line."""
    keys = subparsers.add_parser("keys", help="manage API keys for agents and automation")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    def file_options(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--config", type=Path, default=None, help="TOML config naming auth.api_keys_file")
        src.add_argument("--file", type=Path, default=None, help="the key file itself")

    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--principal", required=True)
    create.add_argument("--groups", default="", help="comma-separated groups, e.g. agents-run")
    create.add_argument("--agent", default=None, help="agent id (default: the principal)")
    create.add_argument("--description", default="")
    create.add_argument("--json", action="store_true")
    file_options(create)
    create.set_defaults(func=cmd_keys_create)

    lst = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    lst.add_argument("--json", action="store_true")
    file_options(lst)
    lst.set_defaults(func=cmd_keys_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    file_options(revoke)
    revoke.set_defaults(func=cmd_keys_revoke)

    suspend = subparsers.add_parser("suspend", help="suspend an agent at once (control 6.5)")
    _api_options(suspend)
    suspend.add_argument("--reason", default="")
    suspend.set_defaults(func=cmd_suspend)

    resume = subparsers.add_parser("resume", help="lift an agent's suspension")
    _api_options(resume)
    resume.set_defaults(func=cmd_resume)
