"""The console over HTTP: login, cookies, CSRF, escaping, headers, decisions, fragments."""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.applications import Starlette

from adapters.stores.memory_store import MemoryStore
from gateway.approvals.api import build_routes
from gateway.approvals.console import pretty_arguments
from gateway.approvals.console_session import COOKIE_NAME

from .conftest import TOKENS, Recorder, held_call, ui_settings

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def login(client: httpx.AsyncClient, name: str = "alice") -> str:
    """Log in through the form; returns the CSRF token of the logged-in session."""
    page = await client.get("/console")
    r = await client.post("/console/login", data={"csrf": csrf_of(page.text), "token": TOKENS[name]})
    assert r.status_code == 303, r.text
    return csrf_of((await client.get("/console")).text)


async def test_login_page_sets_a_strict_httponly_cookie_and_csp(client: httpx.AsyncClient) -> None:
    r = await client.get("/console")
    assert r.status_code == 200 and "Approver login" in r.text
    cookie = r.headers["set-cookie"].lower()
    for attr in ("httponly", "samesite=strict", "path=/console"):
        assert attr in cookie
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    # No inline script anywhere: the only script tag loads the static file.
    assert re.findall(r"<script[^>]*>", r.text) == ['<script src="/console/static/console.js" defer>']
    js = await client.get("/console/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/console/static/../approvals_api.py")).status_code == 404


async def test_login_requires_csrf_and_a_valid_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/console")
    token = csrf_of(page.text)
    r = await client.post("/console/login", data={"token": TOKENS["alice"]})
    assert r.status_code == 403
    r = await client.post("/console/login", data={"csrf": "forged", "token": TOKENS["alice"]})
    assert r.status_code == 403
    r = await client.post("/console/login", data={"csrf": token, "token": "wrong"})
    assert r.status_code == 401 and "not valid" in r.text
    r = await client.post("/console/login", data={"csrf": token, "token": TOKENS["alice"]},
                          headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = await client.post("/console/login", data={"csrf": token, "token": TOKENS["alice"]},
                          headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = await client.post("/console/login", data={"csrf": token, "token": TOKENS["alice"]},
                          headers={"Origin": "http://127.0.0.1"})
    assert r.status_code == 303 and r.headers["location"] == "/console"
    home = await client.get("/console")
    assert "Held calls waiting for you" in home.text and ">alice<" in home.text
    # The session got a new nonce at login, so the pre-login token no longer works.
    assert csrf_of(home.text) != token
    assert (await client.post("/console/logout", data={"csrf": token})).status_code == 403


async def test_a_fresh_client_without_cookie_cannot_post(client: httpx.AsyncClient, store: MemoryStore) -> None:
    a = held_call()
    await store.create_approval(a)
    r = await client.post(f"/console/approvals/{a.id}/decide", data={"csrf": "x", "action": "approve", "reason": "r"})
    assert r.status_code == 403
    assert (await store.get_approval(a.id)).state == "pending"  # type: ignore[union-attr]


async def test_forged_or_tampered_cookie_is_anonymous(client: httpx.AsyncClient) -> None:
    await login(client)
    value = client.cookies.get(COOKIE_NAME, path="/console")
    assert value
    head, body, sig = value.split(".")
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, f"{head}.{body}.{sig[:-2]}AA", domain="127.0.0.1", path="/console")
    r = await client.get("/console")
    assert "Approver login" in r.text


async def test_detail_escapes_attacker_controlled_arguments(client: httpx.AsyncClient, store: MemoryStore) -> None:
    args = {"to": "x@evil.example", "subject": "<script>alert(1)</script>",
            "body": '"><img src=x onerror=alert(2)>', "sneaky": "pay\u202eliam.com"}
    a = held_call(arguments=args)
    await store.create_approval(a)
    await login(client)
    page = await client.get(f"/console/approvals/{a.id}")
    assert page.status_code == 200
    html = page.text
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "\u202e" not in html and "pay<span class=\"vt-hidden vt-bidi\"" in html  # shown, not obeyed
    assert ">⟨U+202E⟩</span>liam.com" in html
    for fragment in ("trifecta.complete", "category.email_send", "completes the trifecta"):
        assert fragment in html
    listing = await client.get("/console")
    assert a.id in listing.text and "agent-7" in listing.text


async def test_decide_through_the_form(client: httpx.AsyncClient, store: MemoryStore, recorder: Recorder) -> None:
    a = held_call()
    await store.create_approval(a)
    csrf = await login(client, "bob")
    url = f"/console/approvals/{a.id}/decide"
    r = await client.post(url, data={"action": "approve", "reason": "fine"})
    assert r.status_code == 403
    r = await client.post(url, data={"csrf": csrf, "action": "approve", "reason": "  "})
    assert r.status_code == 400 and "Give a reason" in r.text
    r = await client.post(url, data={"csrf": csrf, "action": "nuke", "reason": "x"})
    assert r.status_code == 400
    r = await client.post(url, data={"csrf": csrf, "action": "deny", "reason": "not <b>expected</b>"})
    assert r.status_code == 303 and r.headers["location"] == f"/console/approvals/{a.id}?done=denied"
    done = await client.get(r.headers["location"])
    assert "Denied" in done.text and "not &lt;b&gt;expected&lt;/b&gt;" in done.text
    stored = await store.get_approval(a.id)
    assert stored is not None and (stored.state, stored.decided_by) == ("denied", "bob")
    assert [e for e, _ in recorder.events] == ["triplock.approval.denied"]
    again = await client.post(url, data={"csrf": csrf, "action": "approve", "reason": "changed my mind"})
    assert again.status_code == 409 and "already decided" in again.text


async def test_the_requester_cannot_approve_their_own_call(client: httpx.AsyncClient, store: MemoryStore) -> None:
    a = held_call(principal="agent-7")
    await store.create_approval(a)
    csrf = await login(client, "agent-7")
    r = await client.post(f"/console/approvals/{a.id}/decide", data={"csrf": csrf, "action": "approve", "reason": "me"})
    assert r.status_code == 403 and "cannot decide their own call" in r.text
    assert (await store.get_approval(a.id)).state == "pending"  # type: ignore[union-attr]


async def test_pages_need_a_login(client: httpx.AsyncClient, store: MemoryStore) -> None:
    a = held_call()
    await store.create_approval(a)
    r = await client.get(f"/console/approvals/{a.id}")
    assert r.status_code == 303 and r.headers["location"] == f"/console?next={a.id}"
    login_page = await client.get(r.headers["location"])
    assert f'value="{a.id}"' in login_page.text
    r = await client.post("/console/login", data={"csrf": csrf_of(login_page.text), "token": TOKENS["alice"],
                                                  "next": a.id})
    assert r.headers["location"] == f"/console/approvals/{a.id}"
    assert (await client.get("/console/live/pending")).status_code == 200
    client.cookies.clear()
    assert (await client.get("/console/live/pending")).status_code == 401
    assert (await client.get(f"/console/live/approvals/{a.id}")).status_code == 401


async def test_live_fragments(client: httpx.AsyncClient, store: MemoryStore) -> None:
    await login(client)
    empty = await client.get("/console/live/pending")
    assert "Nothing is waiting" in empty.text and "<html" not in empty.text
    a = held_call()
    await store.create_approval(a)
    assert a.id in (await client.get("/console/live/pending")).text
    state = await client.get(f"/console/live/approvals/{a.id}")
    assert 'data-state="pending"' in state.text
    assert (await client.get("/console/live/approvals/NOPE")).status_code == 404


async def test_session_history_is_shown_escaped_or_reported_missing(store: MemoryStore) -> None:
    a = held_call()
    await store.create_approval(a)

    async def history(session_id: str, principal: str) -> list[dict[str, Any]]:
        assert session_id == a.session_id
        return [{"at": 1_700_000_000, "tool": "demo__read_inbox", "legs": ["P", "U"], "from": "<i>eve</i>"}]

    def broken(session_id: str, principal: str) -> list[dict[str, Any]]:
        raise RuntimeError("boom")

    for provider, expected in ((history, "demo__read_inbox"), (broken, "session history is unavailable"),
                               (None, "not available on this gateway")):
        app = Starlette(routes=build_routes(store, ui_settings(), session_history=provider))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            await login(c)
            html = (await c.get(f"/console/approvals/{a.id}")).text
        assert expected in html
        assert "<i>eve</i>" not in html


def test_pretty_arguments() -> None:
    assert pretty_arguments('{"b":1,"a":[1,2]}') == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'
    assert pretty_arguments("not json") == "not json"
    # Invisible characters are kept here; the template's visible_block filter shows them as markers.
    assert pretty_arguments('{"x":"a\u200bb"}') == '{\n  "x": "a\u200bb"\n}'


async def test_the_form_chooses_a_scope_and_a_bad_one_is_refused(client: httpx.AsyncClient, store: MemoryStore,
                                                                 recorder: Recorder) -> None:
    a, b = held_call(), held_call(tool="post_to_chat")
    for x in (a, b):
        await store.create_approval(x)
    csrf = await login(client, "bob")
    page = (await client.get(f"/console/approvals/{a.id}")).text
    assert '<input type="radio" name="scope" value="once" checked>' in page
    assert 'name="minutes" min="1" max="60" value="15"' in page
    url = f"/console/approvals/{a.id}/decide"
    r = await client.post(url, data={"csrf": csrf, "action": "approve", "reason": "r", "scope": "principal_tool",
                                     "minutes": "0"})
    assert r.status_code == 400
    assert "minutes: minutes must be a whole number from 1 to 60 for scope principal_tool" in r.text
    r = await client.post(url, data={"csrf": csrf, "action": "approve", "reason": "r", "scope": "all"})
    assert r.status_code == 400 and "scope: scope must be one of once, session, principal_tool" in r.text
    assert (await store.get_approval(a.id)).state == "pending"  # type: ignore[union-attr]
    # the minutes field is always in the form: it counts only with principal_tool; a denial ignores the choice
    r = await client.post(url, data={"csrf": csrf, "action": "approve", "reason": "r", "scope": "session",
                                     "minutes": "15"})
    assert r.status_code == 303
    decided = (await client.get(f"/console/approvals/{a.id}")).text
    assert 'data-scope="session"' in decided and "repeatedly, in session sess-1, until" in decided
    r = await client.post(f"/console/approvals/{b.id}/decide", data={
        "csrf": csrf, "action": "deny", "reason": "no", "scope": "principal_tool", "minutes": "5"})
    assert r.status_code == 303
    assert (await store.get_approval(b.id)).scope == "once"  # type: ignore[union-attr]
    listing = (await client.get("/console")).text
    assert 'data-testid="standing"' in listing and f'data-approval-id="{a.id}" data-scope="session"' in listing
    assert [(e, f.get("scope")) for e, f in recorder.events] == [("triplock.approval.granted", "session"),
                                                                 ("triplock.approval.denied", None)]
