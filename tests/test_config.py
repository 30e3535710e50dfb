"""Configuration is validated at start; errors name the key and the reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.cli.config_reference import render_reference
from gateway.config import (
    ApprovalsConfig,
    AuditConfig,
    AuthConfig,
    ConfigError,
    LimitsConfig,
    PolicyConfig,
    RoleConfig,
    ServerConfig,
    Settings,
    StoreConfig,
    TelemetryConfig,
    UpstreamConfig,
    load_settings,
)
from tests.support import PY, REPO


def write(tmp: Path, text: str) -> Path:
    p = tmp / "t.toml"
    p.write_text(text)
    return p


def test_defaults_without_a_file_run_the_demo_on_loopback() -> None:
    s = load_settings(None)
    assert s.demo_upstream and s.server.host == "127.0.0.1" and s.auth.mode == "none"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[server]\nport = "eighty"\n', "server.port", "integer"),
        ("[server]\nport = 70000\n", "server.port", "less than or equal"),
        ("[server]\nprot = 1\n", "server.prot", "unknown key 'prot' in [server]: did you mean 'port'?"),
        ('[[upstreams]]\nname = "x"\ntransport = "http"\n', "upstreams.0", "needs 'url'"),
        ('[[upstreams]]\nname = "bad name"\ntransport = "stdio"\ncommand = "x"\n', "upstreams.0.name", "1-32"),
        ('[server]\nhost = "0.0.0.0"\n', "(top level)", "loopback"),
        ('[store]\nkind = "mongo"\n', "store.kind", "sqlite"),
    ],
)
def test_invalid_files_name_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert key in str(err.value) and reason in str(err.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_env_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_SERVER__PORT", "9123")
    assert load_settings(write(tmp_path, "[server]\nport = 8000\n")).server.port == 9123


def test_duplicate_upstream_names_are_refused(tmp_path: Path) -> None:
    up = '[[upstreams]]\nname = "a"\ntransport = "stdio"\ncommand = "x"\n'
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(write(tmp_path, up + up))


def test_config_check_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [PY, "-m", "gateway.cli", "config", "check", str(write(tmp_path, "[server]\nport = 8000\n"))],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0 and "OK" in good.stdout
    bad = subprocess.run(
        [PY, "-m", "gateway.cli", "config", "check", str(write(tmp_path, "[server]\nport = -1\n"))],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "server.port" in bad.stderr and "Traceback" not in bad.stderr


def test_an_unknown_key_names_where_it_is_and_the_key_meant(tmp_path: Path) -> None:
    text = 'uptreams = []\n[[upstreams]]\nnmae = "crm"\nname = "crm"\ntransport = "stdio"\ncommand = "x"\n'
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert sorted(str(err.value).splitlines()[1:]) == [
        "upstreams.0.nmae: unknown key 'nmae' in [upstreams[0]]: did you mean 'name'?",
        "uptreams: unknown key 'uptreams' at the top level: did you mean 'upstreams'?",
    ]


def test_an_unknown_key_with_nothing_close_lists_the_known_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[limits]\nzzz = 1\n"))
    assert str(err.value).splitlines()[1] == (
        "limits.zzz: unknown key 'zzz' in [limits]; known keys: sessions_per_principal, requests_per_second, "
        "request_burst")


def test_a_section_env_var_that_is_not_json_is_named_with_the_fix(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_SERVER", "port=9000")
    path = write(tmp_path, "[server]\nport = 8000\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == (
        f"{path}: invalid configuration\nenvironment variable TRIPLOCK_SERVER is not valid JSON (Expecting value: "
        "line 1 column 1 (char 0)): a section set whole must be JSON; use TRIPLOCK_SERVER__KEY=value for one key, "
        "or TRIPLOCK_SERVER='{\"key\": value}' for the whole section")


def test_a_misspelt_section_in_an_env_var_is_refused_with_the_name_meant(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_SERVR__PORT", "9000")  # pydantic-settings would silently ignore it
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[server]\nport = 8000\n"))
    assert str(err.value).splitlines()[1] == (
        "environment variable TRIPLOCK_SERVR__PORT: names no setting ('servr' is not a section): "
        "did you mean TRIPLOCK_SERVER__PORT?")


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[server]\nport = 8000\n"))
    assert str(err.value).splitlines()[1] == (
        "server.port: Input should be a valid integer, unable to parse string as an integer "
        "(set by environment variable TRIPLOCK_SERVER__PORT)")


def test_the_committed_config_reference_is_the_generated_one() -> None:
    """docs/config.md cannot drift: regenerate it with `triplock config reference > docs/config.md`."""
    generated = subprocess.run([PY, "-m", "gateway.cli", "config", "reference"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
    assert (REPO / "docs" / "config.md").read_text() == generated


def test_the_config_reference_documents_every_key_of_every_section() -> None:
    reference = render_reference()
    sections = [n for n, f in Settings.model_fields.items() if f.annotation is not bool]
    assert sections == ["server", "upstreams", "policy", "store", "approvals", "auth", "telemetry", "audit", "limits"]
    assert [line for line in reference.splitlines() if line.startswith("## [")] == [
        "## [server]", "## [[upstreams]]", "## [policy]", "## [store]", "## [approvals]", "## [auth]",
        "## [telemetry]", "## [audit]", "## [limits]"]
    models = [Settings, ServerConfig, UpstreamConfig, PolicyConfig, StoreConfig, ApprovalsConfig, AuthConfig,
              RoleConfig, TelemetryConfig, AuditConfig, LimitsConfig]
    for model in models:
        for name, field in model.model_fields.items():
            if name in sections:
                continue
            assert field.description, f"{model.__name__}.{name} has no description"
            row = f"| `{name}` |"
            assert any(line.startswith(row) and " ".join(field.description.split()).replace("|", "\\|") in line
                       for line in reference.splitlines()), f"{model.__name__}.{name} is not in the reference"
    assert "| `max_scope_minutes` | integer (>= 1, <= 1440) | `60` |" in reference
