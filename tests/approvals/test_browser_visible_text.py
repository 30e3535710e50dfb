"""What an approver sees in real headless Chromium cannot be disguised by the agent's text.

A held call whose tool name carries a right-to-left override, whose arguments mix a Cyrillic
``\u0430`` into ``example.com`` and hide zero-width and escape characters: the page shows markers and
the punycode, and the override reorders nothing (each character's on-screen position is checked
against its logical order, no screenshot).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from adapters.stores.memory_store import MemoryStore

from .conftest import TOKENS, LiveServer, Recorder, held_call

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RLO = "\u202e"
HOST = "ex\u0430mple.com"  # Cyrillic a

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package")

# Every rendered character under an element, in logical (DOM) order: [line top, left x, character].
CHAR_BOXES = """el => {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const out = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const box = range.getBoundingClientRect();
      if (box.width > 0) out.push([Math.round(box.bottom), box.left, node.data[i]]);
    }
  }
  return out;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    yield pg
    context.close()


def assert_displayed_in_logical_order(page: Page, test_id: str) -> None:
    """No character is drawn left of the one before it on its line: nothing was reordered."""
    boxes: list[list[Any]] = page.get_by_test_id(test_id).evaluate(CHAR_BOXES)
    assert len(boxes) > 5
    for (line_a, x_a, ch_a), (line_b, x_b, ch_b) in pairwise(boxes):
        if line_a == line_b:
            assert x_b >= x_a, f"{ch_b!r} is drawn left of {ch_a!r} in {test_id}: the text was reordered"


def test_bidi_zero_width_escapes_and_look_alike_hosts_are_shown(
        live: tuple[LiveServer, MemoryStore, Recorder], page: Page) -> None:
    server, store, _ = live
    approval = held_call(tool=f"send{RLO}liam.exe", principal="agent\u200b-7",
                         arguments={"to": f"boss@{HOST}", "file": f"invoice{RLO}fdp.exe", "x": "\x1b[2J"})
    server.run(store.create_approval(approval))

    page.goto(f"{server.url}/console")
    page.get_by_label("Approver token").fill(TOKENS["alice"])
    page.get_by_role("button", name="Log in").click()
    card = page.locator(f'[data-approval-id="{approval.id}"]')
    expect(card.locator("a.title")).to_have_text("demo / send⟨U+202E⟩liam.exe")
    expect(card).to_contain_text("agent⟨U+200B⟩-7")

    card.locator("a.title").click()
    expect(page.get_by_test_id("tool-name")).to_have_text("send⟨U+202E⟩liam.exe")
    marker = page.get_by_test_id("tool-name").locator("[data-vt=hidden]")
    assert marker.get_attribute("title") == "RIGHT-TO-LEFT OVERRIDE"
    assert marker.evaluate("e => getComputedStyle(e).backgroundColor") != page.get_by_test_id(
        "tool-name").evaluate("e => getComputedStyle(e).backgroundColor")  # styled apart from the text
    expect(page.get_by_test_id("principal")).to_have_text("agent⟨U+200B⟩-7")
    args = page.get_by_test_id("arguments")
    expect(args).to_contain_text('"file": "invoice⟨U+202E⟩fdp.exe"')
    expect(args).to_contain_text('"x": "\\u001b[2J"')  # JSON already escapes C0 controls
    expect(args).to_contain_text(
        f'"to": "boss@{HOST} ⟨xn--exmple-4nf.com · mixes Cyrillic+Latin · looks like example.com⟩"')
    expect(args.locator("[data-vt=host]")).to_have_attribute("title", "xn--exmple-4nf.com")
    body_text = page.evaluate("document.body.textContent")
    assert RLO not in body_text and "\u200b" not in body_text and page.title().startswith("demo / send⟨U+202E⟩")

    for test_id in ("tool-name", "arguments", "tool"):
        assert_displayed_in_logical_order(page, test_id)
