"""Cross-site requests and DNS rebinding against a real `triplock serve`, from real headless Chromium.

The gateway runs in local development mode (``auth.mode = "none"``), where every request is the
local developer with every role: only the Host/Origin/cross-site-write guard stands between a web
page the developer visits and ``POST /api/suspensions``.

* A page served from another loopback port does ``fetch(gateway, {mode: "no-cors"})`` (the request
  a page can send without a CORS preflight): nothing is suspended.
* DNS rebinding: Chromium resolves ``rebind.test`` to 127.0.0.1 (``--host-resolver-rules``), as an
  attacker's DNS would after the page loaded. The page then is same-origin with the gateway and
  could send JSON; the Host check refuses every request.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support import free_port, gateway_cmd, running, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP rebind.test 127.0.0.1"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package")

ATTACK_PAGE = b"""<!doctype html><html><body><p>cute cats</p><script>
window.attack = async function (target) {
  const results = [];
  for (const body of [JSON.stringify({target: "agent:victim", reason: "csrf"})]) {
    // What any page may send cross-origin without a preflight: a no-cors POST (text/plain body).
    try {
      await fetch(target + "/api/suspensions", {method: "POST", mode: "no-cors", body: body,
                                                headers: {"Content-Type": "application/json"}});
      results.push("sent");
    } catch (e) { results.push("error " + e); }
  }
  return results;
};
</script></body></html>"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("origin-browser")
    port = free_port()
    cfg = write_config(tmp / "triplock.toml", port, [])
    base = f"http://127.0.0.1:{port}"
    with running(gateway_cmd(cfg), base + "/healthz"):
        yield base, port


class LoopbackSite:
    """A plain web server on another loopback port: serves the attack page, records POSTs it receives."""

    def __init__(self) -> None:
        self.posts: list[dict[str, str]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(ATTACK_PAGE)))
                self.end_headers()
                self.wfile.write(ATTACK_PAGE)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                site.posts.append({**{k.lower(): v for k, v in self.headers.items()}, "body": body.decode()})
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[LoopbackSite, LoopbackSite]]:
    """The attacker's page, and a recorder on a third port that shows what such a fetch carries."""
    attacker, recorder = LoopbackSite(), LoopbackSite()
    try:
        yield attacker, recorder
    finally:
        attacker.close()
        recorder.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def suspensions(base: str) -> list[str]:
    return list(httpx.get(base + "/api/suspensions", timeout=10).json()["suspensions"])


def test_no_cors_post_from_another_loopback_port_suspends_nothing(
        gateway: tuple[str, int], sites: tuple[LoopbackSite, LoopbackSite], browser: Browser) -> None:
    base, port = gateway
    attacker, recorder = sites
    page = browser.new_page()
    page.goto(attacker.url)
    for target in (recorder.url, base, f"http://localhost:{port}"):
        assert page.evaluate("t => window.attack(t)", target) == ["sent"]
    page.close()
    # What Chromium sends for it (seen by the recorder): text/plain (the JSON header was dropped),
    # the JSON body, the attacker's origin. The gateway received the same and suspended nothing.
    (seen,) = recorder.posts
    assert (seen["content-type"], seen["origin"], seen["sec-fetch-mode"], seen["body"]) == (
        "text/plain;charset=UTF-8", attacker.url, "no-cors", '{"target":"agent:victim","reason":"csrf"}')
    assert suspensions(base) == []


def test_dns_rebinding_is_refused_on_every_route(gateway: tuple[str, int], browser: Browser) -> None:
    base, port = gateway
    page = browser.new_page()
    for path in ("/console", "/api/approvals", "/api/suspensions", "/healthz", "/metrics"):
        response = page.goto(f"http://rebind.test:{port}{path}")
        assert response is not None and response.status == 421, path
    # Now same-origin with the gateway (as the page would be after rebinding), so JSON is allowed by
    # the browser; the gateway refuses the request for its Host.
    status = page.evaluate("""async () => (await fetch("/api/suspensions", {method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({target: "agent:victim"})})).status""")
    assert status == 421
    mcp = page.evaluate("""async () => (await fetch("/mcp", {method: "POST",
        headers: {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
        body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "ping"})})).status""")
    assert mcp == 421
    page.close()
    assert suspensions(base) == []
