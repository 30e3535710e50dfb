"""The console in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Log in, see a held call whose arguments carry script payloads shown as text, approve it, and
see both the store and the page change, while a task standing in for the agent's held call
(``wait_decided``, as the pipeline does) wakes with the decision. Then live updates: a new
held call appears without a reload, and a decision taken elsewhere flips the open page.
Phone width (375 px) throughout.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from adapters.stores.memory_store import MemoryStore

from .conftest import TOKENS, XSS_ARGS, LiveServer, Recorder, held_call

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(10_000)
    pg = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert dialogs == [], f"a script ran: {dialogs}"
    assert errors == [], f"console errors (CSP violations?): {errors}"


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"page is {width}px wide at a 375px viewport"


def log_in(page: Page, url: str, name: str = "alice") -> None:
    page.goto(url)
    expect(page.get_by_role("heading", name="Approver login")).to_be_visible()
    page.get_by_label("Approver token").fill(TOKENS[name])
    page.get_by_role("button", name="Log in").click()


def test_approve_a_held_call_in_the_browser(live: tuple[LiveServer, MemoryStore, Recorder],
                                            page: Page) -> None:
    server, store, recorder = live
    approval = held_call(arguments=XSS_ARGS)
    server.run(store.create_approval(approval))
    agent_waiting = server.submit(store.wait_decided(approval.id, 60))  # the agent's held call

    log_in(page, f"{server.url}/console")
    expect(page.get_by_test_id("approver")).to_have_text("alice")
    item = page.locator(f'[data-approval-id="{approval.id}"]')
    expect(item).to_contain_text("demo")
    expect(item).to_contain_text("agent-7")
    expect(page.get_by_test_id("pending-count")).to_have_text("1 pending")
    no_horizontal_scroll(page)

    item.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/console/approvals/{approval.id}$"))
    args = page.get_by_test_id("arguments")
    for text in XSS_ARGS.values():
        expect(args).to_contain_text(json.dumps(text)[1:-1])  # shown literally, as (JSON) text
    assert args.locator("script, img").count() == 0
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 1  # only /console/static/console.js
    assert page.evaluate("window.__xss") is None
    expect(page.get_by_test_id("rule-trail")).to_contain_text("trifecta.complete")
    expect(page.get_by_test_id("history")).to_contain_text("demo__read_inbox")
    expect(page.get_by_test_id("history")).to_contain_text("<b>3 messages</b>")
    expect(page.get_by_test_id("state")).to_contain_text("Pending")
    no_horizontal_scroll(page)

    expect(page.get_by_role("radio", name="This exact call, once")).to_be_checked()  # the default scope
    page.get_by_label("Reason").fill("Expected: quarterly report to the auditor")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.get_by_test_id("flash")).to_contain_text("Approved")
    expect(page.get_by_test_id("state")).to_contain_text("Approved")
    expect(page.get_by_test_id("decided-by")).to_have_text("alice")
    expect(page.get_by_test_id("decided-reason")).to_have_text("Expected: quarterly report to the auditor")
    expect(page.get_by_test_id("decided-scope")).to_have_text(
        "Covers: this exact call, once (from any session of this principal)")
    expect(page.get_by_role("button", name="Approve", exact=True)).to_have_count(0)

    stored = server.run(store.get_approval(approval.id))
    assert stored is not None and (stored.state, stored.decided_by, stored.scope) == ("approved", "alice", "once")
    woken = agent_waiting.result(10)
    assert woken is not None and woken.state == "approved"
    assert [e for e, _ in recorder.events] == ["triplock.approval.granted"]
    assert page.evaluate("window.__xss") is None


def test_approve_for_a_principal_and_tool_for_minutes(live: tuple[LiveServer, MemoryStore, Recorder],
                                                      page: Page) -> None:
    server, store, recorder = live
    approval = held_call()
    server.run(store.create_approval(approval))
    stamped = server.run(store.mark_abandoned(approval.id, time.time()))  # the agent cancelled its call
    log_in(page, f"{server.url}/console")
    item = page.locator(f'[data-approval-id="{approval.id}"]')
    expect(item.get_by_test_id("abandoned")).to_contain_text("stopped waiting at")
    item.get_by_role("link").click()
    expect(page.get_by_test_id("abandoned")).to_contain_text(
        "approving lets the identical call, repeated, run once")
    page.get_by_role("radio", name="Any call of").check()
    page.get_by_role("spinbutton", name="Minutes").fill("10")
    page.get_by_label("Reason").fill("a batch of mails for the next ten minutes")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.get_by_test_id("decided-scope")).to_have_attribute("data-scope", "principal_tool")
    expect(page.get_by_test_id("decided-scope")).to_contain_text("any call of demo/send_email by agent-7")
    stored = server.run(store.get_approval(approval.id))
    assert stored is not None and stored.decided_at is not None and stamped is not None
    assert (stored.scope, stored.scope_until, stored.abandoned_at) == (
        "principal_tool", stored.decided_at + 600, stamped.abandoned_at)
    granted = [f for e, f in recorder.events if e == "triplock.approval.granted"]
    assert [(f["scope"], f["scope_until"]) for f in granted] == [("principal_tool", stored.decided_at + 600)]
    page.get_by_role("link", name="All pending calls").click()
    standing = page.get_by_test_id("standing").locator(f'[data-approval-id="{approval.id}"]')
    expect(standing).to_have_attribute("data-scope", "principal_tool")


def test_live_updates(live: tuple[LiveServer, MemoryStore, Recorder], page: Page) -> None:
    server, store, _ = live
    log_in(page, f"{server.url}/console")
    expect(page.get_by_test_id("no-pending")).to_be_visible()

    fresh = held_call(arguments={"to": "<svg onload=alert(3)>"})
    server.run(store.create_approval(fresh))
    item = page.locator(f'[data-approval-id="{fresh.id}"]')
    expect(item).to_be_visible()  # arrived by the fragment poll, no reload
    expect(page.get_by_test_id("pending-count")).to_have_text("1 pending")

    item.get_by_role("link").click()
    expect(page.get_by_test_id("arguments")).to_contain_text("<svg onload=alert(3)>")
    page.get_by_label("Reason").fill("half-typed")
    # Another approver denies it elsewhere (the REST API, the CLI or another process).
    outcome = server.run(store.decide(fresh.id, False, "bob", "not today", time.time()))
    assert outcome.status == "denied"
    expect(page.get_by_test_id("state")).to_contain_text("Denied")
    expect(page.get_by_test_id("decided-by")).to_have_text("bob")
    expect(page.get_by_role("button", name="Deny")).to_have_count(0)

    page.get_by_role("link", name="All pending calls").click()
    expect(page.get_by_test_id("no-pending")).to_be_visible()


def test_deep_link_survives_login(live: tuple[LiveServer, MemoryStore, Recorder], page: Page) -> None:
    server, store, _ = live
    approval = held_call()
    server.run(store.create_approval(approval))
    log_in(page, f"{server.url}/console#{approval.id}")  # the link the agent's error message gives
    expect(page).to_have_url(re.compile(rf"/console/approvals/{approval.id}$"))
    expect(page.get_by_test_id("state")).to_contain_text("Pending")
