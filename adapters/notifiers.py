"""Tell approvers a call is waiting: a signed generic webhook and Slack incoming webhooks.

Implements :class:`gateway.approvals.core.Notifier`. Delivery runs in a background task with
retries (exponential backoff with jitter on 5xx, 429 and connection errors), so a slow or dead
receiver never delays the held call and never loses the approval: the approval is already in the
store before anyone is notified, and the console and REST API show it either way.

Generic webhook: a JSON body and ``X-Triplock-Signature: sha256=<hex HMAC-SHA256(secret, body)>``
(plus ``X-Triplock-Event`` and ``X-Triplock-Delivery``). The body carries ``sent_at`` inside the
signed bytes so receivers can refuse replays. Tool arguments are left out unless
``include_arguments`` is set: they may hold secrets, and chat channels are not the place for them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from gateway.ports.records import PendingApproval, legs_text

log = logging.getLogger("triplock.notify")

SIGNATURE_HEADER = "X-Triplock-Signature"
Format = Literal["json", "slack"]


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """For receivers: True when ``header`` is the signature of exactly ``body``."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def approval_link(console_url: str, approval_id: str) -> str:
    return f"{console_url.rstrip('/')}/approvals/{approval_id}"


def event_payload(event: str, approval: PendingApproval, console_url: str, *,
                  include_arguments: bool = False) -> dict[str, Any]:
    """The generic JSON body for one event."""
    body: dict[str, Any] = {
        "type": event,
        "sent_at": time.time(),
        "approval": {
            "id": approval.id, "state": approval.state, "principal": approval.principal,
            "session_id": approval.session_id, "upstream": approval.upstream, "tool": approval.tool,
            "exposed_name": approval.exposed_name, "category": approval.category,
            "legs_before": legs_text(approval.legs_before), "legs_after": legs_text(approval.legs_after),
            "rule_ids": list(approval.rule_ids), "reasons": list(approval.reasons),
            "args_hash": approval.args_hash, "policy_revision": approval.policy_revision,
            "created_at": approval.created_at, "expires_at": approval.expires_at,
            "decided_by": approval.decided_by, "decided_at": approval.decided_at, "reason": approval.reason,
        },
        "approve_url": approval_link(console_url, approval.id),
    }
    if include_arguments:
        body["approval"]["arguments"] = approval.args_preview
    return body


def _slack_escape(text: str) -> str:
    # Slack mrkdwn treats <...> as links and mentions; escaping stops a tool or principal name
    # from smuggling a fake link or an @channel ping into the approvers' channel.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: str, approval: PendingApproval, console_url: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` fallback plus Block Kit blocks."""
    name = _slack_escape(approval.exposed_name or f"{approval.upstream}/{approval.tool}")
    who = _slack_escape(approval.principal)
    link = approval_link(console_url, approval.id)
    if event == "approval.requested":
        headline = f"Approval needed: `{name}` for {who}"
    else:
        headline = (f"{approval.state.capitalize()}: `{name}` for {who}"
                    f" by {_slack_escape(approval.decided_by or 'the gateway')}")
    reasons = "; ".join(_slack_escape(r) for r in approval.reasons) or "policy"
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(approval.expires_at))
    legs = legs_text(approval.legs_after) or "none"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*\n{reasons}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"upstream {_slack_escape(approval.upstream)} · legs {legs} · id {approval.id} · expires {until}")}]},
    ]
    if event == "approval.requested":
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Review in console"}, "url": link,
            "style": "primary"}]})
    return {"text": f"{headline} ({link})", "blocks": blocks}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base * 2**n`` capped at ``cap``, with full jitter above half."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        raw = min(self.cap, self.base * (2 ** attempt))
        return raw / 2 + random.uniform(0, raw / 2)  # jitter: many gateways don't retry in lockstep


class WebhookNotifier:
    """POSTs events to one URL, in the generic signed JSON or the Slack format."""

    def __init__(self, url: str, *, secret: bytes | None = None, format: Format = "json",
                 retry: RetryPolicy | None = None, timeout: float = 5.0, include_arguments: bool = False,
                 client: httpx.AsyncClient | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if format == "json" and not secret:
            # Still sent, so a misconfiguration does not silence approvals, but receivers cannot
            # tell these requests from forgeries.
            log.warning("generic webhook %s has no signing secret", httpx.URL(url).host or "?")
        self.url = url
        self.secret = secret
        self.format = format
        self.retry = retry or RetryPolicy()
        self.include_arguments = include_arguments
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._owns_client = client is None
        self._sleep = sleep
        self._tasks: set[asyncio.Task[bool]] = set()

    # -- gateway.approvals.core.Notifier ----------------------------------------------------------

    def approval_requested(self, approval: PendingApproval, console_url: str) -> asyncio.Task[bool] | None:
        """Schedule delivery and return at once; the task's result says whether it was delivered."""
        return self._spawn("approval.requested", approval, console_url)

    def approval_decided(self, approval: PendingApproval, console_url: str) -> asyncio.Task[bool] | None:
        return self._spawn(f"approval.{approval.state}", approval, console_url)

    # -- delivery ---------------------------------------------------------------------------------

    def payload(self, event: str, approval: PendingApproval, console_url: str) -> dict[str, Any]:
        if self.format == "slack":
            return slack_payload(event, approval, console_url)
        return event_payload(event, approval, console_url, include_arguments=self.include_arguments)

    def _spawn(self, event: str, approval: PendingApproval, console_url: str) -> asyncio.Task[bool] | None:
        try:
            body = json.dumps(self.payload(event, approval, console_url), separators=(",", ":")).encode()
            task = asyncio.get_running_loop().create_task(self.deliver(event, body))
        except Exception:  # never let notification trouble reach the caller holding the call
            log.exception("could not schedule %s notification for %s", event, approval.id)
            return None
        self._tasks.add(task)  # keep a reference: the loop only holds tasks weakly
        task.add_done_callback(self._tasks.discard)
        return task

    async def deliver(self, event: str, body: bytes) -> bool:
        """POST ``body`` with retries; True once a 2xx arrives, False after giving up."""
        headers = {"Content-Type": "application/json", "User-Agent": "triplock-notifier",
                   "X-Triplock-Event": event, "X-Triplock-Delivery": os.urandom(8).hex()}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        for attempt in range(self.retry.attempts):
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                if response.status_code < 500 and response.status_code != 429:
                    log.error("webhook %s refused %s with HTTP %d; not retrying", self._where(), event,
                              response.status_code)
                    return False
                problem = f"HTTP {response.status_code}"
            if attempt + 1 < self.retry.attempts:
                delay = self.retry.delay(attempt)
                log.warning("webhook %s failed (%s); retry %d in %.2fs", self._where(), problem, attempt + 1, delay)
                await self._sleep(delay)
        log.error("webhook %s: giving up on %s after %d attempts", self._where(), event, self.retry.attempts)
        return False

    def _where(self) -> str:
        # Slack webhook URLs are credentials: log the host only.
        return httpx.URL(self.url).host or "?"

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for deliveries in flight (at shutdown, or in tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give deliveries in flight ``timeout`` seconds, cancel the rest, close the client."""
        await self.drain(timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._owns_client:
            await self._client.aclose()


class MultiNotifier:
    """Fans each event out to several notifiers; one failing does not stop the others."""

    def __init__(self, notifiers: Iterable[Any]) -> None:
        self.notifiers = list(notifiers)

    def approval_requested(self, approval: PendingApproval, console_url: str) -> None:
        for n in self.notifiers:
            try:
                n.approval_requested(approval, console_url)
            except Exception:
                log.exception("notifier %r failed", n)

    def approval_decided(self, approval: PendingApproval, console_url: str) -> None:
        for n in self.notifiers:
            try:
                n.approval_decided(approval, console_url)
            except Exception:
                log.exception("notifier %r failed", n)

    async def aclose(self) -> None:
        for n in self.notifiers:
            close = getattr(n, "aclose", None)
            if close is not None:
                await close()


def notifier_from_env(environ: dict[str, str] | None = None) -> MultiNotifier | None:
    """Notifiers configured by env: TRIPLOCK_WEBHOOK_URL (+ TRIPLOCK_WEBHOOK_SECRET), TRIPLOCK_SLACK_WEBHOOK_URL."""
    env = dict(os.environ if environ is None else environ)
    found: list[WebhookNotifier] = []
    if env.get("TRIPLOCK_WEBHOOK_URL"):
        secret = env.get("TRIPLOCK_WEBHOOK_SECRET")
        found.append(WebhookNotifier(env["TRIPLOCK_WEBHOOK_URL"], secret=secret.encode() if secret else None))
    if env.get("TRIPLOCK_SLACK_WEBHOOK_URL"):
        found.append(WebhookNotifier(env["TRIPLOCK_SLACK_WEBHOOK_URL"], format="slack"))
    return MultiNotifier(found) if found else None
