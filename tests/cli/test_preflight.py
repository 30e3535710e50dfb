"""`triplock preflight`: seed 6.7's pre-launch checklist as it applies to the gateway.

A good deployment passes with every line shown; each broken one fails with the line that names
what is wrong (one test per fail line). In process for the checks, as a command for the exit codes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli.preflight import run_preflight
from gateway.config import load_settings
from gateway.identity.api_keys import KeyStore
from gateway.telemetry.audit import GENESIS
from gateway.telemetry.audit_verify import canonical
from tests.support import PY, REPO, write_config

DEPLOY = REPO / "deploy"
CRM = {"name": "crm", "transport": "http", "url": "http://127.0.0.1:9/mcp", "bearer_token_env": "CRM_TOKEN_PF"}
GOOD_POLICY = """version: 1
name: launch
upstreams:
  crm:
    app: salesforce
    action_control: custom
    actions_allowed: [search_records]
"""


def audit_chain(path: Path, n: int = 3) -> None:
    """A real hash chain as the gateway writes it (each record's hash covers it; prev_hash links)."""
    prev, lines = GENESIS, []
    for i in range(n):
        record: dict[str, Any] = {"event_id": f"{i:08d}", "type": "triplock.tool.call", "prev_hash": prev}
        record["hash"] = prev = hashlib.sha256(canonical(record)).hexdigest()
        lines.append(orjson.dumps(record).decode())
    path.write_text("\n".join(lines) + "\n")


class Deployment:
    """A launch-ready deployment in a temporary directory; tests break one thing at a time."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.monkeypatch = monkeypatch
        for name in ("TRIPLOCK_APPROVER_TOKENS", "TRIPLOCK_WEBHOOK_URL", "TRIPLOCK_SLACK_WEBHOOK_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("CRM_TOKEN_PF", "crm-own-token")
        monkeypatch.setenv("TRIPLOCK_WEBHOOK_URL", "https://hooks.example/triplock")
        self.keys = tmp / "keys.json"
        for principal, groups in (("ops", "approver"), ("admin", "agents-admin"), ("ci", "agents-run")):
            KeyStore(self.keys).create(principal, (groups,))  # the store `triplock keys create` writes with
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(GOOD_POLICY)
        self.audit = tmp / "audit.jsonl"
        audit_chain(self.audit)
        self.sigma = tmp / "sigma"
        shutil.copytree(DEPLOY / "sigma", self.sigma)
        self.boards = tmp / "boards"
        self.boards.mkdir()
        for name in ("grafana-dashboard.json", "triplock-alerts.yml"):
            shutil.copy(DEPLOY / name, self.boards / name)
        self.upstreams: list[dict[str, Any]] = [CRM]
        self.sections: dict[str, dict[str, Any]] = {
            "auth": {"mode": "api_key", "api_keys_file": str(self.keys)},
            "policy": {"file": str(self.policy)},
            "audit": {"path": str(self.audit), "sinks": ["file", "stdout"]},
        }

    def config(self) -> Path:
        return write_config(self.tmp / "gw.toml", 8080, self.upstreams, **self.sections)

    def lines(self) -> list[str]:
        report = run_preflight(load_settings(self.config()), self.sigma, self.boards)
        return report.render().splitlines()


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    return Deployment(tmp_path, monkeypatch)


def test_a_launch_ready_deployment_passes_every_line(deployment: Deployment) -> None:
    d = deployment
    assert d.lines() == [
        "[PASS] 6.1 authentication on (auth.mode api_key)",
        "[PASS] 6.1 no token passthrough: a client's token never reaches an upstream; upstreams use their own "
        "credentials (bearer_token_env/file, OAuth client credentials)",
        "[PASS] 6.1 roles mapped (run: agents-admin, agents-build, agents-run; build: agents-admin, agents-build; "
        "administer: agents-admin; approve: approver)",
        "[PASS] 6.2 upstream 'crm' classified (app salesforce, action_control custom)",
        "[PASS] 6.2 upstream 'crm': new actions held for review (new_actions_default deny, first use on)",
        "[PASS] 6.3 every approval-required category of 6.3 is in approval_required_actions",
        "[PASS] 6.3 first-use review in force (scope tool)",
        "[PASS] approvers can log in: API keys of ops",
        "[PASS] approvers are notified of held calls (TRIPLOCK_WEBHOOK_URL)",
        f"[PASS] 6.6 audit file {d.audit} is writable",
        "[PASS] 6.6 audit events leave the host (stdout sink)",
        f"[PASS] 6.6 audit log {d.audit} verifies (3 records, hash chain intact)",
        f"[PASS] 6.6 Sigma rules deployed in {d.sigma} (5 file(s), as shipped)",
        f"[PASS] 6.6 dashboard and alert rules deployed in {d.boards} (2 file(s), as shipped)",
        "[PASS] 6.4 No trifecta-exposed roles detected",
        "preflight: 15 pass, 0 warn, 0 fail",
    ]


def fails(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[FAIL]")]


def test_authentication_off_fails(deployment: Deployment) -> None:
    deployment.sections["auth"] = {"mode": "none"}
    assert "[FAIL] 6.1 authentication is off (auth.mode none): set auth.mode to api_key or jwt" in fails(
        deployment.lines())


def test_roles_that_leave_a_duty_to_nobody_fail(deployment: Deployment) -> None:
    deployment.sections["auth"]["roles"] = {"agents-run": {"call": ["*"]}, "approver": {"approve": ["*"]}}
    assert ("[FAIL] 6.1 no role can build or administer (run: agents-run; build: -; administer: -; "
            "approve: approver): define it in [auth.roles]") in fails(deployment.lines())


def test_an_unclassified_upstream_fails(deployment: Deployment) -> None:
    deployment.policy.write_text("version: 1\n")
    assert ("[FAIL] 6.2 upstream 'crm' is not classified: the policy has no policy upstreams.crm (it falls to "
            "default_upstream); add it with its app or its tools") in fails(deployment.lines())


def test_an_upstream_in_monitor_mode_fails(deployment: Deployment) -> None:
    deployment.policy.write_text(GOOD_POLICY + "    mode: monitor\n")
    assert "[FAIL] 6.2 upstream 'crm' is in monitor mode: nothing is held or denied" in fails(deployment.lines())


def test_new_actions_that_run_unreviewed_fail(deployment: Deployment) -> None:
    deployment.policy.write_text(GOOD_POLICY + "    new_actions_default: allow\nfirst_use: {enabled: false}\n")
    assert ("[FAIL] 6.2 upstream 'crm': new actions run without review (new_actions_default allow, first-use holds "
            "off): set new_actions_default to deny or hold") in fails(deployment.lines())


def test_a_missing_approval_required_category_fails(deployment: Deployment) -> None:
    required = "approval_required_actions: [email_send, mcp_first_invocation_of_tool]\n"
    deployment.policy.write_text(GOOD_POLICY + required)
    assert ("[FAIL] 6.3 approval_required_actions lacks calendar_invite_external, "
            "salesforce_record_create_update_delete, sharepoint_drive_bulk_write_or_delete, github_push_merge_release, "
            "slack_post_to_channel_or_external_dm, financial_transaction_any: these must always need a human"
            ) in fails(deployment.lines())


def test_a_policy_in_monitor_mode_fails(deployment: Deployment) -> None:
    deployment.policy.write_text(GOOD_POLICY + "mode: monitor\n")
    lines = fails(deployment.lines())
    assert "[FAIL] 6.3 the policy is in monitor mode: it records decisions but holds and denies nothing" in lines


def test_first_use_review_off_fails(deployment: Deployment) -> None:
    deployment.policy.write_text(GOOD_POLICY + "first_use: {enabled: false}\n")
    assert fails(deployment.lines()) == [
        "[FAIL] 6.3 first-use review is off (first_use.enabled false): the first call of each tool runs unseen"]


def test_writes_allowed_by_default_fail(deployment: Deployment) -> None:
    deployment.policy.write_text(GOOD_POLICY + "defaults: {write: allow}\n")
    assert fails(deployment.lines()) == [
        "[FAIL] 6.3 defaults.write is allow: writes run without approval"]


def test_nobody_able_to_approve_fails(deployment: Deployment) -> None:
    keys = deployment.tmp / "agents-only.json"
    KeyStore(keys).create("ci", ("agents-run",))
    deployment.sections["auth"]["api_keys_file"] = str(keys)
    assert fails(deployment.lines()) == [
        "[FAIL] approvers: nobody can log in to the console (no TRIPLOCK_APPROVER_TOKENS, no principal whose roles "
        "approve): held calls would wait for nobody"]


def test_the_audit_log_off_fails(deployment: Deployment) -> None:
    deployment.sections["audit"] = {"sinks": []}
    assert "[FAIL] 6.6 the audit log is off (audit.sinks = []): no record of any decision" in fails(deployment.lines())


def test_an_unwritable_audit_path_fails(deployment: Deployment) -> None:
    blocker = deployment.tmp / "file"
    blocker.write_text("not a directory")
    deployment.sections["audit"]["path"] = str(blocker / "audit.jsonl")
    assert fails(deployment.lines()) == [
        f"[FAIL] config: audit.path: {blocker} is not a directory: choose a directory this user can write",
        f"[FAIL] 6.6 audit.path: {blocker} is not a directory: choose a directory this user can write",
    ]


def test_an_audit_log_that_does_not_verify_fails(deployment: Deployment) -> None:
    lines = deployment.audit.read_text().splitlines()
    deployment.audit.write_text("\n".join([lines[0], lines[2]]) + "\n")  # a record deleted
    assert fails(deployment.lines()) == [
        f"[FAIL] 6.6 audit log {deployment.audit} does not verify: line 2: prev_hash is not the previous record's "
        "hash (a record was deleted, inserted or reordered before this one)"]


def test_a_missing_sigma_rule_fails(deployment: Deployment) -> None:
    (deployment.sigma / "triplock_trifecta_hold.yml").unlink()
    assert fails(deployment.lines()) == [
        f"[FAIL] 6.6 Sigma rules in {deployment.sigma}: triplock_trifecta_hold.yml missing"]


def test_a_dashboard_that_differs_from_the_shipped_one_fails(deployment: Deployment) -> None:
    (deployment.boards / "grafana-dashboard.json").write_text("{}")
    assert fails(deployment.lines()) == [
        f"[FAIL] 6.6 dashboard and alert rules in {deployment.boards}: grafana-dashboard.json differs from the "
        "shipped one"]


def test_a_trifecta_with_nothing_holding_the_send_fails(deployment: Deployment) -> None:
    deployment.upstreams.append({"name": "mail", "transport": "stdio", "command": PY})
    deployment.policy.write_text(GOOD_POLICY + "  mail:\n    app: gmail\n    mode: monitor\n")
    lines = deployment.lines()
    assert ("[FAIL] 6.4 TRIFECTA: role=agents-run upstreams=crm(P+E), mail(P+U+E) and some are in monitor mode: "
            "nothing holds the external send") in fails(lines)
    # In enforce mode the same reach is a warning: Triplock holds the external send.
    deployment.policy.write_text(GOOD_POLICY + "  mail:\n    app: gmail\n")
    assert ("[WARN] 6.4 TRIFECTA: role=agents-run upstreams=crm(P+E), mail(P+U+E): Triplock holds every external "
            "send once a session holds P+U; restrict the upstream set if that is not intended") in deployment.lines()


def test_a_config_error_and_no_upstreams_fail(deployment: Deployment) -> None:
    deployment.monkeypatch.delenv("CRM_TOKEN_PF")
    assert fails(deployment.lines())[0] == (
        "[FAIL] config: upstreams[0].bearer_token_env: environment variable CRM_TOKEN_PF (upstream 'crm') is unset "
        "or empty: export it with the upstream's token, or use bearer_token_file")
    deployment.upstreams.clear()
    assert fails(deployment.lines()) == ["[FAIL] 6.2 no upstreams configured: nothing to launch"]


def test_the_command_exits_0_when_ready_1_on_a_fail_2_on_a_bad_config(deployment: Deployment) -> None:
    def preflight(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "gateway.cli", "preflight", "--config", str(config), "--sigma-dir",
                               str(deployment.sigma), "--dashboards-dir", str(deployment.boards)],
                              cwd=REPO, capture_output=True, text=True, env=dict(os.environ), timeout=120)

    good = preflight(deployment.config())
    assert good.returncode == 0, good.stdout
    assert good.stdout.splitlines()[-1] == "preflight: 15 pass, 0 warn, 0 fail"
    deployment.sections["auth"] = {"mode": "none"}
    assert preflight(deployment.config()).returncode == 1
    bad = deployment.tmp / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    result = preflight(bad)
    assert (result.returncode, result.stdout) == (2, "")
    assert "server.prot: unknown key 'prot' in [server]: did you mean 'port'?" in result.stderr
