"""Configuration is validated at start; errors name the key and the reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
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
        ("[server]\nprot = 1\n", "server.prot", "Extra inputs"),
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
