"""``triplock preflight``: the pre-launch gate of seed control 6.7, as it applies to the gateway.

Each line is ``[PASS]``, ``[WARN]`` or ``[FAIL]`` with the control it checks (as the seed's scripts
print ``pass "6.1 ..."``); the command exits 1 when any line fails, 2 when the config itself is
invalid. What it checks, in the checklist's order:

* 6.1 authentication is on and no client token reaches an upstream; roles say who can run, build,
  administer and approve;
* 6.2 every upstream is classified in the policy and new actions are held for review;
* 6.3 the approval-required categories and first-use review are in force;
* approvers can log in (tokens or SSO) and hear of held calls (a notifier);
* 6.6 the audit sink is writable, ships somewhere, and the existing log verifies;
* 6.4/6.6 Sigma rules and dashboards are deployed (``--sigma-dir``, ``--dashboards-dir``);
* 6.4 the trifecta report over the configured upstreams, per role that can call them.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli.config_checks import Findings, approvers_reachable, check_settings
from gateway.config import ConfigError, Settings, UpstreamConfig, load_settings
from gateway.identity.roles import AccessPolicy
from gateway.telemetry.audit_verify import read_lines, verify_lines
from policy import CompiledPolicy
from policy.catalog import app_for_upstream
from policy.config import APPROVAL_REQUIRED_DEFAULT, FIRST_USE_CATEGORY
from policy.models import ALL_LEGS, Effect, Leg, Legs

SHIPPED_DEPLOY = Path(__file__).resolve().parents[2] / "deploy"  # the repository's deploy/ folder
NOTIFIER_ENV = ("TRIPLOCK_WEBHOOK_URL", "TRIPLOCK_SLACK_WEBHOOK_URL")
# Start-up warnings that a check below reports as its own line (approvers, 6.2's upstreams).
_COVERED_BELOW = ("no approver can log in", "upstreams: none configured")


@dataclass
class Report:
    """The lines printed so far, and how many of each kind."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def passed(self, text: str) -> None:
        self.lines.append(("PASS", text))

    def warn(self, text: str) -> None:
        self.lines.append(("WARN", text))

    def fail(self, text: str) -> None:
        self.lines.append(("FAIL", text))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.lines if k == kind)

    def render(self) -> str:
        body = [f"[{kind}] {text}" for kind, text in self.lines]
        body.append(f"preflight: {self.count('PASS')} pass, {self.count('WARN')} warn, {self.count('FAIL')} fail")
        return "\n".join(body) + "\n"


@dataclass(frozen=True)
class _Who:
    groups: frozenset[str]


def _role_holds(role: str) -> _Who:
    return _Who(frozenset({role}))  # a group named like a role maps to it


def check_authentication(settings: Settings, report: Report) -> None:
    """6.1: authentication on; upstream credentials are the gateway's own, never the client's token."""
    if settings.auth.mode == "none":
        report.fail("6.1 authentication is off (auth.mode none): set auth.mode to api_key or jwt")
    else:
        report.passed(f"6.1 authentication on (auth.mode {settings.auth.mode})")
    inline = [f"{u.name}" for u in settings.upstreams if any(h.lower() == "authorization" for h in u.headers)]
    if inline:
        report.warn(f"6.1 upstream(s) {', '.join(inline)} carry an Authorization header written in the config: "
                    "use bearer_token_env or bearer_token_file so the secret is not in the file")
    report.passed("6.1 no token passthrough: a client's token never reaches an upstream; upstreams use their own "
                  "credentials (bearer_token_env/file, OAuth client credentials)")


def check_roles(settings: Settings, access: AccessPolicy, upstreams: list[UpstreamConfig], report: Report) -> None:
    """6.1: who can run, build, administer and approve; separation of duties."""
    roles = sorted(access.role_names)
    names = [u.name for u in upstreams] or ["*"]

    def runs(r: str) -> bool:
        return any(access.may_use_upstream(_role_holds(r), n) for n in names)

    dims: dict[str, Callable[[str], bool]] = {
        "run": runs,
        "build": lambda r: runs(r) and access.may(_role_holds(r), "explain_policy"),
        "administer": lambda r: access.may(_role_holds(r), "suspend") and access.may(_role_holds(r), "pin"),
        "approve": lambda r: access.approves_anything(_role_holds(r)),
    }
    found = {dim: [r for r in roles if test(r)] for dim, test in dims.items()}
    missing = [dim for dim, holders in found.items() if not holders]
    mapping = "; ".join(f"{dim}: {', '.join(holders) or '-'}" for dim, holders in found.items())
    if missing:
        report.fail(f"6.1 no role can {' or '.join(missing)} ({mapping}): define it in [auth.roles]")
    else:
        report.passed(f"6.1 roles mapped ({mapping})")
    both = sorted(set(found["run"]) & set(found["approve"]))
    if both:
        report.warn(f"6.1 role(s) {', '.join(both)} can both call tools and approve held calls: an agent holding "
                    "one could approve another agent's call; keep approvers separate")


def check_upstreams(settings: Settings, policy: CompiledPolicy, upstreams: list[UpstreamConfig],
                    report: Report) -> None:
    """6.2: every upstream classified in the policy; new actions held for review."""
    model = policy.model
    if not upstreams:
        report.fail("6.2 no upstreams configured: nothing to launch")
        return
    for up in upstreams:
        entry = model.upstreams.get(up.name)
        where = f"policy upstreams.{up.name}"
        if entry is None:
            report.fail(f"6.2 upstream {up.name!r} is not classified: the policy has no {where} (it falls to "
                        "default_upstream); add it with its app or its tools")
            continue
        if policy.upstream_mode(up.name) == "monitor":
            report.fail(f"6.2 upstream {up.name!r} is in monitor mode: nothing is held or denied")
        if entry.action_control == "allow_all":
            report.warn(f"6.2 upstream {up.name!r}: action_control allow_all; prefer read_only or custom with "
                        "actions_allowed (seed 6.2: never allow_all)")
        if entry.app is None and not entry.tools:
            report.warn(f"6.2 upstream {up.name!r} is classified only by its tools' names: set {where}.app or "
                        "list its tools")
        else:
            report.passed(f"6.2 upstream {up.name!r} classified ({'app ' + entry.app if entry.app else 'tools'}, "
                          f"action_control {entry.action_control})")
        first_use_writes = model.first_use.enabled and Effect.WRITE in model.first_use.effects
        if entry.new_actions_default == "allow" and not first_use_writes:
            report.fail(f"6.2 upstream {up.name!r}: new actions run without review (new_actions_default allow, "
                        "first-use holds off): set new_actions_default to deny or hold")
        else:
            report.passed(f"6.2 upstream {up.name!r}: new actions held for review (new_actions_default "
                          f"{entry.new_actions_default}, first use {'on' if model.first_use.enabled else 'off'})")


def check_approval_policy(policy: CompiledPolicy, report: Report) -> None:
    """6.3: the minimum approval-required categories, first-use review, write defaults, enforce mode."""
    model = policy.model
    if model.mode == "monitor":
        report.fail("6.3 the policy is in monitor mode: it records decisions but holds and denies nothing")
    required = set(model.approval_required_actions)
    missing = [c for c in APPROVAL_REQUIRED_DEFAULT if c != FIRST_USE_CATEGORY and c not in required]
    if missing:
        report.fail(f"6.3 approval_required_actions lacks {', '.join(missing)}: these must always need a human")
    else:
        report.passed("6.3 every approval-required category of 6.3 is in approval_required_actions")
    if not model.first_use.enabled:
        report.fail("6.3 first-use review is off (first_use.enabled false): the first call of each tool runs unseen")
    elif set(model.first_use.effects) != set(Effect):
        kinds = ", ".join(e.value for e in model.first_use.effects)
        report.warn(f"6.3 first-use review holds only {kinds} tools; the first call of other tools runs unseen")
    else:
        report.passed(f"6.3 first-use review in force (scope {model.first_use.scope})")
    loose = [k for k in ("write", "destructive") if getattr(model.defaults, k) == "allow"]
    if loose:
        report.fail(f"6.3 defaults.{' and defaults.'.join(loose)} is allow: writes run without approval")


def check_approvers(settings: Settings, access: AccessPolicy, report: Report) -> None:
    """Approvers can log in (tokens or SSO) and are told about held calls (a notifier)."""
    how = approvers_reachable(settings, access)
    if how is None:
        report.fail(f"approvers: nobody can log in to the console (no {settings.approvals.approver_tokens_env}, "
                    "no principal whose roles approve): held calls would wait for nobody")
    else:
        report.passed(f"approvers can log in: {how}")
    notifiers = [name for name in NOTIFIER_ENV if os.environ.get(name)]
    if notifiers:
        report.passed(f"approvers are notified of held calls ({', '.join(notifiers)})")
    else:
        report.warn(f"approvers are not notified: set {' or '.join(NOTIFIER_ENV)}, or held calls are seen only "
                    "by someone watching the console")


def check_audit(settings: Settings, findings: Findings, report: Report) -> None:
    """6.6: the audit sink is on, writable, reaches a SIEM, and the existing log verifies."""
    audit = settings.audit
    if not audit.sinks:
        report.fail("6.6 the audit log is off (audit.sinks = []): no record of any decision")
        return
    unwritable = [e for e in findings.errors if e.startswith("audit.path")]
    if unwritable:
        report.fail(f"6.6 {unwritable[0]}")
    elif "file" in audit.sinks:
        report.passed(f"6.6 audit file {audit.path} is writable")
    if set(audit.sinks) & {"redis", "stdout"}:
        report.passed(f"6.6 audit events leave the host ({', '.join(sorted(set(audit.sinks) - {'file'}))} sink)")
    else:
        report.warn(f"6.6 audit events are only in {audit.path}: have a log shipper send it to the SIEM, or add "
                    "the redis or stdout sink")
    if "file" not in audit.sinks:
        return
    files = sorted(glob.glob(glob.escape(str(audit.path)).replace("{pid}", "*")))
    if not files:
        report.warn(f"6.6 no audit log at {audit.path} yet to verify: run preflight again after a first call")
        return
    for name in files:
        try:
            result = verify_lines(read_lines([name]))
        except OSError as exc:
            report.fail(f"6.6 cannot read audit log {name}: {exc}")
            continue
        if result.ok:
            report.passed(f"6.6 audit log {name} verifies ({result.records} records, hash chain intact)")
        else:
            report.fail(f"6.6 audit log {name} does not verify: line {result.broken_line}: {result.reason}")


def _same_files(shipped: Path, deployed: Path, names: list[str]) -> list[str]:
    """The shipped files missing from ``deployed`` or different there."""
    problems = []
    for name in names:
        there = deployed / name
        if not there.is_file():
            problems.append(f"{name} missing")
        elif there.read_bytes() != (shipped / name).read_bytes():
            problems.append(f"{name} differs from the shipped one")
    return problems


def check_detections(sigma_dir: Path | None, dashboards_dir: Path | None, report: Report) -> None:
    """6.4/6.6: the shipped Sigma rules, dashboard and alert rules are deployed where the operator says."""
    if not SHIPPED_DEPLOY.is_dir():
        report.warn("6.6 the shipped deploy/ files are not available here (installed without the repository): "
                    "cannot compare Sigma rules and dashboards")
        return
    sigma = sorted(p.name for p in (SHIPPED_DEPLOY / "sigma").glob("*.yml"))
    boards = [n for n in ("grafana-dashboard.json", "triplock-alerts.yml") if (SHIPPED_DEPLOY / n).is_file()]
    for label, deployed, names, flag in (("Sigma rules", sigma_dir, sigma, "--sigma-dir"),
                                         ("dashboard and alert rules", dashboards_dir, boards, "--dashboards-dir")):
        if deployed is None:
            report.warn(f"6.6 {label} not checked: pass {flag} DIR where they are deployed")
            continue
        problems = _same_files(SHIPPED_DEPLOY / ("sigma" if label == "Sigma rules" else ""), deployed, names)
        if problems:
            report.fail(f"6.6 {label} in {deployed}: {'; '.join(problems)}")
        else:
            report.passed(f"6.6 {label} deployed in {deployed} ({len(names)} file(s), as shipped)")


def _upstream_legs(policy: CompiledPolicy, up: UpstreamConfig) -> frozenset[Leg]:
    """What an upstream can touch: its declared app's legs, else what its classified tools say; an
    upstream the policy says nothing about counts as all three legs (as an unknown app does in 6.4)."""
    entry = policy.model.upstreams.get(up.name)
    app = app_for_upstream(up.name, entry.app if entry else None)
    if app is not None:
        return app.legs
    legs = [set(t.legs) for t in (entry.tools.values() if entry else ()) if t.legs is not None]
    if entry is None or not legs or any(t.legs is None for t in entry.tools.values()):
        return ALL_LEGS
    return frozenset().union(*legs)


def check_trifecta(policy: CompiledPolicy, access: AccessPolicy, upstreams: list[UpstreamConfig],
                   report: Report) -> None:
    """6.4: for each role that can call tools, whether its upstreams together span P, U and E."""
    legs = {u.name: _upstream_legs(policy, u) for u in upstreams}
    flagged = 0
    for role in sorted(access.role_names):
        who = _role_holds(role)
        reach = [n for n in legs if access.may_use_upstream(who, n)]
        spans = frozenset().union(*(legs[n] for n in reach)) if reach else frozenset()
        if spans >= ALL_LEGS:
            flagged += 1
            apps = ", ".join(f"{n}({Legs.format(legs[n])})" for n in reach)
            enforced = all(policy.upstream_mode(n) == "enforce" for n in reach)
            line = f"6.4 TRIFECTA: role={role} upstreams={apps}"
            if enforced:
                report.warn(f"{line}: Triplock holds every external send once a session holds P+U; "
                            "restrict the upstream set if that is not intended")
            else:
                report.fail(f"{line} and some are in monitor mode: nothing holds the external send")
    if not flagged:
        report.passed("6.4 No trifecta-exposed roles detected")


def run_preflight(settings: Settings, sigma_dir: Path | None = None, dashboards_dir: Path | None = None) -> Report:
    """Every check of the gate, in the checklist's order."""
    from gateway.app import upstream_configs  # the upstreams serve runs, the bundled demo included

    report = Report()
    findings = check_settings(settings)
    for error in findings.errors:
        report.fail(f"config: {error}")
    for warning in findings.warnings:
        if not warning.startswith(_COVERED_BELOW):
            report.warn(f"config: {warning}")
    try:
        access = AccessPolicy.from_config(settings.auth)
    except ValueError:
        access = None  # already a config failure above
    upstreams = upstream_configs(settings)
    check_authentication(settings, report)
    if access is not None:
        check_roles(settings, access, upstreams, report)
    if findings.policy is not None:
        check_upstreams(settings, findings.policy, upstreams, report)
        check_approval_policy(findings.policy, report)
    if access is not None:
        check_approvers(settings, access, report)
    check_audit(settings, findings, report)
    check_detections(sigma_dir, dashboards_dir, report)
    if findings.policy is not None and access is not None:
        check_trifecta(findings.policy, access, upstreams, report)
    return report


def cmd_preflight(args: argparse.Namespace) -> int:
    """Print the gate's lines; exit 1 on any fail, 2 when the config is invalid."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"triplock: {exc}", file=sys.stderr)
        return 2
    report = run_preflight(settings, args.sigma_dir, args.dashboards_dir)
    sys.stdout.write(report.render())
    return 1 if report.count("FAIL") else 0


def register(subparsers: Any) -> None:
    """Add ``preflight`` to the ``triplock`` command line."""
    p = subparsers.add_parser("preflight", help="check a deployment against the pre-launch checklist (seed 6.7)")
    p.add_argument("--config", type=Path, default=None, help="TOML config (default: the embedded demo setup)")
    p.add_argument("--sigma-dir", type=Path, default=None, help="where the Sigma rules are deployed")
    p.add_argument("--dashboards-dir", type=Path, default=None,
                   help="where the Grafana dashboard and Prometheus alert rules are deployed")
    p.set_defaults(func=cmd_preflight)
