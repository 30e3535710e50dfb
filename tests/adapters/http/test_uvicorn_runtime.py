"""``server.runtime = "uvicorn"``: the same gateway under uvicorn (uvloop + httptools), one process and several."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from mcp import Client

from tests.support import PY, free_port, gateway_cmd, running, write_config

DEMO = {"name": "demo", "transport": "stdio", "command": PY,
        "args": ["-m", "gateway.cli", "demo-upstream", "--transport", "stdio"]}


async def call_demo(port: int) -> tuple[set[str], Any]:
    async with Client(f"http://127.0.0.1:{port}/mcp") as agent:
        names = {t.name for t in (await agent.list_tools()).tools}
        return names, await agent.call_tool("demo__read_inbox", {})


def test_an_mcp_sdk_client_calls_a_tool_through_the_gateway_under_uvicorn(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "gw.toml", port, [DEMO], server={"runtime": "uvicorn"})
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/readyz") as proc:
        names, inbox = asyncio.run(call_demo(port))  # (a sync test: the server under test is uvicorn's)
        assert "demo__read_inbox" in names
        assert not inbox.is_error and "subject" in inbox.content[0].text
    # uvicorn stops gracefully on SIGTERM, then re-raises it: the exit status says what stopped it.
    assert proc.returncode == -signal.SIGTERM and proc.stdout is not None
    log = proc.stdout.read().decode()
    assert "(uvicorn server)" in log and "Uvicorn running on" in log and "Finished server process" in log


def test_uvicorn_runs_several_workers(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "gw.toml", port, [DEMO], server={"runtime": "uvicorn", "workers": 2},
                          audit={"path": str(tmp_path / "audit-{pid}.jsonl")})
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/readyz") as proc:
        # One worker answered ready; the other may still be connecting its upstream: poll, with a deadline.
        ready_in_a_row, deadline = 0, time.monotonic() + 30
        while ready_in_a_row < 6:
            assert time.monotonic() < deadline, "the workers did not all become ready"
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
            ready_in_a_row = ready_in_a_row + 1 if ready else 0
    assert proc.stdout is not None
    log = proc.stdout.read().decode()
    assert log.count("Started server process") == 2, log[-2000:]
