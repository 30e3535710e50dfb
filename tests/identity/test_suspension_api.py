"""The suspension REST API: who may use it, what it changes, what it records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from adapters.stores.memory_store import MemoryStore
from gateway.config import AuthConfig, Settings
from gateway.identity import suspension_api
from gateway.identity.api_keys import KeyStore
from gateway.identity.authenticators import build_authenticator
from gateway.identity.roles import AccessPolicy
from gateway.ports.records import PendingApproval
from policy import CallState, ToolCall, load_preset
from tests.policy.conftest import demo_profiles


class Harness:
    def __init__(self, client: httpx.AsyncClient, store: MemoryStore, keys: dict[str, str],
                 events: list[tuple[str, dict[str, Any]]]) -> None:
        self.client, self.store, self.keys, self.events = client, store, keys, events

    def as_(self, role: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    settings = Settings(auth=AuthConfig(mode="api_key", api_keys_file=tmp_path / "keys.json"))
    ks = KeyStore(settings.auth.api_keys_file)
    keys = {role: ks.create(f"{role}-person", (role,))[0]
            for role in ("agents-admin", "agents-run", "auditor", "approver")}
    access = AccessPolicy()
    events: list[tuple[str, dict[str, Any]]] = []

    async def audit(event_type: str, **fields: Any) -> None:
        events.append((event_type, fields))

    store = MemoryStore()
    await store.start()
    app = Starlette(routes=suspension_api.routes(store, build_authenticator(settings, access), access, audit))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield Harness(client, store, keys, events)
    await store.aclose()


async def test_admin_suspends_and_resumes_an_agent_with_audit_events(api: Harness) -> None:
    r = await api.client.post("/api/suspensions", json={"target": "agent:codex-ci", "reason": "incident 42"},
                              headers=api.as_("agents-admin"))
    assert r.status_code == 201, r.text
    assert "agent:codex-ci" in api.store.suspended()
    r = await api.client.get("/api/suspensions", headers=api.as_("auditor"))
    assert r.json() == {"suspensions": ["agent:codex-ci"]}
    r = await api.client.delete("/api/suspensions/agent:codex-ci", headers=api.as_("agents-admin"))
    assert r.status_code == 200 and r.json()["was_suspended"] is True
    assert api.store.suspended() == frozenset()
    assert [(t, f["target"], f["by"]) for t, f in api.events] == [
        ("suspension.created", "agent:codex-ci", "agents-admin-person"),
        ("suspension.lifted", "agent:codex-ci", "agents-admin-person"),
    ]
    assert api.events[0][1]["reason"] == "incident 42"


@pytest.mark.parametrize("role", ["agents-run", "auditor", "approver"])
async def test_other_roles_may_not_suspend(api: Harness, role: str) -> None:
    r = await api.client.post("/api/suspensions", json={"target": "agent:x"}, headers=api.as_(role))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await api.client.delete("/api/suspensions/agent:x", headers=api.as_(role))
    assert r.status_code == 403
    assert api.store.suspended() == frozenset() and api.events == []


async def test_no_token_is_401_with_challenge_and_run_role_cannot_list(api: Harness) -> None:
    r = await api.client.post("/api/suspensions", json={"target": "agent:x"})
    assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"]
    r = await api.client.get("/api/suspensions", headers=api.as_("agents-run"))
    assert r.status_code == 403


@pytest.mark.parametrize("body", [{"target": "x"}, {"target": "agent:"}, {"target": "agent:a b"},
                                  {"target": "agent:x", "reason": 5}, [1]])
async def test_bad_requests_are_400(api: Harness, body: Any) -> None:
    r = await api.client.post("/api/suspensions", json=body, headers=api.as_("agents-admin"))
    assert r.status_code == 400, r.text


async def test_suspending_denies_pending_holds_of_that_agent_only(api: Harness) -> None:
    def held(principal: str) -> PendingApproval:
        return PendingApproval.new(principal=principal, session_id="s1", upstream="demo", tool="send_email",
                                   arguments={"to": "x@example.com"}, policy_revision="r1")

    mine, other = held("codex-ci"), held("someone-else")
    await api.store.create_approval(mine)
    await api.store.create_approval(other)
    r = await api.client.post("/api/suspensions", json={"target": "agent:codex-ci", "reason": "leak"},
                              headers=api.as_("agents-admin"))
    assert r.json()["denied_approvals"] == [mine.id]
    after = await api.store.get_approval(mine.id)
    assert after is not None and after.state == "denied" and "suspended" in (after.reason or "")
    untouched = await api.store.get_approval(other.id)
    assert untouched is not None and untouched.state == "pending"


async def test_a_suspended_agent_is_denied_on_its_next_call(api: Harness) -> None:
    # The pipeline hands store.suspended() to the policy on every call: no cache to wait for.
    policy = load_preset("open")
    call = ToolCall("codex-ci", "codex-ci", frozenset({"agents-run"}), "s1", "demo", "search_drive", {"query": "q"})
    prof = demo_profiles(policy)["search_drive"]
    before = policy.decide(call, prof, CallState(tool_used_before=True, suspended=api.store.suspended()))
    assert before.effect == "allow", before.reasons
    await api.client.post("/api/suspensions", json={"target": "agent:codex-ci"}, headers=api.as_("agents-admin"))
    decision = policy.decide(call, prof, CallState(tool_used_before=True, suspended=api.store.suspended()))
    assert decision.effect == "deny" and any("suspended" in r for r in decision.reasons)


async def test_a_suspended_resource_is_denied_on_its_next_read(api: Harness) -> None:
    policy = load_preset("controlled")
    uri = "workspace://inbox/inbox-001"
    call = ToolCall("alice", None, frozenset({"agents-run"}), "s1", "demo", uri, {})
    profile = policy.resource_profile("demo", uri)
    assert policy.decide(call, profile, CallState(suspended=api.store.suspended())).effect == "allow"
    r = await api.client.post("/api/suspensions", json={"target": f"resource:demo__{uri}"},
                              headers=api.as_("agents-admin"))
    assert r.status_code == 201, r.text
    decision = policy.decide(call, profile, CallState(suspended=api.store.suspended()))
    assert decision.effect == "deny" and decision.rule_ids == ("suspended",)
