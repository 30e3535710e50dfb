"""Fixtures for the approver-facing tests: a store with held calls, the routes, a live server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from adapters.stores.memory_store import MemoryStore
from gateway.approvals.api import build_routes
from gateway.approvals.core import ApprovalsUISettings, TokenApproverAuth
from gateway.ports.records import PendingApproval

T = TypeVar("T")
TOKENS = {"alice": "tok-alice-0123456789", "bob": "tok-bob-0123456789", "agent-7": "tok-agent7-0123456789"}
XSS_ARGS = {
    "to": "mallory@evil.example",
    "subject": "<script>alert(1)</script>",
    "body": '"><img src=x onerror="window.__xss=1">',
    "note": "</pre><script>window.__xss=2</script>",
}


def ui_settings(poll_seconds: float = 3.0) -> ApprovalsUISettings:
    return ApprovalsUISettings(auth=TokenApproverAuth(TOKENS), console_url="http://127.0.0.1/console",
                               poll_seconds=poll_seconds)


def held_call(principal: str = "agent-7", tool: str = "send_email", arguments: dict[str, Any] | None = None,
              ttl: float = 3600.0, session_id: str = "sess-1", upstream: str = "demo") -> PendingApproval:
    """A pending approval as the pipeline would create it: reads done (P, U), send completes E."""
    return PendingApproval.new(
        principal=principal, session_id=session_id, upstream=upstream, tool=tool,
        arguments=XSS_ARGS if arguments is None else arguments, policy_revision="rev-1", ttl_seconds=ttl,
        category="email_send", legs_before="PU", legs_after="PUE",
        rule_ids=("trifecta.complete", "category.email_send"),
        reasons=("completes the lethal trifecta (P+U+E)", "external send to an outside address"),
    )


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    yield s
    await s.aclose()


class Recorder:
    """An audit hook and a notifier that remember what they were told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.decided: list[PendingApproval] = []

    def __call__(self, event_type: str, **fields: Any) -> None:
        self.events.append((event_type, fields))

    def approval_requested(self, approval: PendingApproval, console_url: str) -> None:
        raise AssertionError("the routes never announce new approvals")

    def approval_decided(self, approval: PendingApproval, console_url: str) -> None:
        self.decided.append(approval)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(store: MemoryStore, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=build_routes(store, ui_settings(), audit=recorder, notifier=recorder))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


class LiveServer:
    """An ASGI app under uvicorn on a loopback port, in a thread with its own event loop.

    The socket is bound and listening before the thread starts, so clients can connect at once
    (the kernel queues them) and no readiness wait is needed.
    """

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self._serve, name="live-server", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run a coroutine on the server's loop (where the store lives) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        """Start a coroutine on the server's loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.loop.close()
        self.sock.close()


@pytest.fixture
def live() -> Iterator[tuple[LiveServer, MemoryStore, Recorder]]:
    """Routes served for real, backed by a MemoryStore living on the server's loop."""
    store = MemoryStore()
    recorder = Recorder()

    def history(session_id: str, principal: str) -> list[dict[str, Any]]:
        return [{"at": 1_700_000_000.0, "tool": "demo__read_inbox", "legs": ["P", "U"],
                 "summary": "<b>3 messages</b> from outside"}]

    app = Starlette(routes=build_routes(store, ui_settings(poll_seconds=0.3), audit=recorder, notifier=recorder,
                                        session_history=history))
    with LiveServer(app) as server:
        server.run(store.start())
        try:
            yield server, store, recorder
        finally:
            server.run(store.aclose())
