"""The README's first command: `triplock serve` with no config brings up the demo and it works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
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


APPROVER_TOKEN = "tok-quickstart-0123456789"
OUTSIDE_MAIL = {"to": "x@evil.example", "subject": "s", "body": "b"}


async def walkthrough(base: str) -> list[tuple[str, Any]]:
    """The README's quickstart in one fresh MCP session: list, read the inbox, send mail outside (held),
    approve it as the approver would, send again (it runs). Returns each step's outcome.

    Run twice, the second run must see what the first saw: the first run's legs (P+U+E once the mail
    went out) must not make the second run's inbox read, or its mail, answer differently."""
    steps: list[tuple[str, Any]] = []
    async with Client(f"{base}/mcp") as agent:
        names = {t.name for t in (await agent.list_tools()).tools}
        steps.append(("listed", {"demo__read_inbox", "demo__send_email"} <= names))
        inbox = await agent.call_tool("demo__read_inbox", {})
        steps.append(("read_inbox", inbox.is_error))
        held = await agent.call_tool("demo__send_email", OUTSIDE_MAIL)
        meta = (held.meta or {}).get("triplock/approval", {})
        steps.append(("send_email", (held.is_error, meta.get("status"), meta.get("rule_ids"))))
        decided = httpx.post(f"{base}/api/approvals/{meta.get('approval_id')}/approve", json={"reason": "ok"},
                             headers={"authorization": f"Bearer {APPROVER_TOKEN}"}, timeout=10)
        steps.append(("approved", decided.status_code))
        sent = await agent.call_tool("demo__send_email", OUTSIDE_MAIL)
        steps.append(("send_email again", sent.is_error))
    return steps


async def test_the_second_walkthrough_behaves_like_the_first(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "TRIPLOCK_SERVER__PORT": str(port),
        "TRIPLOCK_STORE__PATH": str(tmp_path / "state.sqlite"),
        "TRIPLOCK_AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        "TRIPLOCK_APPROVER_TOKENS": f"alice={APPROVER_TOKEN}",
        "TRIPLOCK_APPROVALS__HOLD_WAIT": "0",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    base = f"http://127.0.0.1:{port}"
    with running([PY, "-m", "gateway.cli", "serve"], f"{base}/readyz", env=env):
        first = await walkthrough(base)
        second = await walkthrough(base)
    assert first == [("listed", True), ("read_inbox", False),
                     ("send_email", (True, "pending",  # after the inbox read: the trifecta too
                                     ["approval_required:email_send", "default.write", "trifecta.hold"])),
                     ("approved", 200), ("send_email again", False)]
    assert second == first
