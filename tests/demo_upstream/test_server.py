"""The demo workspace upstream, run for real (streamable HTTP on loopback, and stdio) and driven by
the official SDK client, in both protocol eras over HTTP: the handshake era (`mode="legacy"`:
initialize + session) and 2026-07-28 (`mode="auto"`: server/discover, stateless requests)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from demo_upstream.data import INJECTION_TEXT
from demo_upstream.server import is_loopback_host, main
from tests.conformance.run_conformance import free_port, running

REPO = Path(__file__).resolve().parents[2]

# What the demo claims about each tool: (readOnly, destructive, openWorld). The policy and the
# gateway's annotation re-emission are tested against these, so they are pinned here.
EXPECTED_HINTS = {
    "read_inbox": (True, False, False),
    "search_drive": (True, False, False),
    "fetch_url": (True, False, True),
    "list_sent": (True, False, False),
    "slow_report": (True, False, False),
    "send_email": (False, False, True),
    "post_to_chat": (False, False, True),
    "update_crm_record": (False, True, False),
}
ERAS = ["legacy", "auto"]


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "demo_upstream.server", "--transport", "http", "--port", str(port)]
    with running(cmd, port, cwd=REPO) as url:
        yield url


def stdio_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "demo_upstream.server"], cwd=REPO)


async def _sent_count(client: Client) -> int:
    result = await client.call_tool("list_sent", {})
    assert result.structured_content is not None
    return int(result.structured_content["count"])


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_carry_honest_annotations(http_url: str, mode: Any) -> None:
    async with Client(http_url, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == set(EXPECTED_HINTS)
    for name, (read_only, destructive, open_world) in EXPECTED_HINTS.items():
        ann = tools[name].annotations
        assert ann is not None and ann.title, name
        assert (ann.read_only_hint, ann.destructive_hint, ann.open_world_hint) == (read_only, destructive, open_world)


@pytest.mark.parametrize("mode", ERAS)
async def test_send_email_is_structured_and_recorded(http_url: str, mode: Any) -> None:
    async with Client(http_url, mode=mode) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "send_email")
        assert tool.output_schema is not None and "message_id" in tool.output_schema["properties"]
        before = await _sent_count(client)
        result = await client.call_tool("send_email", {"to": "bob@example.com", "subject": "hi", "body": "hello"})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["status"] == "sent"
        assert result.structured_content["to"] == "bob@example.com"
        listed = await client.call_tool("list_sent", {})
        assert listed.structured_content is not None
        assert listed.structured_content["count"] == before + 1
        assert listed.structured_content["items"][-1]["item_id"] == result.structured_content["message_id"]


@pytest.mark.parametrize("mode", ERAS)
async def test_slow_report_streams_progress(http_url: str, mode: Any) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(http_url, mode=mode) as client:
        result = await client.call_tool("slow_report", {"steps": 4}, progress_callback=on_progress)
    assert not result.is_error
    assert [p for p, _, _ in seen] == [1, 2, 3, 4]
    assert all(total == 4 for _, total, _ in seen)


async def test_inbox_carries_the_prompt_injection(http_url: str) -> None:
    async with Client(http_url) as client:
        result = await client.call_tool("read_inbox", {})
    assert result.structured_content is not None
    bodies = [m["body"] for m in result.structured_content["messages"]]
    assert len(bodies) == 3
    assert sum(INJECTION_TEXT in b for b in bodies) == 1


async def test_fetch_url_serves_canned_pages_and_errors_otherwise(http_url: str) -> None:
    async with Client(http_url) as client:
        ok = await client.call_tool("fetch_url", {"url": "https://status.example.com/"})
        missing = await client.call_tool("fetch_url", {"url": "https://unknown.example.net/"})
    assert not ok.is_error and "operational" in ok.content[0].text  # type: ignore[union-attr]
    assert missing.is_error
    assert "not reachable" in missing.content[0].text  # type: ignore[union-attr]


async def test_crm_update_and_unknown_record(http_url: str) -> None:
    async with Client(http_url) as client:
        ok = await client.call_tool("update_crm_record", {"record_id": "crm-globex", "fields": {"stage": "won"}})
        bad = await client.call_tool("update_crm_record", {"record_id": "crm-nope", "fields": {}})
    assert not ok.is_error and '"stage": "won"' in ok.content[0].text  # type: ignore[union-attr]
    assert bad.is_error


async def test_resources_and_prompt(http_url: str) -> None:
    async with Client(http_url) as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        message = await client.read_resource("workspace://inbox/inbox-001")
        prompts = (await client.list_prompts()).prompts
        prompt = await client.get_prompt("triage_inbox", {"focus": "finance"})
    assert [str(r.uri) for r in resources] == ["workspace://drive/index"]
    assert [t.uri_template for t in templates] == ["workspace://inbox/{message_id}"]
    assert "Q3 numbers" in message.contents[0].text  # type: ignore[union-attr]
    assert [p.name for p in prompts] == ["triage_inbox"]
    assert "finance" in prompt.messages[0].content.text  # type: ignore[union-attr]


async def test_stdio_round_trip() -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(stdio_params()) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == set(EXPECTED_HINTS)
        assert await _sent_count(client) == 0  # a fresh process starts from the seed
        posted = await client.call_tool("post_to_chat", {"channel": "#general", "text": "hi"})
        sent = await client.call_tool("send_email", {"to": "a@example.com", "subject": "s", "body": "b"})
        assert not posted.is_error and not sent.is_error
        assert await _sent_count(client) == 2
        await client.call_tool("slow_report", {"steps": 3}, progress_callback=on_progress)
    assert seen == [1, 2, 3]


def test_refuses_non_loopback_bind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--transport", "http", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "loopback only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "ok"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.10", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_is_loopback_host(host: str, ok: bool) -> None:
    assert is_loopback_host(host) is ok
