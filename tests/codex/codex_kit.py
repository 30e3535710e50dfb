"""Running the real Codex CLI (npm `@openai/codex`, pinned in tests/codex) against a scripted model.

Everything is on 127.0.0.1; Codex's own outbound features (update check, analytics, feedback,
plugins, apps, web search) are switched off in its config so that it never tries the internet.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.codex.fake_model import FakeModel, ToolStep
from tests.support import REPO

CODEX_DIR = REPO / "tests" / "codex"
CODEX_BIN = CODEX_DIR / "node_modules" / ".bin" / "codex"
CODEX_TIMEOUT = 60.0  # seconds for one whole `codex exec`; a run takes a few seconds

# Settings that keep Codex on loopback and unattended. All are checked by `--strict-config`,
# which makes Codex refuse any key this version does not know, so a renamed key fails loudly.
# `approval_policy = "never"` is what `codex exec` users run with: Triplock's block must work
# under it (it hands the decision to Triplock with default_tools_approval_mode = "approve").
CODEX_BASE_CONFIG = """\
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


def require_codex() -> None:
    """Skip without the Codex CLI on a developer's machine; in CI its absence is a broken setup."""
    if not CODEX_BIN.exists():
        reason = f"Codex CLI not installed: run `npm ci` in {CODEX_DIR} (the CI script does)"
        if os.environ.get("TRIPLOCK_CI") == "1":
            pytest.fail(f"{reason} (TRIPLOCK_CI=1: a missing dependency fails the run)", pytrace=False)
        pytest.skip(reason)


@dataclass(frozen=True)
class CodexRun:
    """What one `codex exec` run left behind."""

    returncode: int
    stdout: str
    stderr: str
    last_message: str
    seconds: float
    model: FakeModel

    def describe(self) -> str:
        """Context for assertion messages."""
        paths = [f"{r.method} {r.path}" for r in self.model.requests]
        return (
            f"codex exit {self.returncode} after {self.seconds:.1f}s; model requests: {paths}\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )


def codex_env(home: Path, codex_home: Path, token: str | None) -> dict[str, str]:
    """The caller's environment minus anything that could point Codex at a real account.

    ``token`` is the Triplock API key Codex sends as `Authorization: Bearer ...`
    (bearer_token_env_var); None leaves `TRIPLOCK_TOKEN` unset.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "TRIPLOCK_"))}
    env.update(HOME=str(home), CODEX_HOME=str(codex_home), RUST_LOG="warn", NO_COLOR="1")
    if token is not None:
        env["TRIPLOCK_TOKEN"] = token
    return env


def run_codex(work: Path, name: str, triplock_block: str, script: list[ToolStep], prompt: str,
              token: str | None) -> CodexRun:
    """One `codex exec` in a fresh CODEX_HOME (no state shared between runs), against a model playing ``script``.

    ``triplock_block`` is appended to the config verbatim: the output of `triplock codex-config`.
    """
    run_dir = work / name
    codex_home = run_dir / "codex-home"
    project = run_dir / "project"  # Codex's working directory: empty, not a git repository
    codex_home.mkdir(parents=True)
    project.mkdir()
    last_message = run_dir / "last-message.txt"
    with FakeModel(script=script) as model:
        (codex_home / "config.toml").write_text(CODEX_BASE_CONFIG.format(base_url=model.base_url) + triplock_block)
        cmd = [
            str(CODEX_BIN),
            "exec",
            "--skip-git-repo-check",  # the project directory is not a git repository
            "--strict-config",  # unknown config keys are errors, including in the generated block
            "--ephemeral",  # no session files
            "--color",
            "never",
            "--output-last-message",
            str(last_message),
            prompt,
        ]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=project,
                env=codex_env(run_dir, codex_home, token),
                stdin=subprocess.DEVNULL,  # with piped stdin, codex exec would append it to the prompt
                capture_output=True,
                text=True,
                timeout=CODEX_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"codex exec {name} did not finish within {CODEX_TIMEOUT}s; "
                        f"model saw {model.requests!r}\n{exc}")
        return CodexRun(
            returncode=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            last_message=last_message.read_text() if last_message.exists() else "",
            seconds=time.monotonic() - started,
            model=model,
        )
