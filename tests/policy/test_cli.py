"""`triplock policy check|explain|import|schema` and `triplock trifecta-report`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import policy as cli_policy
from policy import load_policy

from .conftest import FIXTURES


def run(argv: list[str]) -> int:
    return cli_policy.main(argv)


def test_register_adds_subcommands_with_func() -> None:
    parser = argparse.ArgumentParser()
    cli_policy.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["policy", "check", "x.yaml"])
    assert args.func is cli_policy.cmd_check
    assert parser.parse_args(["trifecta-report", "a.csv", "--json"]).json is True


def test_check_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: fine\n")
    assert run(["policy", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndefaults:\n  write: maybe\n")
    assert run(["policy", "check", str(bad)]) == 1
    assert f"{bad}:3: defaults.write:" in capsys.readouterr().err


def test_explain_demo_trifecta(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        ["policy", "explain", "--tool", "demo__send_email", "--args", '{"to": "eve@evil.test"}', "--legs", "P,U"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "decision  HOLD" in out and "trifecta.hold" in out and "TRIFECTA" in out
    assert "decided by: policy" in out


def test_explain_internal_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    run(["policy", "explain", "--tool", "demo__send_email", "--args", '{"to": "bob@example.com"}', "--legs", "P,U"])
    out = capsys.readouterr().out
    assert "inside the organisation" in out and "TRIFECTA" not in out


def test_explain_a_resource_read_after_an_external_send_adds_no_exit(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "explain", "--resource", "demo__workspace://inbox/inbox-001", "--legs", "E"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("resource  workspace://inbox/inbox-001")
    # the session then holds P+U+E, but a read sends nothing: never held for the trifecta
    assert "upstreams.demo.resources['workspace://inbox/*']" in out and "decision  ALLOW" in out
    assert "legs      session E -> P+U+E" in out


def test_explain_a_fetch_after_a_private_untrusted_read_is_the_trifecta(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "explain", "--tool", "demo__fetch_url", "--args", '{"url": "https://evil.example/"}',
                "--legs", "P,U"]) == 0
    out = capsys.readouterr().out
    assert "trifecta.hold" in out and "decision  HOLD" in out


def test_explain_an_unclassified_resource_counts_as_private_and_untrusted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "explain", "--resource", "files__file:///srv/report.txt"]) == 0
    out = capsys.readouterr().out
    assert "legs P+U, effect read" in out and "decision  ALLOW" in out


def test_explain_a_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "explain", "--prompt", "demo__triage_inbox", "--args", '{"focus": "billing"}']) == 0
    out = capsys.readouterr().out
    assert out.startswith("prompt    demo__triage_inbox") and "upstreams.demo.prompts.triage_inbox" in out


def test_explain_with_policy_file_and_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("name: p\n")
    assert (
        run(["policy", "explain", "--tool", "github__list_repos", "--policy", str(pol), "--pinned-hash", "sha256:old"])
        == 0
    )
    out = capsys.readouterr().out
    # an upstream named 'github' is not the catalog app unless the policy declares `app: github`
    assert "DENY" in out and "pin.changed" in out and "name heuristics: read verb 'list', nouns repos (P)" in out


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["--tool", "nounderscore"], "UPSTREAM__TOOL"),
        (["--resource", "file:///x"], "UPSTREAM__URI"),
        (["--tool", "a__b", "--args", "[1]"], "JSON object"),
        (["--tool", "a__b", "--args", "{"], "Expecting"),
        (["--tool", "a__b", "--legs", "Q"], "unknown leg"),
    ],
)
def test_explain_bad_input(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "explain", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_import_writes_a_loadable_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "imported.yaml"
    packs = [
        str(FIXTURES / "hth-chatgpt-enterprise-6.02-action-control-readonly.jsonc"),
        str(FIXTURES / "hth-chatgpt-enterprise-6.03-approval-policy.jsonc"),
    ]
    assert run(["policy", "import", *packs, "-o", str(out)]) == 0
    policy = load_policy(out)
    assert policy.model.upstreams["slack"].actions_denied == ["post_to_channel", "dm_external", "post_to_dm"]
    assert "jira_comment_on_owned_ticket" in policy.model.approval_logged_actions
    assert run(["policy", "import", packs[1]]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["first_use"] == {"enabled": True}


def test_import_bad_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonc"
    bad.write_text('{"apps": {"gmail": {"action_control": "sometimes"}}}')
    assert run(["policy", "import", str(bad)]) == 2
    assert "action_control" in capsys.readouterr().err


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "PolicyFile"


def test_trifecta_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["trifecta-report", str(FIXTURES / "agents.csv")]) == 1
    assert "4 of 6 agent(s)" in capsys.readouterr().out
    assert run(["trifecta-report", str(FIXTURES / "agents.csv"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["trifecta_count"] == 4 and data["agents"][1]["legs"] == "P"


def test_trifecta_report_clean_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "a.csv"
    clean.write_text('agent_id,agent_name,owner_email,connected_apps\na,A,o@e.com,"Box | Dropbox"\n')
    assert run(["trifecta-report", str(clean)]) == 0
    assert run(["trifecta-report", str(tmp_path / "missing.csv")]) == 2
