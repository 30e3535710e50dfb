"""Hot reload: a changed policy file takes effect without a restart; a broken one changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

from mcp import Client

from tests.guard.test_approval_flow import e2e_policy
from tests.support import demo_http_cmd, free_port, gateway_cmd, running, write_config


async def tool_names(url: str) -> set[str]:
    async with Client(url, mode="legacy") as agent:
        return {t.name for t in (await agent.list_tools()).tools}


async def test_changed_policy_is_swapped_in_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    policy = e2e_policy(tmp_path)
    cfg = write_config(
        tmp_path / "t.toml",
        gw_port,
        [{"name": "demo", "transport": "http", "url": f"http://127.0.0.1:{up_port}/mcp"}],
        policy={"file": str(policy)},
    )
    url = f"http://127.0.0.1:{gw_port}/mcp"
    with running(demo_http_cmd(up_port), None), running(gateway_cmd(cfg), f"http://127.0.0.1:{gw_port}/readyz"):
        assert "demo__search_drive" in await tool_names(url)
        text = policy.read_text()
        marker = "  demo:                       # the bundled demo upstream\n    action_control: allow_all\n"
        assert marker in text
        policy.write_text(
            text.replace(marker, marker.replace("allow_all", "custom\n    actions_denied: [search_drive]"))
        )
        deadline = time.monotonic() + 20
        names = await tool_names(url)
        while "demo__search_drive" in names and time.monotonic() < deadline:
            names = await tool_names(url)
        assert "demo__search_drive" not in names, "the new policy was not swapped in"

        policy.write_text("version: 1\nmode: [this is not a mode\n")  # broken: the running policy stays
        audit = tmp_path / "audit.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and '"ok":false' not in (audit.read_text() if audit.exists() else ""):
            await tool_names(url)
        assert '"type":"triplock.config.reloaded"' in audit.read_text()
        assert '"ok":false' in audit.read_text()
        assert "demo__search_drive" not in await tool_names(url)
