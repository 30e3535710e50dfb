"""`config check` makes every check `serve` makes; config errors never print a traceback; start-up
gaps are warned about; "listening" only once the port is bound; `policy check` catches misspelt
categories and keys; `keys create` names the file it wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import PY, REPO, create_api_key, free_port, gateway_cmd, running, write_config


def triplock(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLOCK_")}
    return subprocess.run([PY, "-m", "gateway.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=120)


CRM = {"name": "crm", "transport": "http", "url": "http://127.0.0.1:9/mcp", "bearer_token_env": "CRM_TOKEN_FOR_TEST"}
UNSET_TOKEN = ("upstreams[0].bearer_token_env: environment variable CRM_TOKEN_FOR_TEST (upstream 'crm') is unset "
               "or empty: export it with the upstream's token, or use bearer_token_file")


def test_config_check_refuses_an_unset_upstream_token_variable_as_serve_does(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.toml", free_port(), [CRM])
    check = triplock("config", "check", str(config))
    assert check.returncode == 2, check.stdout
    assert check.stderr.splitlines() == [f"triplock: {config}: invalid configuration", f"  {UNSET_TOKEN}"]
    served = triplock("serve", "--config", str(config))
    assert served.returncode == 2
    assert "Traceback" not in served.stderr
    assert served.stderr.splitlines()[-2:] == [f"triplock: {config}: invalid configuration", f"  {UNSET_TOKEN}"]
    # With the variable set, both go on.
    ok = triplock("config", "check", str(config), env={"CRM_TOKEN_FOR_TEST": "t0ken"})
    assert (ok.returncode, ok.stdout) == (0, f"{config}: OK (upstreams: crm)\n")


def test_config_check_compiles_the_policy_and_names_the_problem(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ndefautls: {write: hold}\n")
    config = write_config(tmp_path / "gw.toml", free_port(), [], policy={"file": str(policy)})
    for command in (("config", "check", str(config)), ("serve", "--config", str(config))):
        result = triplock(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-2:] == [
            f"triplock: {config}: invalid configuration",
            f"  policy.file: {policy}: line 2: defautls: unknown key 'defautls' at the top level: "
            "did you mean 'defaults'?",
        ]


def test_policy_check_refuses_a_category_no_call_can_have(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\napproval_required_actions: [email_send, financial_transaction]\n"
                      "upstreams:\n  pay:\n    tools:\n      wire: {category: money_out}\n"
                      "rules:\n  - {id: r, action: deny, categories: [money_out, emial_send]}\n")
    result = triplock("policy", "check", str(policy))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{policy}:2: approval_required_actions[1]: no call can have category 'financial_transaction': "
        "did you mean 'financial_transaction_any'?",
        # money_out is assigned to a tool by the file itself: it can match, so only the typo is reported
        f"{policy}:8: rules[0].categories[1]: no call can have category 'emial_send': did you mean 'email_send'?",
    ]


def test_an_unwritable_audit_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the audit directory should be")
    config = write_config(tmp_path / "gw.toml", free_port(), [], audit={"path": str(blocker / "audit.jsonl")})
    result = triplock("config", "check", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"  audit.path: {blocker} is not a directory: choose a directory this user can write")


def test_a_section_variable_that_is_not_json_stops_serve_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.toml", free_port(), [])
    result = triplock("serve", "--config", str(config), env={"TRIPLOCK_UPSTREAMS": "crm"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"triplock: {config}: invalid configuration",
        "environment variable TRIPLOCK_UPSTREAMS is not valid JSON (Expecting value: line 1 column 1 (char 0)): "
        "a section set whole must be JSON; use TRIPLOCK_UPSTREAMS="
        """'[{"name": "crm", "transport": "http", "url": "https://crm.example/mcp"}]'""",
    ]


@pytest.mark.parametrize("runtime", ["triplock", "uvicorn"])
def test_listening_is_not_logged_when_the_port_is_taken(tmp_path: Path, runtime: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "gw.toml", port, [], server={"runtime": runtime})
        result = triplock("serve", "--config", str(config), env={"TRIPLOCK_APPROVER_TOKENS": "ops=t"})
    assert result.returncode != 0
    assert "address already in use" in result.stderr
    assert "listening" not in result.stderr.lower()


def test_serve_warns_of_start_up_gaps_and_is_not_ready_without_upstreams(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "gw.toml", port, [])
    env = {k: "" for k in os.environ if k.startswith("TRIPLOCK_")}  # no approver tokens from the caller
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/healthz", env=env) as proc:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["problems"] == [
            "no upstreams configured: add an [[upstreams]] entry (or demo_upstream = true)"]
    assert proc.stdout is not None
    log = proc.stdout.read().decode()
    assert ("WARNING triplock: upstreams: none configured: agents will see no tools and /readyz stays not ready "
            "(503) until an [[upstreams]] entry is added") in log
    assert ("WARNING triplock: no approver can log in: held calls will wait for nobody. Set "
            "TRIPLOCK_APPROVER_TOKENS=name=token, or (auth.mode api_key/jwt) give a principal a role that approves "
            "(`triplock keys create --principal ops --groups approver`)") in log
    assert f"INFO triplock.http: Triplock listening on http://127.0.0.1:{port} (process {proc.pid})" in log


def test_no_approver_warning_when_a_principal_with_an_approving_role_has_a_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    create_api_key(keys, "ops", groups="approver")
    config = write_config(tmp_path / "gw.toml", free_port(), [{"name": "s", "transport": "stdio", "command": PY}],
                          auth={"mode": "api_key", "api_keys_file": str(keys)})
    result = triplock("config", "check", str(config))
    assert (result.returncode, result.stderr) == (0, "")
    create_api_key(keys2 := tmp_path / "keys2.json", "ci", groups="agents-run")
    config2 = write_config(tmp_path / "gw2.toml", free_port(), [{"name": "s", "transport": "stdio", "command": PY}],
                           auth={"mode": "api_key", "api_keys_file": str(keys2)})
    result = triplock("config", "check", str(config2))
    assert result.returncode == 0
    assert result.stderr.startswith("warning: no approver can log in: held calls will wait for nobody.")


def test_keys_create_names_the_file_it_wrote(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "keys.json"
    made = triplock("keys", "create", "--file", str(target), "--principal", "ci", "--groups", "agents-run")
    assert made.returncode == 0 and made.stdout.startswith("tlk_")
    assert f") written to {target.resolve()}. Store the key now" in made.stderr
    as_json = triplock("keys", "create", "--file", str(target), "--principal", "ci2", "--json")
    assert json.loads(as_json.stdout)["key_file"] == str(target.resolve())


def test_a_misspelt_end_user_category_is_warned_about(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.toml", free_port(), [{"name": "s", "transport": "stdio", "command": PY}],
                          approvals={"end_user_categories": ["email_send_internl"]})
    result = triplock("config", "check", str(config), env={"TRIPLOCK_APPROVER_TOKENS": "ops=t"})
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "warning: approvals.end_user_categories: 'email_send_internl' is no category the policy gives a call: "
        "did you mean 'email_send_internal'?"]
