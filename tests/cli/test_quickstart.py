"""The README's first command: `triplock serve` with no config brings up the demo and it works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mcp import Client

from tests.support import PY, REPO, free_port, running


async def test_serve_without_config_lists_calls_and_holds(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "TRIPLOCK_SERVER__PORT": str(port),  # the quickstart's 8080 may be taken on a test machine
        "TRIPLOCK_STORE__PATH": str(tmp_path / "state.sqlite"),
        "TRIPLOCK_AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        "TRIPLOCK_APPROVER_TOKENS": "",
        "TRIPLOCK_APPROVALS__HOLD_WAIT": "1",  # answer "pending" after a second instead of 40
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    with running([PY, "-m", "gateway.cli", "serve"], f"http://127.0.0.1:{port}/readyz", env=env) as proc:
        async with Client(f"http://127.0.0.1:{port}/mcp") as agent:  # default: probe, then the newest era
            names = [t.name for t in (await agent.list_tools()).tools]
            assert {"demo__read_inbox", "demo__send_email", "demo__fetch_url"} <= set(names)
            inbox = await agent.call_tool("demo__read_inbox", {})
            assert not inbox.is_error  # reads answer at once in the quickstart policy
            held = await agent.call_tool("demo__send_email", {"to": "x@evil.example", "subject": "s", "body": "b"})
            assert held.is_error and "Held for human approval" in held.content[0].text  # type: ignore[union-attr]
    assert proc.stdout is not None
    log = proc.stdout.read().decode()
    assert "authentication is OFF" in log and "token for this run:" in log
    assert subprocess.run([PY, "-m", "gateway.cli", "--help"], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True).returncode == 0
