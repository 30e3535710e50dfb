"""The REST API under /api/approvals: auth, filters, decisions and their error codes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adapters.stores.memory_store import MemoryStore
from gateway.approvals.core import TokenApproverAuth

from .conftest import Recorder, bearer, held_call


async def test_every_route_needs_an_approver_token(client: httpx.AsyncClient, store: MemoryStore) -> None:
    a = held_call()
    await store.create_approval(a)
    for method, path in [("GET", "/api/approvals"), ("GET", f"/api/approvals/{a.id}"),
                         ("POST", f"/api/approvals/{a.id}/approve"), ("POST", f"/api/approvals/{a.id}/deny")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YWxpY2U6eA=="}):
            r = await client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await store.get_approval(a.id)).state == "pending"  # type: ignore[union-attr]


async def test_list_and_filters(client: httpx.AsyncClient, store: MemoryStore) -> None:
    first = held_call(principal="agent-7", tool="send_email")
    second = held_call(principal="agent-9", tool="post_to_chat", upstream="chat")
    for a in (first, second):
        await store.create_approval(a)
    await store.decide(second.id, False, "alice", "no", time.time())

    r = await client.get("/api/approvals", headers=bearer("alice"))
    assert r.status_code == 200
    assert {a["id"] for a in r.json()["approvals"]} == {first.id, second.id}

    cases = {"state=pending": {first.id}, "state=denied": {second.id}, "upstream=chat": {second.id},
             "tool=send_email": {first.id}, "principal=agent-9": {second.id}, "principal=nobody": set(),
             "state=pending&upstream=chat": set()}
    for query, expected in cases.items():
        r = await client.get(f"/api/approvals?{query}", headers=bearer("alice"))
        assert {a["id"] for a in r.json()["approvals"]} == expected, query

    one = (await client.get("/api/approvals?state=pending", headers=bearer("bob"))).json()["approvals"][0]
    assert one["legs_before"] == "PU" and one["legs_after"] == "PUE"
    assert one["rule_ids"] == ["trifecta.complete", "category.email_send"]
    assert "<script>" in one["args_preview"]  # JSON carries the text; escaping is the renderer's job


async def test_list_rejects_bad_parameters(client: httpx.AsyncClient) -> None:
    for query in ("state=bogus", "limit=0", "limit=abc", "limit=100000"):
        r = await client.get(f"/api/approvals?{query}", headers=bearer("alice"))
        assert r.status_code == 400, query
        assert r.json()["error"] == "bad_request"


async def test_show(client: httpx.AsyncClient, store: MemoryStore) -> None:
    a = held_call()
    await store.create_approval(a)
    r = await client.get(f"/api/approvals/{a.id}", headers=bearer("alice"))
    assert r.status_code == 200
    assert r.json()["id"] == a.id and r.json()["state"] == "pending"
    r = await client.get("/api/approvals/NOPE", headers=bearer("alice"))
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_approve_then_conflict(client: httpx.AsyncClient, store: MemoryStore, recorder: Recorder) -> None:
    a = held_call()
    await store.create_approval(a)
    r = await client.post(f"/api/approvals/{a.id}/approve", headers=bearer("alice"), json={"reason": "expected mail"})
    assert r.status_code == 200
    body = r.json()
    assert (body["state"], body["decided_by"], body["reason"]) == ("approved", "alice", "expected mail")
    stored = await store.get_approval(a.id)
    assert stored is not None and stored.state == "approved"

    for verb in ("approve", "deny"):
        r = await client.post(f"/api/approvals/{a.id}/{verb}", headers=bearer("bob"), json={"reason": "late"})
        assert r.status_code == 409 and r.json()["error"] == "conflict"
        assert r.json()["approval"]["decided_by"] == "alice"

    assert [e for e, _ in recorder.events] == ["triplock.approval.granted"]
    fields = recorder.events[0][1]
    assert fields["approval_id"] == a.id and fields["approver"] == "alice" and fields["reason"] == "expected mail"
    assert [x.id for x in recorder.decided] == [a.id]


async def test_deny_with_reason_and_empty_body(client: httpx.AsyncClient, store: MemoryStore,
                                               recorder: Recorder) -> None:
    a, b = held_call(), held_call(tool="other")
    await store.create_approval(a)
    await store.create_approval(b)
    r = await client.post(f"/api/approvals/{a.id}/deny", headers=bearer("bob"), json={"reason": "outside domain"})
    assert r.status_code == 200 and r.json()["state"] == "denied" and r.json()["reason"] == "outside domain"
    r = await client.post(f"/api/approvals/{b.id}/deny", headers=bearer("bob"))  # no body: no reason
    assert r.status_code == 200 and r.json()["reason"] == ""
    assert [e for e, _ in recorder.events] == ["triplock.approval.denied", "triplock.approval.denied"]


async def test_decide_errors(client: httpx.AsyncClient, store: MemoryStore, recorder: Recorder) -> None:
    own = held_call(principal="alice")
    expired = held_call(ttl=0.001, tool="expired_tool")
    await store.create_approval(own)
    await store.create_approval(expired)

    r = await client.post("/api/approvals/NOPE/approve", headers=bearer("alice"), json={"reason": "x"})
    assert r.status_code == 404
    r = await client.post(f"/api/approvals/{own.id}/approve", headers=bearer("alice"), json={"reason": "mine"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await client.post(f"/api/approvals/{expired.id}/approve", headers=bearer("alice"), json={"reason": "x"})
    assert r.status_code == 409 and r.json()["error"] == "expired"
    for bad in (b"not json", b"[1]", b'{"reason": 5}', b'{"reason": "' + b"x" * 3000 + b'"}'):
        r = await client.post(f"/api/approvals/{own.id}/deny", headers=bearer("bob"), content=bad)
        assert r.status_code == 400, bad
    assert recorder.events == [] and recorder.decided == []
    assert (await store.get_approval(own.id)).state == "pending"  # type: ignore[union-attr]


async def test_racing_approve_and_deny_exactly_one_wins(client: httpx.AsyncClient, store: MemoryStore,
                                                        recorder: Recorder) -> None:
    a = held_call()
    await store.create_approval(a)
    replies = await asyncio.gather(*[
        client.post(f"/api/approvals/{a.id}/{'approve' if i % 2 else 'deny'}",
                    headers=bearer("alice" if i % 2 else "bob"), json={"reason": f"r{i}"})
        for i in range(10)])
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] + [409] * 9
    assert len(recorder.events) == 1


async def test_audit_hook_failure_does_not_undo_the_decision(store: MemoryStore) -> None:
    from starlette.applications import Starlette

    from gateway.approvals.api import build_routes
    from gateway.approvals.core import ApprovalsUISettings

    async def broken_audit(event_type: str, **fields: object) -> None:
        raise RuntimeError("audit sink down")

    settings = ApprovalsUISettings(auth=TokenApproverAuth({"alice": "t-alice"}))
    app = Starlette(routes=build_routes(store, settings, audit=broken_audit))
    a = held_call()
    await store.create_approval(a)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        r = await c.post(f"/api/approvals/{a.id}/approve", headers={"Authorization": "Bearer t-alice"})
    assert r.status_code == 200
    assert (await store.get_approval(a.id)).state == "approved"  # type: ignore[union-attr]


def test_token_parsing() -> None:
    auth = TokenApproverAuth.parse(" alice=one , bob=two,")
    assert len(auth) == 2
    assert asyncio.run(auth.authenticate("two")).name == "bob"  # type: ignore[union-attr]
    assert asyncio.run(auth.authenticate("three")) is None
    assert len(TokenApproverAuth.parse("")) == 0
    for bad in ("alice", "=tok", "alice="):
        try:
            TokenApproverAuth.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


async def test_principal_auth_needs_the_approver_role() -> None:
    from gateway.approvals.core import PrincipalApproverAuth
    from gateway.identity.principal import AuthFailure, Principal

    class FakeAuth:
        async def authenticate(self, headers: dict[str, str]) -> Principal | AuthFailure:
            token = headers["authorization"].removeprefix("Bearer ")
            if token == "approver":
                return Principal(id="carol", roles=frozenset({"approver"}), via="jwt")
            if token == "agent":
                return Principal(id="bot", roles=frozenset({"agents-run"}), via="jwt")
            return AuthFailure(401)

    auth = PrincipalApproverAuth(FakeAuth())
    approver = await auth.authenticate("approver")
    assert approver is not None and (approver.name, approver.via) == ("carol", "jwt")
    assert await auth.authenticate("agent") is None
    assert await auth.authenticate("junk") is None


def test_settings_from_gateway_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.approvals.core import ApprovalsUISettings
    from gateway.config import ApprovalsConfig, ServerConfig, Settings

    monkeypatch.setenv("MY_APPROVERS", "dana=tok-dana")
    monkeypatch.setenv("TRIPLOCK_CONSOLE_SECRET", "s3cret")
    cfg = Settings(server=ServerConfig(port=9123), approvals=ApprovalsConfig(approver_tokens_env="MY_APPROVERS"))
    settings = ApprovalsUISettings.from_settings(cfg)
    assert settings.console_url == "http://127.0.0.1:9123/console"
    assert settings.cookie_secret == b"s3cret" and not settings.cookie_secure
    assert asyncio.run(settings.auth.authenticate("tok-dana")) is not None
    public = Settings(server=ServerConfig(public_url="https://gw.example"), approvals=cfg.approvals)
    assert ApprovalsUISettings.from_settings(public).console_url == "https://gw.example/console"
    assert ApprovalsUISettings.from_settings(public).cookie_secure
    monkeypatch.delenv("TRIPLOCK_CONSOLE_SECRET")
    a, b = ApprovalsUISettings.from_settings(cfg), ApprovalsUISettings.from_settings(cfg)
    assert len(a.cookie_secret) == 32 and a.cookie_secret != b.cookie_secret  # generated per process


async def test_approve_with_a_scope_and_clear_errors_for_bad_ones(client: httpx.AsyncClient, store: MemoryStore,
                                                                 recorder: Recorder) -> None:
    a, b = held_call(), held_call(tool="post_to_chat")
    for x in (a, b):
        await store.create_approval(x)
    bad = {
        '{"scope": "everything"}': ("scope", "scope must be one of once, session, principal_tool"),
        '{"scope": 7}': ("scope", "scope must be one of once, session, principal_tool"),
        '{"scope": "principal_tool"}': ("minutes", "minutes must be a whole number from 1 to 60 for scope "
                                                   "principal_tool"),
        '{"scope": "principal_tool", "minutes": 61}': ("minutes", "minutes must be a whole number from 1 to 60 "
                                                                  "for scope principal_tool"),
        '{"scope": "principal_tool", "minutes": 2.5}': ("minutes", "minutes must be a whole number from 1 to 60 "
                                                                   "for scope principal_tool"),
        '{"scope": "principal_tool", "minutes": true}': ("minutes", "minutes must be a whole number from 1 to 60 "
                                                                    "for scope principal_tool"),
        '{"scope": "session", "minutes": 5}': ("minutes", "minutes applies to scope principal_tool only"),
        '{"minutes": 5}': ("minutes", "minutes applies to scope principal_tool only"),
        '{"reason": 5}': ("reason", "reason must be a string"),
    }
    for body, (field, message) in bad.items():
        r = await client.post(f"/api/approvals/{a.id}/approve", content=body,
                              headers={**bearer("alice"), "content-type": "application/json"})
        assert (r.status_code, r.json()) == (400, {"error": "bad_request", "field": field, "message": message}), body
    r = await client.post(f"/api/approvals/{a.id}/deny", json={"reason": "no", "scope": "session"},
                          headers=bearer("alice"))
    assert (r.status_code, r.json()["field"]) == (400, "scope")
    assert "a denial is final for this call" in r.json()["message"]
    assert (await store.get_approval(a.id)).state == "pending"  # type: ignore[union-attr]
    assert recorder.events == []  # nothing decided, nothing audited

    before = time.time()
    r = await client.post(f"/api/approvals/{a.id}/approve", json={"reason": "ok", "scope": "principal_tool",
                                                                  "minutes": 30}, headers=bearer("alice"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "principal_tool" and body["scope_until"] == body["decided_at"] + 1800
    assert body["expires_at"] == body["scope_until"] and before + 1800 <= body["scope_until"]
    r = await client.post(f"/api/approvals/{b.id}/approve", json={"scope": "session"}, headers=bearer("alice"))
    assert (r.json()["scope"], r.json()["scope_until"], r.json()["abandoned_at"]) == ("session", b.expires_at, None)
    granted = [f for e, f in recorder.events if e == "triplock.approval.granted"]
    assert [(f["approval_id"], f["scope"], f["scope_until"]) for f in granted] == [
        (a.id, "principal_tool", body["scope_until"]), (b.id, "session", b.expires_at)]
