"""The real Codex CLI (npm `@openai/codex`, pinned in tests/codex) through Triplock.

One `codex exec` run, shared by the tests below: Triplock fronts the demo upstream (stdio), a
scripted Responses-API server (tests/codex/fake_model.py) plays the model, and Codex is configured
with `triplock codex-config`'s block. The script asks for `read_inbox`; Codex calls it through
Triplock and sends the result back to the "model", which quotes it as its final answer.

Everything is on 127.0.0.1; Codex's own outbound features (update check, analytics, feedback,
plugins, apps, web search) are switched off in its config so that it never tries the internet.
Needs `npm ci` in tests/codex (the CI script does it); without it these tests skip with the
reason, except in CI (`TRIPLOCK_CI=1`, set by `.ci/run`), where a missing Codex CLI fails them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.codex_config import codex_config_toml
from tests.codex.fake_model import ANSWER_PREFIX, FakeModel, function_call_outputs, offered_tools
from tests.support import PASSTHROUGH, PY, REPO, create_api_key, free_port, gateway_cmd, running, write_config

CODEX_DIR = REPO / "tests" / "codex"
CODEX_BIN = CODEX_DIR / "node_modules" / ".bin" / "codex"
CODEX_TIMEOUT = 90.0  # seconds for the whole `codex exec`; a run takes a few seconds

# A subject line from the seeded inbox (demo_upstream/data.py): it can only reach Codex's answer
# through a real `read_inbox` call to the upstream.
SEEDED_SUBJECT = "Q3 numbers - internal only"
SERVER_NAME = "triplock"

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(autouse=True, scope="module")  # before the module's other fixtures start anything
def _codex_installed() -> None:
    """Skip without the Codex CLI on a developer's machine; in CI its absence is a broken setup."""
    if not CODEX_BIN.exists():
        reason = f"Codex CLI not installed: run `npm ci` in {CODEX_DIR} (the CI script does)"
        if os.environ.get("TRIPLOCK_CI") == "1":
            pytest.fail(f"{reason} (TRIPLOCK_CI=1: a missing dependency fails the run)", pytrace=False)
        pytest.skip(reason)

# Settings that keep Codex on loopback and unattended. All are checked by `--strict-config`,
# which makes Codex refuse any key this version does not know, so a renamed key fails loudly.
_CODEX_BASE_CONFIG = """\
model = "fake-model"
model_provider = "fake"
# Unattended: never ask; shell commands (which the script never requests) stay read-only.
approval_policy = "never"
sandbox_mode = "read-only"
# No internet: no update check, no web search tool, no analytics or feedback uploads.
check_for_update_on_startup = false
web_search = "disabled"

[analytics]
enabled = false

[feedback]
enabled = false

# Features that contact OpenAI or GitHub at start-up (plugin marketplaces, connectors), or add
# tools the script does not use.
[features]
plugins = false
remote_plugin = false
apps = false
tool_suggest = false
multi_agent = false
image_generation = false

[model_providers.fake]
name = "Scripted model (tests/codex/fake_model.py)"
base_url = "{base_url}"
wire_api = "responses"
# A failure should surface at once, not after Codex's retry back-off.
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 20000

"""


@dataclass(frozen=True)
class CodexRun:
    """What one `codex exec` run left behind."""

    returncode: int
    stdout: str
    stderr: str
    last_message: str
    seconds: float
    model: FakeModel
    mcp_url: str = ""

    def describe(self) -> str:
        """Context for assertion messages."""
        paths = [f"{r.method} {r.path}" for r in self.model.requests]
        return (
            f"codex exit {self.returncode} after {self.seconds:.1f}s; model requests: {paths}\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )


def _codex_env(home: Path, codex_home: Path, token: str) -> dict[str, str]:
    """The caller's environment minus anything that could point Codex at a real account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(
        HOME=str(home),
        CODEX_HOME=str(codex_home),
        # Codex sends it as `Authorization: Bearer ...` (bearer_token_env_var): a Triplock API key.
        TRIPLOCK_TOKEN=token,
        RUST_LOG="warn",
        NO_COLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def codex_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodexRun]:
    """Start the gateway and the fake model, run `codex exec` once, and hand back the results."""
    work = tmp_path_factory.mktemp("codex")
    port = free_port()
    gw_config = write_config(
        work / "triplock.toml",
        port,
        [
            {
                "name": "demo",
                "transport": "stdio",
                "command": PY,
                "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"],
            }
        ],
        policy={"file": str(PASSTHROUGH)},
        store={"kind": "memory"},
        auth={"mode": "api_key", "api_keys_file": str(work / "keys.json")},
    )
    token = create_api_key(work / "keys.json", "codex-agent")
    codex_home = work / "codex-home"
    codex_home.mkdir()
    project = work / "project"  # Codex's working directory: empty, not a git repository
    project.mkdir()
    last_message = work / "last-message.txt"

    with running(gateway_cmd(gw_config), f"http://127.0.0.1:{port}/readyz"), FakeModel() as model:
        mcp_url = f"http://127.0.0.1:{port}/mcp"
        (codex_home / "config.toml").write_text(
            _CODEX_BASE_CONFIG.format(base_url=model.base_url) + codex_config_toml(mcp_url, server_name=SERVER_NAME)
        )
        cmd = [
            str(CODEX_BIN),
            "exec",
            "--skip-git-repo-check",  # the project directory is not a git repository
            "--strict-config",  # unknown config keys are errors, including in codex_config_toml's block
            "--ephemeral",  # no session files
            "--color",
            "never",
            "--output-last-message",
            str(last_message),
            "Read my inbox through Triplock and tell me what is in it.",
        ]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=project,
                env=_codex_env(work, codex_home, token),
                stdin=subprocess.DEVNULL,  # with piped stdin, codex exec would append it to the prompt
                capture_output=True,
                text=True,
                timeout=CODEX_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"codex exec did not finish within {CODEX_TIMEOUT}s; model saw {model.requests!r}\n{exc}")
        yield CodexRun(
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            last_message=last_message.read_text() if last_message.exists() else "",
            seconds=time.monotonic() - started,
            model=model,
            mcp_url=mcp_url,
        )


def test_codex_exec_completes(codex_run: CodexRun) -> None:
    """Codex accepted the config (strictly) and finished the scripted two-turn conversation."""
    assert codex_run.returncode == 0, codex_run.describe()
    assert len(codex_run.model.responses_requests()) == 2, codex_run.describe()


def test_codex_offers_triplock_tools_to_the_model(codex_run: CodexRun) -> None:
    """The first model request lists Triplock's catalog under the configured server name."""
    requests = codex_run.model.responses_requests()
    assert requests, codex_run.describe()
    names = {t.display for t in offered_tools(requests[0])}
    prefix = f"mcp__{SERVER_NAME}__demo__"
    for tool in ("read_inbox", "search_drive", "send_email", "list_sent"):
        assert prefix + tool in names, f"{prefix + tool} not offered; offered: {sorted(names)}"


def test_codex_read_only_call_returns_upstream_result(codex_run: CodexRun) -> None:
    """`read_inbox` went through Triplock to the upstream, and its result came back to the model."""
    requests = codex_run.model.responses_requests()
    assert len(requests) >= 2, codex_run.describe()
    outputs = function_call_outputs(requests[1])
    assert outputs, f"no function_call_output in the second model request\n{codex_run.describe()}"
    (output,) = outputs.values()
    assert SEEDED_SUBJECT in output, output
    # And Codex's final answer is the model's message quoting it.
    assert codex_run.last_message.startswith(ANSWER_PREFIX), codex_run.describe()
    assert SEEDED_SUBJECT in codex_run.last_message


def test_codex_keeps_a_healthy_get_stream(codex_run: CodexRun) -> None:
    """Codex opens the session's GET stream; it should stay open, not fail and reconnect."""
    errors = codex_run.stderr.count("sse stream error")
    assert errors == 0, f"{errors} GET-stream errors in codex's log"


def test_gateway_demanded_the_token_codex_sent(codex_run: CodexRun) -> None:
    """Codex got in with its API key (the runs above); without one, or with a wrong one, nobody does."""
    import httpx

    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    bare = httpx.post(codex_run.mcp_url, json=body, headers=headers)
    assert bare.status_code == 401
    assert "resource_metadata=" in bare.headers["www-authenticate"]
    wrong = httpx.post(codex_run.mcp_url, json=body, headers={**headers, "authorization": "Bearer tlk_x_y"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
