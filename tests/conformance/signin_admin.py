"""The admin's part of an authorization code upstream, played for the conformance client scenarios.

Asks a running Triplock for the upstream's authorization URL (``POST /api/upstreams/NAME/authorize``,
what ``triplock upstreams authorize`` calls) and opens it in real headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright as tests/approvals/test_browser.py does). The scenario's
authorization server redirects at once, so the browser lands on Triplock's callback page; its
title says whether the upstream is connected.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


class SignInFailed(Exception):
    """The sign-in did not end with "Connected" (the message says what the gateway answered)."""


def authorization_url(base: str, upstream: str, token: str | None = None) -> str:
    """The URL the admin opens, from Triplock's admin API."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    resp = httpx.post(f"{base}/api/upstreams/{upstream}/authorize", json={}, headers=headers, timeout=30.0)
    body: Any = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code != 200:
        raise SignInFailed(f"authorize answered HTTP {resp.status_code}: {body.get('error_description', resp.text)}")
    return str(body["authorization_url"])


def open_in_browser(url: str, timeout: float = 20.0) -> tuple[str, str]:
    """Open ``url`` in headless Chromium and follow it to its end; (page title, page text)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url, timeout=timeout * 1000, wait_until="load")
            return page.title(), page.inner_text("body")
        finally:
            browser.close()


def sign_in(base: str, upstream: str, token: str | None = None) -> str:
    """Authorize ``upstream`` as an admin would; the callback page's text. SignInFailed unless connected."""
    title, text = open_in_browser(authorization_url(base, upstream, token))
    if title != "Triplock: Connected":
        raise SignInFailed(f"{title}: {text.strip()}")
    return text


def wait_needs_sign_in(base: str, upstream: str, seconds: float = 10.0) -> None:
    """Wait until Triplock has tried the upstream once (readyz names it), so its challenge is known."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            body = httpx.get(f"{base}/readyz", timeout=1.0).json()
            error = (body.get("upstreams", {}).get(upstream) or {}).get("error") or ""
            if body.get("status") == "ready" or (error and error != "not connected yet"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)  # polling interval; readiness is re-read each round
