"""`triplock codex-config`: the Codex config.toml block and requirements.toml entry (no Codex needed)."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from gateway.cli import codex_config
from gateway.cli.codex_config import GatewayTimes, codex_config_toml, codex_requirements_toml

URL = "http://127.0.0.1:18080/mcp"


def test_config_block_is_a_streamable_http_server_with_bearer_env() -> None:
    doc = tomllib.loads(codex_config_toml(URL))
    assert list(doc) == ["mcp_servers"]
    assert list(doc["mcp_servers"]) == ["triplock"]
    server = doc["mcp_servers"]["triplock"]
    assert server["url"] == URL
    assert server["bearer_token_env_var"] == "TRIPLOCK_TOKEN"
    # No stdio keys: Codex picks the transport from `url` versus `command`.
    assert "command" not in server
    assert isinstance(server["startup_timeout_sec"], int)
    assert server["startup_timeout_sec"] > 0


def test_tool_timeout_outlasts_the_approval_hold() -> None:
    """A held call waits up to 40 s for a human, then runs for up to 60 s; Codex must not give up first."""
    server = tomllib.loads(codex_config_toml(URL))["mcp_servers"]["triplock"]
    assert server["tool_timeout_sec"] == 40 + 60 + codex_config.TOOL_TIMEOUT_MARGIN_SEC


def test_block_hands_the_approval_to_triplock_and_is_required() -> None:
    """Codex must forward writes (Triplock holds them) and must not start without Triplock."""
    text = codex_config_toml(URL)
    server = tomllib.loads(text)["mcp_servers"]["triplock"]
    assert server["default_tools_approval_mode"] == "approve"
    assert server["required"] is True
    # The comments say what happens to a held call and what the user does about it.
    assert "repeat exactly the same call" in text
    assert "Triplock's console" in text


def test_tool_timeout_follows_the_given_gateway_times() -> None:
    times = GatewayTimes(hold_wait=300, call_timeout=90.5, source="--config gw.toml")
    text = codex_config_toml(URL, times=times)
    timeout = tomllib.loads(text)["mcp_servers"]["triplock"]["tool_timeout_sec"]
    assert timeout == 391 + codex_config.TOOL_TIMEOUT_MARGIN_SEC  # ceil(300 + 90.5) + margin
    assert "approvals.hold_wait (300 s)" in text and "(90.5 s), from --config gw.toml" in text


def test_config_block_custom_name_and_token_env() -> None:
    doc = tomllib.loads(codex_config_toml(URL, server_name="corp-gw", token_env="CORP_GW_TOKEN"))
    assert doc["mcp_servers"]["corp-gw"]["bearer_token_env_var"] == "CORP_GW_TOKEN"


def test_requirements_entry_pins_the_same_name_and_url() -> None:
    """Codex enables a server only if an entry has its name and exactly its URL."""
    config = tomllib.loads(codex_config_toml(URL))
    req = tomllib.loads(codex_requirements_toml(URL))
    assert req == {"mcp_servers": {"triplock": {"identity": {"url": URL}}}}
    assert req["mcp_servers"]["triplock"]["identity"]["url"] == config["mcp_servers"]["triplock"]["url"]


def test_values_are_escaped_as_toml_strings() -> None:
    url = 'http://127.0.0.1:18080/mcp?q="x"\\y'
    assert tomllib.loads(codex_config_toml(url))["mcp_servers"]["triplock"]["url"] == url
    assert tomllib.loads(codex_requirements_toml(url))["mcp_servers"]["triplock"]["identity"]["url"] == url


@pytest.mark.parametrize(
    ("url", "name", "token_env"),
    [
        ("127.0.0.1:8080/mcp", "triplock", "TRIPLOCK_TOKEN"),  # no scheme
        ("ftp://127.0.0.1/mcp", "triplock", "TRIPLOCK_TOKEN"),
        (URL, "trip.lock", "TRIPLOCK_TOKEN"),  # would be a dotted TOML key
        (URL, "", "TRIPLOCK_TOKEN"),
        (URL, "triplock", "TRIPLOCK-TOKEN"),  # not an env var name
        (URL, "triplock", "$TRIPLOCK_TOKEN"),
    ],
)
def test_bad_input_is_refused(url: str, name: str, token_env: str) -> None:
    with pytest.raises(ValueError):
        codex_config_toml(url, server_name=name, token_env=token_env)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="triplock")
    codex_config.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_prints_config_block_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["codex-config"])
    assert args.func(args) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["mcp_servers"]["triplock"]["url"] == codex_config.DEFAULT_URL
    assert "identity" not in doc["mcp_servers"]["triplock"]


def test_cli_requirements_flag_adds_the_identity_entry(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["codex-config", "--url", URL, "--requirements"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    # Two snippets for two files; each half is valid TOML on its own.
    config_part, req_part = out.split("\n\n", 1)
    assert tomllib.loads(config_part)["mcp_servers"]["triplock"]["url"] == URL
    assert tomllib.loads(req_part) == {"mcp_servers": {"triplock": {"identity": {"url": URL}}}}


def test_cli_bad_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["codex-config", "--url", "not-a-url"])
    assert args.func(args) == 2
    assert "url" in capsys.readouterr().err


def test_cli_reads_hold_wait_and_call_timeouts_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config: tool_timeout_sec outlasts that gateway's hold_wait plus its slowest upstream."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        "[approvals]\nhold_wait = 200\n"
        '[[upstreams]]\nname = "a"\ntransport = "http"\nurl = "http://127.0.0.1:9/mcp"\ncall_timeout = 30\n'
        '[[upstreams]]\nname = "b"\ntransport = "http"\nurl = "http://127.0.0.1:9/mcp"\ncall_timeout = 95\n'
    )
    args = _parse(["codex-config", "--url", URL, "--config", str(cfg)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    timeout = tomllib.loads(out)["mcp_servers"]["triplock"]["tool_timeout_sec"]
    assert timeout == 200 + 95 + codex_config.TOOL_TIMEOUT_MARGIN_SEC
    assert "approvals.hold_wait (200 s)" in out and "from --config gw.toml" in out


def test_cli_without_config_uses_the_gateway_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["codex-config"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "approvals.hold_wait (40 s)" in out and "from the gateway's defaults" in out


def test_cli_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[approvals]\nhold_wait = -1\n")
    args = _parse(["codex-config", "--config", str(cfg)])
    assert args.func(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "approvals.hold_wait" in captured.err
    missing = _parse(["codex-config", "--config", str(tmp_path / "absent.toml")])
    assert missing.func(missing) == 2
    assert "file not found" in capsys.readouterr().err
