"""CLI subcommands for the policy engine: `triplock policy check|explain|import|schema` and
`triplock trifecta-report`.

`gateway.cli.main` wires them in with `cli_policy.register(subparsers)`; each subcommand sets
`func`, which takes the parsed arguments and returns the exit code (0 ok, 1 findings, 2 bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from policy import (
    CallState,
    CompiledPolicy,
    Legs,
    PolicyError,
    ToolCall,
    ToolDefinition,
    load_policy,
    load_preset,
)
from policy.importer import ImportProblem, pack_to_policy
from policy.jsonc import JsoncError
from policy.jsonc import loads as jsonc_loads
from policy.loader import PRESETS
from policy.report import ReportInputError, read_inventory, render_table
from policy.schema import render_schema

OK, FINDINGS, BAD_INPUT = 0, 1, 2


def _err(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return BAD_INPUT


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a policy file; print every issue with its line and key."""
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        for issue in exc.issues:
            where = f"{args.file}:{issue.line}" if issue.line is not None else args.file
            print(f"{where}: {issue.key or '(top level)'}: {issue.message}", file=sys.stderr)
        return FINDINGS
    model = policy.model
    print(
        f"{args.file}: ok: policy {model.name!r} {policy.revision}, mode {model.mode}, "
        f"{len(model.upstreams)} upstream(s), {len(model.rules)} rule(s)"
    )
    return OK


def _load(args: argparse.Namespace) -> CompiledPolicy:
    return load_policy(args.policy) if args.policy else load_preset(args.preset)


def cmd_explain(args: argparse.Namespace) -> int:
    """Decide one hypothetical call (tools/call, resources/read or prompts/get) and print the rule trail."""
    flag, named = next((f, v) for f, v in (("--tool", args.tool), ("--resource", args.resource),
                                            ("--prompt", args.prompt)) if v is not None)
    upstream, sep, tool = named.partition("__")
    if not sep or not upstream or not tool:
        what = {"--tool": "TOOL", "--resource": "URI", "--prompt": "PROMPT"}[flag]
        return _err(f"{flag} must be UPSTREAM__{what}, got {named!r}")
    try:
        arguments = json.loads(args.args)
        legs = Legs.parse(args.legs)
        annotations = json.loads(args.annotations) if args.annotations else None
    except (json.JSONDecodeError, ValueError) as exc:
        return _err(str(exc))
    if not isinstance(arguments, dict):
        return _err("--args must be a JSON object")
    try:
        policy = _load(args)
    except PolicyError as exc:
        return _err(str(exc))
    # the schema declares exactly the arguments given, as a client would send them
    definition = ToolDefinition(
        name=tool,
        description=args.description or "",
        input_schema={"type": "object", "properties": {k: {} for k in arguments}},
        annotations=annotations,
    )
    if flag == "--resource":
        profile = policy.resource_profile(upstream, tool)
        arguments = {}
    elif flag == "--prompt":
        profile = policy.prompt_profile(upstream, {"name": tool, "description": args.description or "",
                                                   "arguments": [{"name": k} for k in arguments]})
    else:
        profile = policy.profile(upstream, definition)
    call = ToolCall(
        principal=args.principal,
        agent=args.agent,
        groups=frozenset(g for g in (args.groups or "").split(",") if g),
        session_id="explain",
        upstream=upstream,
        tool=tool,
        arguments=arguments,
    )
    state = CallState(
        session_legs=legs,
        tool_used_before=not args.first_use,
        pinned_hash=args.pinned_hash,
        suspended=frozenset(s for s in (args.suspended or "").split(",") if s),
    )
    if not policy.visible(profile):
        print(f"note      this {profile.kind} is hidden from listings by action control")
    print(policy.explain(call, profile, state))
    return OK


def cmd_import(args: argparse.Namespace) -> int:
    """Convert seed 6.2/6.3 JSONC config packs into a policy YAML file."""
    packs = []
    for path in args.packs:
        try:
            packs.append(jsonc_loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, JsoncError) as exc:
            return _err(f"{path}: {exc}")
    try:
        doc = pack_to_policy(packs, name=args.name)
    except (ImportProblem, ValueError) as exc:
        return _err(str(exc))
    header = "# Imported by `triplock policy import` from: " + ", ".join(Path(p).name for p in args.packs) + "\n"
    text = header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return OK


def cmd_schema(args: argparse.Namespace) -> int:
    """Print (or write) the policy file's JSON schema."""
    text = render_schema()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return OK


def cmd_trifecta_report(args: argparse.Namespace) -> int:
    """Seed 6.4 inventory check; exit 1 when any agent spans the trifecta."""
    try:
        rows = read_inventory(Path(args.csv).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ReportInputError) as exc:
        return _err(f"{args.csv}: {exc}")
    if args.json:
        print(
            json.dumps(
                {"agents": [r.as_dict() for r in rows], "trifecta_count": sum(r.trifecta for r in rows)}, indent=2
            )
        )
    else:
        print(render_table(rows))
    return FINDINGS if any(r.trifecta for r in rows) else OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `policy ...` and `trifecta-report` to the triplock CLI."""
    policy = subparsers.add_parser("policy", help="check, explain and import policies")
    sub = policy.add_subparsers(dest="policy_command", required=True)

    check = sub.add_parser("check", help="validate a policy file (errors name line and key)")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show the decision and rule trail for one call")
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("--tool", help="UPSTREAM__TOOL: a tools/call")
    target.add_argument("--resource", help="UPSTREAM__URI: a resources/read of that URI")
    target.add_argument("--prompt", help="UPSTREAM__PROMPT: a prompts/get (--args are its arguments)")
    explain.add_argument("--args", default="{}", help="the call's arguments as a JSON object")
    explain.add_argument("--legs", default="", help="legs the session already holds, e.g. P,U")
    source = explain.add_mutually_exclusive_group()
    source.add_argument("--policy", help="policy file (default: the controlled preset)")
    source.add_argument("--preset", choices=PRESETS, default="controlled")
    explain.add_argument("--principal", default="cli-user")
    explain.add_argument("--agent", default=None)
    explain.add_argument("--groups", default="", help="comma-separated groups")
    explain.add_argument("--first-use", action="store_true", help="treat the call as the tool's first use")
    explain.add_argument("--pinned-hash", default=None, help="the pinned definition hash to compare")
    explain.add_argument("--suspended", default="", help="comma-separated ids, e.g. agent:bot1,upstream:demo")
    explain.add_argument("--description", default="", help="the tool's description")
    explain.add_argument("--annotations", default=None, help="the tool's MCP annotations as JSON")
    explain.set_defaults(func=cmd_explain)

    imp = sub.add_parser("import", help="convert seed 6.2/6.3 JSONC config packs to policy YAML")
    imp.add_argument("packs", nargs="+", metavar="PACK.jsonc")
    imp.add_argument("-o", "--output", help="write here instead of stdout")
    imp.add_argument("--name", default="imported", help="policy name")
    imp.set_defaults(func=cmd_import)

    schema = sub.add_parser("schema", help="print the policy file's JSON schema")
    schema.add_argument("-o", "--output")
    schema.set_defaults(func=cmd_schema)

    report = subparsers.add_parser("trifecta-report", help="seed 6.4: flag agents whose apps span P+U+E")
    report.add_argument("csv", help="agent inventory CSV (agent_id, agent_name, owner_email, connected_apps)")
    report.add_argument("--json", action="store_true", help="JSON instead of a table")
    report.set_defaults(func=cmd_trifecta_report)


def main(argv: list[str] | None = None) -> int:
    """Run these subcommands standalone: `python -m gateway.cli.policy policy check FILE`."""
    parser = argparse.ArgumentParser(prog="triplock")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
