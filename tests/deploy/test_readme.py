"""The README's first steps as a new user takes them: the Python SDK snippet runs as a script
against a real gateway, and the apt line installs no package that conflicts with NodeSource's nodejs."""

from __future__ import annotations

import ast
import re
import subprocess
import textwrap
from pathlib import Path

from gateway.config import QUICKSTART_POLICY
from tests.support import PY, REPO, free_port, gateway_cmd, running, write_config

README = (REPO / "README.md").read_text()
README_URL = "http://127.0.0.1:8080/mcp"


def python_snippet() -> str:
    """The code block under the README's **Python SDK** item, dedented as a file would hold it."""
    match = re.search(r"\*\*Python SDK\*\*.*?\n( *)```python\n(.*?)\n\1```", README, re.S)
    assert match is not None, "README has no Python SDK snippet"
    return textwrap.dedent(match.group(2))


def test_the_python_snippet_runs_as_a_script_against_a_real_gateway(tmp_path: Path) -> None:
    snippet = python_snippet()
    assert snippet.count(README_URL) == 1
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    script = tmp_path / "client.py"
    script.write_text(snippet.replace(README_URL, url))
    # The quickstart: the bundled demo upstream and the quickstart policy, as `triplock serve` runs with no file.
    config = write_config(tmp_path / "triplock.toml", port, [], policy={"file": str(QUICKSTART_POLICY)})
    config.write_text("demo_upstream = true\n" + config.read_text())
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/readyz"):
        out = subprocess.run([PY, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    tools_line, result_line = out.stdout.splitlines()
    tools = ast.literal_eval(tools_line)
    assert {"demo__read_inbox", "demo__send_email", "demo__fetch_url"} <= set(tools)
    assert "is_error=False" in result_line
    assert "Q3 numbers - internal only" in result_line  # the demo inbox's first message


def test_the_apt_line_leaves_npm_to_where_there_is_none() -> None:
    installs = re.findall(r"`(apt-get install [^`]*)`", README.split("## ", 1)[0])
    # no npm beside NodeSource's nodejs
    assert installs == ["apt-get install redis-server redis-sentinel chromium wrk prometheus haproxy"]
    assert "`command -v npm || apt-get install npm`" in README
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get install -y -qq redis-server redis-sentinel chromium wrk prometheus haproxy" in ci
    assert "if ! command -v npm >/dev/null; then\n  apt-get install -y -qq npm" in ci
