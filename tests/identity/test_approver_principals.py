"""Approvers are principals: API keys and IdP tokens approve, one namespace with approver tokens,
per-role approval categories, and the approver principal in the audit.

The approvals routes run with the gateway's real authenticators (API key file, JWTs from a live
fake IdP) and a real MemoryStore; the CLI test talks to them over loopback HTTP.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from adapters.stores.memory_store import MemoryStore
from gateway.approvals.api import build_routes
from gateway.approvals.core import ApprovalsUISettings
from gateway.cli.approvals import register as register_approvals
from gateway.config import AuthConfig, Settings
from gateway.identity.api_keys import KeyStore
from gateway.identity.authenticators import build_authenticator
from gateway.identity.roles import AccessPolicy
from tests.approvals.conftest import LiveServer, Recorder, held_call
from tests.identity.conftest import RESOURCE, jwt_settings
from tests.identity.idp import FakeIdp

APPROVER_TOKENS = "alice=tok-alice-0123456789, ops=tok-ops-0123456789"
ROLES = {
    "agents-run": {"call": ["*"]},
    "approver": {"approve": ["*"], "actions": ["list_approvals"]},
    "mail-approver": {"approve": ["email_*"]},  # may decide held e-mail sends, nothing else
}
GROUPS = {"mail-team": ["mail-approver"], "sso-approvers": ["approver"]}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Harness:
    client: httpx.AsyncClient
    store: MemoryStore
    recorder: Recorder
    keys: dict[str, str]
    idp: FakeIdp
    ui: ApprovalsUISettings

    def key(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def jwt(self, sub: str, groups: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.idp.token(aud=RESOURCE, sub=sub, groups=groups)}"}


def approvals_settings(idp: FakeIdp, keys_file: Path) -> tuple[Settings, AccessPolicy, ApprovalsUISettings]:
    settings = jwt_settings(idp, api_keys_file=keys_file, roles=ROLES, groups=GROUPS)
    access = AccessPolicy.from_config(settings.auth)
    ui = ApprovalsUISettings.from_settings(settings, authenticator=build_authenticator(settings, access),
                                           access=access)
    return settings, access, ui


def make_keys(path: Path) -> dict[str, str]:
    ks = KeyStore(path)
    return {"alice": ks.create("alice", ("approver",))[0], "bob": ks.create("bob", ("approver",))[0],
            "carol": ks.create("carol", ("mail-team",))[0], "agent": ks.create("codex-ci", ("agents-run",))[0]}


@pytest.fixture
async def harness(tmp_path: Path, idp: FakeIdp, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setenv("TRIPLOCK_APPROVER_TOKENS", APPROVER_TOKENS)
    keys = make_keys(tmp_path / "keys.json")
    _, _, ui = approvals_settings(idp, tmp_path / "keys.json")
    store, recorder = MemoryStore(), Recorder()
    await store.start()
    app = Starlette(routes=build_routes(store, ui, audit=recorder, notifier=recorder))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        yield Harness(client, store, recorder, keys, idp, ui)
    await store.aclose()


async def test_nobody_approves_their_own_call_whichever_way_they_log_in(harness: Harness) -> None:
    own = held_call(principal="alice")
    await harness.store.create_approval(own)
    url = f"/api/approvals/{own.id}/approve"
    for headers in (harness.key("alice"), {"Authorization": "Bearer tok-alice-0123456789"}):
        r = await harness.client.post(url, headers=headers, json={"reason": "mine"})
        assert (r.status_code, r.json()["error"], r.json()["message"]) == (
            403, "forbidden", "An approver cannot decide their own call.")
    assert (await harness.store.get_approval(own.id)).state == "pending"  # type: ignore[union-attr]
    # Another principal may, and the audit names it: principal id, how it logged in, its roles.
    r = await harness.client.post(url, headers=harness.key("bob"), json={"reason": "expected"})
    assert (r.status_code, r.json()["decided_by"]) == (200, "bob")
    assert [(e, f["approver"], f["via"], f["approver_roles"], f["principal"]) for e, f in harness.recorder.events] == [
        ("triplock.approval.granted", "bob", "api_key", ["approver"], "alice")]


async def test_approver_token_names_are_principal_ids(harness: Harness) -> None:
    """Token `ops` is principal `ops`: a call held for principal `ops` is its own."""
    call = held_call(principal="ops")
    await harness.store.create_approval(call)
    r = await harness.client.post(f"/api/approvals/{call.id}/deny",
                                  headers={"Authorization": "Bearer tok-ops-0123456789"}, json={"reason": "x"})
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    r = await harness.client.post(f"/api/approvals/{call.id}/deny",
                                  headers={"Authorization": "Bearer tok-alice-0123456789"}, json={"reason": "no"})
    assert (r.status_code, r.json()["decided_by"]) == (200, "alice")
    assert [(f["approver"], f["via"]) for _, f in harness.recorder.events] == [("alice", "token")]


async def test_sso_principals_with_an_approving_role_use_the_api(harness: Harness) -> None:
    call = held_call(principal="codex-ci")
    await harness.store.create_approval(call)
    r = await harness.client.get("/api/approvals", headers=harness.jwt("dana", ["sso-approvers"]))
    assert r.status_code == 200 and [a["id"] for a in r.json()["approvals"]] == [call.id]
    for headers in (harness.jwt("erin", ["engineering"]), harness.key("agent"), {"Authorization": "Bearer junk"}):
        r = await harness.client.get("/api/approvals", headers=headers)
        assert r.status_code == 401, headers
    r = await harness.client.post(f"/api/approvals/{call.id}/approve", headers=harness.jwt("dana", ["sso-approvers"]),
                                  json={"reason": "checked"})
    assert (r.status_code, r.json()["decided_by"]) == (200, "dana")
    assert [(f["approver"], f["via"]) for _, f in harness.recorder.events] == [("dana", "jwt")]


async def test_approval_categories_of_each_role_are_enforced(harness: Harness) -> None:
    mail = held_call(principal="codex-ci", tool="send_email")  # category email_send
    payment = replace(held_call(principal="codex-ci", tool="pay"), category="payment")
    for a in (mail, payment):
        await harness.store.create_approval(a)

    r = await harness.client.get("/api/approvals", headers=harness.key("carol"))
    assert [a["id"] for a in r.json()["approvals"]] == [mail.id]  # payments are not listed for carol
    r = await harness.client.get("/api/approvals", headers=harness.key("bob"))
    assert {a["id"] for a in r.json()["approvals"]} == {mail.id, payment.id}

    r = await harness.client.get(f"/api/approvals/{payment.id}", headers=harness.key("carol"))
    assert (r.status_code, r.json()["error"], r.json()["message"]) == (
        403, "category_forbidden", "Your roles do not allow deciding calls of category 'payment'.")
    for verb in ("approve", "deny"):
        r = await harness.client.post(f"/api/approvals/{payment.id}/{verb}", headers=harness.key("carol"),
                                      json={"reason": "not mine to decide"})
        assert (r.status_code, r.json()["error"]) == (403, "category_forbidden")
    assert (await harness.store.get_approval(payment.id)).state == "pending"  # type: ignore[union-attr]

    r = await harness.client.post(f"/api/approvals/{mail.id}/approve", headers=harness.key("carol"),
                                  json={"reason": "internal report"})
    assert (r.status_code, r.json()["decided_by"]) == (200, "carol")
    assert [(f["approver"], f["approver_roles"]) for _, f in harness.recorder.events] == [
        ("carol", ["mail-approver"])]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def console_login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    page = await client.get("/console")
    return await client.post("/console/login", data={"csrf": csrf_of(page.text), "token": token})


async def test_console_login_with_a_principal_credential(harness: Harness) -> None:
    mail = held_call(principal="codex-ci", tool="send_email")
    payment = replace(held_call(principal="codex-ci", tool="pay"), category="payment")
    for a in (mail, payment):
        await harness.store.create_approval(a)

    r = await console_login(harness.client, harness.keys["agent"])  # an agent's key: no approval rights
    assert r.status_code == 401 and "not valid" in r.text

    r = await console_login(harness.client, harness.keys["carol"])
    assert (r.status_code, r.headers["location"]) == (303, "/console")
    home = await harness.client.get("/console")
    assert ">carol<" in home.text and mail.id in home.text and payment.id not in home.text
    page = await harness.client.get(f"/console/approvals/{payment.id}")
    assert page.status_code == 403 and "deciding calls of category 'payment'.</p>" in page.text
    assert (await harness.client.get(f"/console/live/approvals/{payment.id}")).status_code == 403
    csrf = csrf_of(home.text)
    r = await harness.client.post(f"/console/approvals/{payment.id}/decide",
                                  data={"csrf": csrf, "action": "approve", "reason": "sneaky"})
    assert r.status_code == 403
    assert (await harness.store.get_approval(payment.id)).state == "pending"  # type: ignore[union-attr]
    r = await harness.client.post(f"/console/approvals/{mail.id}/decide",
                                  data={"csrf": csrf, "action": "approve", "reason": "fine"})
    assert r.status_code == 303
    assert [(f["approver"], f["via"], f["approver_roles"]) for _, f in harness.recorder.events] == [
        ("carol", "api_key", ["mail-approver"])]

    # An SSO user pastes their access token once; the signed cookie then carries the principal.
    harness.client.cookies.clear()
    r = await console_login(harness.client, harness.idp.token(aud=RESOURCE, sub="dana", groups=["sso-approvers"]))
    assert r.status_code == 303
    home = await harness.client.get("/console")
    assert ">dana<" in home.text and payment.id in home.text


async def test_local_development_mode_accepts_approver_tokens_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """auth.mode none: every request would be the local developer, so only approver tokens log in."""
    monkeypatch.setenv("TRIPLOCK_APPROVER_TOKENS", APPROVER_TOKENS)
    settings = Settings(auth=AuthConfig(mode="none"))
    access = AccessPolicy.from_config(settings.auth)
    ui = ApprovalsUISettings.from_settings(settings, authenticator=build_authenticator(settings, access),
                                           access=access)
    assert await ui.auth.authenticate("anything at all") is None
    ops = await ui.auth.authenticate("tok-ops-0123456789")
    assert ops is not None and (ops.name, ops.via, ops.roles) == ("ops", "token", frozenset({"approver"}))


@pytest.fixture
def live_principals(tmp_path: Path, idp: FakeIdp,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, MemoryStore, dict[str, str]]]:
    monkeypatch.setenv("TRIPLOCK_APPROVER_TOKENS", APPROVER_TOKENS)
    keys = make_keys(tmp_path / "keys.json")
    _, _, ui = approvals_settings(idp, tmp_path / "keys.json")
    store = MemoryStore()
    with LiveServer(Starlette(routes=build_routes(store, ui))) as server:
        server.run(store.start())
        try:
            yield server, store, keys
        finally:
            server.run(store.aclose())


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="triplock")
    register_approvals(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_with_the_principals_own_token(live_principals: tuple[LiveServer, MemoryStore, dict[str, str]],
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    server, store, keys = live_principals
    call = held_call(principal="codex-ci")
    server.run(store.create_approval(call))
    monkeypatch.delenv("TRIPLOCK_APPROVER_TOKEN", raising=False)
    monkeypatch.setenv("TRIPLOCK_TOKEN", keys["bob"])  # the same variable `triplock suspend` reads
    assert run_cli(["approvals", "list", "--url", server.url, "--json"]) == 0
    listed: Any = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listed] == [call.id]
    assert run_cli(["approvals", "approve", call.id, "--url", server.url, "-r", "ok"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"approved: {call.id} by bob, scope once until "), out

    own = held_call(principal="bob", tool="other")
    server.run(store.create_approval(own))
    assert run_cli(["approvals", "approve", own.id, "--url", server.url]) == 1
    assert capsys.readouterr().err.strip() == (
        "triplock approvals: HTTP 403: An approver cannot decide their own call. (state pending, decided by -)")
