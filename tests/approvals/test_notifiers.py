"""Webhook notifications against a real receiver on 127.0.0.1: HMAC, retries, Slack shape."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.notifiers import (
    SIGNATURE_HEADER,
    MultiNotifier,
    RetryPolicy,
    WebhookNotifier,
    notifier_from_env,
    slack_payload,
    verify_signature,
)
from adapters.stores.memory_store import MemoryStore
from gateway.approvals.api import build_routes
from gateway.approvals.core import ApprovalsUISettings, TokenApproverAuth

from .conftest import held_call

SECRET = b"shared-webhook-secret"
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)


class Receiver:
    """A webhook endpoint that answers with scripted statuses and records what it got."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(rec.app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield rec, f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    server.should_exit = True
    await task
    sock.close()


async def test_generic_webhook_is_hmac_signed_json(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    notifier = WebhookNotifier(url, secret=SECRET, retry=FAST)
    approval = held_call()
    task = notifier.approval_requested(approval, "http://127.0.0.1:8080/console")
    assert task is not None and await task is True
    await notifier.aclose()
    [(headers, body)] = rec.requests
    assert headers["content-type"] == "application/json"
    assert headers[SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(b"other-secret", body, headers[SIGNATURE_HEADER.lower()])
    assert not verify_signature(SECRET, body + b" ", headers[SIGNATURE_HEADER.lower()])
    assert headers["x-triplock-event"] == "approval.requested"
    data = json.loads(body)
    assert data["type"] == "approval.requested" and isinstance(data["sent_at"], float)
    assert data["approval"]["id"] == approval.id and data["approval"]["legs_after"] == "PUE"
    assert data["approve_url"] == f"http://127.0.0.1:8080/console/approvals/{approval.id}"
    assert "arguments" not in data["approval"] and "<script>" not in body.decode()  # arguments stay home


async def test_retries_after_a_500_then_delivers(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.statuses = [500, 503]
    notifier = WebhookNotifier(url, secret=SECRET, retry=FAST)
    task = notifier.approval_requested(held_call(), "http://127.0.0.1/console")
    assert task is not None and await task is True
    await notifier.aclose()
    assert len(rec.requests) == 3
    # The same signed body each time, so the receiver can de-duplicate by delivery id.
    assert len({body for _, body in rec.requests}) == 1
    assert len({h["x-triplock-delivery"] for h, _ in rec.requests}) == 1
    assert all(verify_signature(SECRET, body, h[SIGNATURE_HEADER.lower()]) for h, body in rec.requests)


async def test_gives_up_after_the_attempts_and_never_retries_a_4xx(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.statuses = [500] * 10
    notifier = WebhookNotifier(url, retry=RetryPolicy(attempts=3, base=0.01, cap=0.02))
    task = notifier.approval_requested(held_call(), "http://127.0.0.1/console")
    assert task is not None and await task is False
    assert len(rec.requests) == 3
    rec.statuses, rec.requests = [400], []
    task = notifier.approval_requested(held_call(), "http://127.0.0.1/console")
    assert task is not None and await task is False
    assert len(rec.requests) == 1
    await notifier.aclose()


async def test_a_dead_receiver_neither_blocks_nor_loses_the_approval(store: MemoryStore) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    approval = held_call()
    await store.create_approval(approval)
    notifier = WebhookNotifier(dead, secret=SECRET, retry=FAST)
    task = notifier.approval_requested(approval, "http://127.0.0.1/console")
    assert task is not None and not task.done()  # returned at once; delivery runs in the background
    stored = await store.get_approval(approval.id)
    assert stored is not None and stored.state == "pending"
    assert await task is False
    await notifier.aclose()
    assert (await store.get_approval(approval.id)).state == "pending"  # type: ignore[union-attr]


async def test_slack_payload_shape_and_escaping(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    approval = held_call(principal="<!channel> agent", tool="send_email")
    payload = slack_payload("approval.requested", approval, "https://gw.example/console")
    assert isinstance(payload["text"], str) and approval.id in payload["text"]
    types = [b["type"] for b in payload["blocks"]]
    assert types == ["section", "context", "actions"]
    assert payload["blocks"][0]["text"]["type"] == "mrkdwn"
    button = payload["blocks"][2]["elements"][0]
    assert button["type"] == "button" and button["url"] == f"https://gw.example/console/approvals/{approval.id}"
    assert "<!channel>" not in json.dumps(payload) and "&lt;!channel&gt;" in payload["text"]

    notifier = WebhookNotifier(url, format="slack", retry=FAST)
    task = notifier.approval_requested(approval, "https://gw.example/console")
    assert task is not None and await task is True
    await notifier.aclose()
    [sent] = rec.bodies()
    assert set(sent) == {"text", "blocks"}


async def test_decisions_made_through_the_api_are_announced(store: MemoryStore,
                                                            receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    notifier = WebhookNotifier(url, secret=SECRET, retry=FAST)
    multi = MultiNotifier([notifier])
    settings = ApprovalsUISettings(auth=TokenApproverAuth({"alice": "t-alice"}))
    app = Starlette(routes=build_routes(store, settings, notifier=multi))
    approval = held_call()
    await store.create_approval(approval)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.post(f"/api/approvals/{approval.id}/approve", headers={"Authorization": "Bearer t-alice"},
                         json={"reason": "ok"})
    assert r.status_code == 200
    await notifier.drain(5)
    await multi.aclose()
    [event] = rec.bodies()
    assert event["type"] == "approval.approved" and event["approval"]["decided_by"] == "alice"


def test_notifier_from_env() -> None:
    assert notifier_from_env({}) is None
    multi = notifier_from_env({"TRIPLOCK_WEBHOOK_URL": "http://127.0.0.1:1/h", "TRIPLOCK_WEBHOOK_SECRET": "s",
                               "TRIPLOCK_SLACK_WEBHOOK_URL": "http://127.0.0.1:1/s"})
    assert multi is not None
    formats = [(n.format, n.secret) for n in multi.notifiers]
    assert formats == [("json", b"s"), ("slack", None)]
    asyncio.run(multi.aclose())
