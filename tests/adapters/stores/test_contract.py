"""The store contract, run against every adapter (memory, SQLite, Redis) through the `store` fixture."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.ports.records import PendingApproval, args_hash
from gateway.ports.store import Store

ARGS = {"to": "eve@example.org", "body": "hi"}


def approval(now: float | None = None, ttl: float = 3600.0, principal: str = "agent:a", session: str = "s1",
             tool: str = "send_email", arguments: dict[str, Any] | None = None, **kw: Any) -> PendingApproval:
    return PendingApproval.new(principal=principal, session_id=session, upstream="mail", tool=tool,
                               arguments=ARGS if arguments is None else arguments, policy_revision="rev-1",
                               ttl_seconds=ttl, now=now, category="email_send", legs_before="PU",
                               legs_after="PUE", rule_ids=("trifecta",), reasons=("completes P+U+E",), **kw)


async def test_is_a_store_and_answers_ping(store: Any) -> None:
    assert isinstance(store, Store)
    assert await store.ping() is True


async def test_call_state_of_nothing(store: Any) -> None:
    st = await store.call_state("sess:1", "tool:mail/send", "mail", "send")
    assert (st.legs, st.tool_used_before, st.pinned_hash) == (frozenset(), False, None)


async def test_legs_union_and_are_scoped_by_key(store: Any) -> None:
    await store.add_legs("sess:1", frozenset({"P"}), None)
    await store.add_legs("sess:1", frozenset({"U"}), 3600)
    await store.add_legs("sess:2", frozenset({"E"}), None)
    assert (await store.call_state("sess:1", "k", "u", "t")).legs == {"P", "U"}
    assert (await store.call_state("sess:2", "k", "u", "t")).legs == {"E"}
    with pytest.raises(ValueError):
        await store.add_legs("sess:1", frozenset({"X"}), None)


async def test_dropped_legs_are_gone_and_only_those(store: Any) -> None:
    await store.add_legs("legs:session:ended", frozenset({"P", "U"}), None)
    await store.add_legs("legs:session:live", frozenset({"E"}), None)
    await store.drop_legs("legs:session:ended")
    assert (await store.call_state("legs:session:ended", "k", "u", "t")).legs == frozenset()
    assert (await store.call_state("legs:session:live", "k", "u", "t")).legs == {"E"}
    await store.drop_legs("legs:session:never-existed")  # nothing to drop is not an error


async def test_legs_expire_after_their_ttl_but_a_forever_leg_stays(store: Any) -> None:
    await store.add_legs("sess:ttl", frozenset({"P"}), None)
    await store.add_legs("sess:ttl", frozenset({"U", "P"}), 0.3)  # P stays for ever: lifetimes only grow
    assert (await store.call_state("sess:ttl", "k", "u", "t")).legs == {"P", "U"}
    deadline = time.monotonic() + 5
    while (legs := (await store.call_state("sess:ttl", "k", "u", "t")).legs) != {"P"}:
        assert time.monotonic() < deadline, f"U never expired: {legs}"
        await asyncio.sleep(0.05)


async def test_first_use_is_recorded_per_key(store: Any) -> None:
    await store.mark_used("tool:mail/send")
    await store.mark_used("tool:mail/send")  # idempotent
    assert (await store.call_state("s", "tool:mail/send", "u", "t")).tool_used_before is True
    assert (await store.call_state("s", "tool:mail/read", "u", "t")).tool_used_before is False


async def test_pins_are_set_replaced_and_read(store: Any) -> None:
    await store.set_pin("mail", "send", "sha256:aa", by="admin")
    await store.set_pin("mail", "read", "sha256:bb", by="admin")
    await store.set_pin("mail", "send", "sha256:cc", by="admin")
    assert await store.get_pins() == {("mail", "send"): "sha256:cc", ("mail", "read"): "sha256:bb"}
    assert (await store.call_state("s", "k", "mail", "send")).pinned_hash == "sha256:cc"
    assert (await store.call_state("s", "k", "mail", "other")).pinned_hash is None


async def test_pins_are_listed_with_who_and_when(store: Any) -> None:
    before = time.time()
    await store.set_pin("mail", "send", "sha256:aa", by="agent:first-caller")
    await store.set_pin("crm", "lookup", "sha256:bb", by="agent:first-caller")
    await store.set_pin("mail", "send", "sha256:cc", by="admin:carol")
    pins = await store.list_pins()
    assert [(p.upstream, p.tool, p.definition_hash, p.pinned_by) for p in pins] == [
        ("crm", "lookup", "sha256:bb", "agent:first-caller"), ("mail", "send", "sha256:cc", "admin:carol")]
    assert all(before <= p.pinned_at <= time.time() for p in pins)


async def test_definitions_are_kept_by_hash_and_never_overwritten(store: Any) -> None:
    first = {"name": "send", "description": "Send mail.", "inputSchema": {"type": "object"}}
    await store.save_definitions({"sha256:aa": first, "sha256:bb": {"name": "read", "description": "é <b>"}})
    await store.save_definitions({"sha256:aa": {"name": "send", "description": "other"}})  # same hash: kept
    await store.save_definitions({})
    assert await store.get_definition("sha256:aa") == first
    assert await store.get_definition("sha256:bb") == {"name": "read", "description": "é <b>"}
    assert await store.get_definition("sha256:zz") is None


async def test_suspend_and_resume_update_the_cache(store: Any) -> None:
    await store.suspend("agent:x", by="admin", reason="leaking")
    await store.suspend("tool:mail__send", by="admin", reason="pin changed")
    assert store.suspended() == {"agent:x", "tool:mail__send"}
    await store.resume("agent:x", by="admin")
    await store.resume("agent:never", by="admin")  # no error
    assert store.suspended() == {"tool:mail__send"}


async def test_approval_round_trips_exactly(store: Any) -> None:
    a = approval(approver_hint="group:security", exposed_name="mail.send_email")
    await store.create_approval(a)
    assert await store.get_approval(a.id) == a
    assert await store.get_approval("01NOPE") is None
    with pytest.raises(ValueError):
        await store.create_approval(a)


async def test_list_filters_and_orders_newest_first(store: Any) -> None:
    now = time.time()
    a1 = approval(now - 3, principal="agent:a")
    a2 = approval(now - 2, principal="agent:b", tool="delete_repo")
    a3 = approval(now - 1, principal="agent:a")
    for a in (a1, a2, a3):
        await store.create_approval(a)
    await store.decide(a3.id, True, "human:h", "ok", now)
    assert [a.id for a in await store.list_approvals()] == [a3.id, a2.id, a1.id]
    assert [a.id for a in await store.list_approvals(state="pending")] == [a2.id, a1.id]
    assert [a.id for a in await store.list_approvals(principal="agent:a")] == [a3.id, a1.id]
    assert [a.id for a in await store.list_approvals(tool="delete_repo", upstream="mail")] == [a2.id]
    assert [a.id for a in await store.list_approvals(state="approved", principal="agent:b")] == []
    assert [a.id for a in await store.list_approvals(limit=2)] == [a3.id, a2.id]


async def test_decide_outcomes(store: Any) -> None:
    now = time.time()
    a, b, c = approval(now), approval(now), approval(now - 10, ttl=5)
    for x in (a, b, c):
        await store.create_approval(x)
    assert (await store.decide("nope", True, "human:h", "", now)).status == "not_found"
    assert (await store.decide(a.id, True, "agent:a", "self", now)).status == "forbidden"
    won = await store.decide(a.id, True, "human:h", "looks fine", now)
    assert won.status == "approved" and won.won and won.approval is not None
    assert (won.approval.state, won.approval.decided_by, won.approval.reason) == ("approved", "human:h", "looks fine")
    assert won.approval.decided_at == now
    again = await store.decide(a.id, False, "human:j", "no", now)
    assert again.status == "conflict" and not again.won and again.approval is not None
    assert again.approval.state == "approved"
    assert (await store.decide(b.id, False, "human:h", "no", now)).status == "denied"
    assert (await store.get_approval(b.id)).state == "denied"
    late = await store.decide(c.id, True, "human:h", "late", now)
    assert late.status == "expired"
    assert (await store.get_approval(c.id)).state == "expired"
    assert (await store.decide(c.id, True, "human:h", "late", now)).status == "expired"


async def test_fifty_concurrent_decisions_have_exactly_one_winner(store: Any) -> None:
    a = approval()
    await store.create_approval(a)
    now = time.time()
    outcomes = await asyncio.gather(*(store.decide(a.id, i % 2 == 0, f"human:{i}", "r", now) for i in range(50)))
    winners = [o for o in outcomes if o.won]
    assert len(winners) == 1
    assert sorted({o.status for o in outcomes if not o.won}) == ["conflict"]
    assert (await store.get_approval(a.id)).state == winners[0].status


async def test_find_approved_binds_the_exact_call_and_consume_is_single_use(store: Any) -> None:
    now = time.time()
    a = approval(now)
    await store.create_approval(a)
    key = ("agent:a", "s1", "mail", "send_email", args_hash(ARGS))
    assert await store.find_approved(*key, "rev-1", now) is None  # still pending
    await store.decide(a.id, True, "human:h", "ok", now)
    found = await store.find_approved(*key, "rev-1", now)
    assert (found.id, found.scope, found.scope_until) == (a.id, "once", a.expires_at)
    assert await store.find_approved(*key, "rev-2", now) is None  # policy changed since
    assert await store.find_approved(*key, "rev-1", a.expires_at) is None  # expired
    assert await store.find_approved("agent:b", "s1", "mail", "send_email", key[4], "rev-1", now) is None
    assert await store.find_approved("agent:a", "s1", "mail", "other_tool", key[4], "rev-1", now) is None
    assert await store.find_approved("agent:a", "s1", "chat", "send_email", key[4], "rev-1", now) is None
    assert await store.find_approved(*key[:4], args_hash({**ARGS, "to": "x"}), "rev-1", now) is None
    results = await asyncio.gather(*(store.consume(a.id) for _ in range(10)))
    assert results.count(True) == 1
    assert (await store.get_approval(a.id)).state == "executed"
    assert await store.find_approved(*key, "rev-1", now) is None
    assert await store.consume("nope") is False


async def test_once_approval_is_found_from_another_session_and_consumed_once(store: Any) -> None:
    now = time.time()
    a = approval(now, session="session-A")
    await store.create_approval(a)
    await store.decide(a.id, True, "human:h", "ok", now)
    from_b = ("agent:a", "session-B", "mail", "send_email", args_hash(ARGS))
    found = await store.find_approved(*from_b, "rev-1", now)
    assert found is not None and (found.id, found.session_id) == (a.id, "session-A")  # where the call came from
    assert await store.consume(found.id) is True
    assert await store.find_approved(*from_b, "rev-1", now) is None
    assert await store.find_approved("agent:a", "session-A", *from_b[2:], "rev-1", now) is None  # used up


async def test_session_scope_is_reusable_in_its_session_only(store: Any) -> None:
    now = time.time()
    a = approval(now, session="session-A")
    await store.create_approval(a)
    won = await store.decide(a.id, True, "human:h", "this session", now, scope="session")
    assert (won.approval.scope, won.approval.scope_until) == ("session", a.expires_at)
    in_a = ("agent:a", "session-A", "mail", "send_email", args_hash(ARGS))
    for _ in range(3):  # repeatedly: a session approval is not consumed by a use
        assert (await store.find_approved(*in_a, "rev-1", now)).id == a.id
    assert await store.find_approved("agent:a", "session-B", *in_a[2:], "rev-1", now) is None
    assert await store.find_approved(*in_a[:4], args_hash({**ARGS, "to": "x"}), "rev-1", now) is None
    assert await store.find_approved(*in_a, "rev-1", a.expires_at) is None  # until the approval expires
    assert (await store.get_approval(a.id)).state == "approved"
    assert [x.id for x in await store.expire_due(a.expires_at)] == [a.id]
    assert await store.find_approved(*in_a, "rev-1", now) is None


async def test_principal_tool_scope_covers_any_arguments_until_its_minutes(store: Any) -> None:
    now = time.time()
    a = approval(now, session="session-A")
    await store.create_approval(a)
    until = now + 10 * 60
    won = await store.decide(a.id, True, "human:h", "for ten minutes", now, scope="principal_tool", scope_until=until)
    assert (won.approval.scope, won.approval.scope_until, won.approval.expires_at) == ("principal_tool", until, until)
    assert await store.get_approval(a.id) == won.approval
    other_args = args_hash({"to": "someone@else.example", "body": "other"})
    for session, digest in (("session-A", args_hash(ARGS)), ("session-B", other_args), ("session-C", other_args)):
        found = await store.find_approved("agent:a", session, "mail", "send_email", digest, "rev-1", now)
        assert found is not None and found.id == a.id
    assert await store.find_approved("agent:a", "session-B", "mail", "send_email", other_args, "rev-1",
                                     until - 1) is not None
    assert await store.find_approved("agent:a", "session-B", "mail", "send_email", other_args, "rev-1", until) is None
    # never broader than what the approver saw: only this principal, only this tool
    assert await store.find_approved("agent:b", "session-B", "mail", "send_email", other_args, "rev-1", now) is None
    assert await store.find_approved("agent:a", "session-B", "mail", "delete_all", other_args, "rev-1", now) is None
    assert await store.find_approved("agent:a", "session-B", "crm", "send_email", other_args, "rev-1", now) is None
    assert [x.id for x in await store.expire_due(until)] == [a.id]
    assert await store.find_approved("agent:a", "session-B", "mail", "send_email", other_args, "rev-1", now) is None


async def test_an_exact_approval_is_preferred_to_a_principal_tool_one(store: Any) -> None:
    now = time.time()
    broad, exact = approval(now - 1, arguments={"to": "a@b.example"}), approval(now)
    for a in (broad, exact):
        await store.create_approval(a)
    await store.decide(broad.id, True, "human:h", "ok", now, scope="principal_tool", scope_until=now + 60)
    await store.decide(exact.id, True, "human:h", "ok", now)
    key = ("agent:a", "s9", "mail", "send_email", args_hash(ARGS))
    assert (await store.find_approved(*key, "rev-1", now)).id == exact.id
    assert await store.consume(exact.id) is True
    assert (await store.find_approved(*key, "rev-1", now)).id == broad.id


async def test_a_policy_revision_change_ends_every_scope(store: Any) -> None:
    now = time.time()
    once, session, broad = approval(now), approval(now), approval(now, arguments={"to": "x@y.example"})
    for a in (once, session, broad):
        await store.create_approval(a)
    await store.decide(once.id, True, "human:h", "ok", now)
    await store.decide(session.id, True, "human:h", "ok", now, scope="session")
    await store.decide(broad.id, True, "human:h", "ok", now, scope="principal_tool", scope_until=now + 600)
    key = ("agent:a", "s1", "mail", "send_email", args_hash(ARGS))
    assert await store.find_approved(*key, "rev-1", now) is not None
    assert await store.find_approved(*key, "rev-2", now) is None
    assert await store.find_approved(*key[:4], args_hash({"to": "x@y.example"}), "rev-2", now) is None


async def test_decide_refuses_an_unknown_or_endless_scope(store: Any) -> None:
    now = time.time()
    a = approval(now)
    await store.create_approval(a)
    with pytest.raises(ValueError, match="unknown approval scope 'everything'"):
        await store.decide(a.id, True, "human:h", "ok", now, scope="everything")
    with pytest.raises(ValueError, match="principal_tool approval needs scope_until"):
        await store.decide(a.id, True, "human:h", "ok", now, scope="principal_tool")
    assert (await store.get_approval(a.id)).state == "pending"  # nothing was decided
    denied = await store.decide(a.id, False, "human:h", "no", now, scope="session")
    assert (denied.status, denied.approval.scope, denied.approval.scope_until) == ("denied", "once", None)


async def test_find_pending_reuses_only_live_pending(store: Any) -> None:
    now = time.time()
    a = approval(now)
    old = approval(now - 100, ttl=10)  # same call, long expired but never swept
    await store.create_approval(old)
    await store.create_approval(a)
    key = ("agent:a", "s1", "mail", "send_email", args_hash(ARGS))
    assert (await store.find_pending(*key)).id == a.id
    assert (await store.find_pending("agent:a", "another-session", *key[2:])).id == a.id  # any session
    assert await store.find_pending("agent:b", *key[1:]) is None
    assert await store.find_pending(*key[:4], args_hash({})) is None
    await store.decide(a.id, False, "human:h", "no", now)
    assert await store.find_pending(*key) is None


async def test_an_abandoned_approval_is_stamped_once_and_stays_decidable(store: Any) -> None:
    now = time.time()
    a, decided = approval(now), approval(now)
    for x in (a, decided):
        await store.create_approval(x)
    await store.decide(decided.id, True, "human:h", "ok", now)
    stamped = await store.mark_abandoned(a.id, now + 1.5)
    assert stamped is not None and (stamped.id, stamped.state, stamped.abandoned_at) == (a.id, "pending", now + 1.5)
    assert await store.get_approval(a.id) == stamped
    assert await store.mark_abandoned(a.id, now + 9) is None  # once
    assert await store.mark_abandoned(decided.id, now) is None  # only a pending one
    assert await store.mark_abandoned("nope", now) is None
    key = ("agent:a", "s2", "mail", "send_email", args_hash(ARGS))
    assert (await store.find_pending(*key)).id == a.id  # the agent's repeat still finds it
    won = await store.decide(a.id, True, "human:h", "ok", now)
    assert (won.status, won.approval.abandoned_at) == ("approved", now + 1.5)


async def test_wait_decided(kind: str, make_store: Any) -> None:
    # SQLite without its re-check timer (memory and Redis have none): only the decision's wake-up
    # can end the 30 s wait below before the 10 s guard, so the test proves "woken", not "fast".
    store = make_store(**({"recheck_every": None} if kind == "sqlite" else {}))
    await store.start()
    a = approval()
    await store.create_approval(a)
    started = time.monotonic()
    assert await store.wait_decided(a.id, 0.2) is None  # still pending at the deadline
    assert time.monotonic() - started >= 0.2
    assert await store.wait_decided("nope", 1) is None
    waiter = asyncio.create_task(store.wait_decided(a.id, 30))
    await asyncio.sleep(0)  # let the waiter register before deciding (order only, not timing)
    await store.decide(a.id, True, "human:h", "ok", time.time())
    got = await asyncio.wait_for(waiter, 10)
    assert got is not None and (got.id, got.state, got.decided_by) == (a.id, "approved", "human:h")
    assert (await store.wait_decided(a.id, 5)).state == "approved"  # already decided: returns at once


async def test_expire_due_expires_each_overdue_once(store: Any) -> None:
    now = time.time()
    due, live, approved, done = approval(now - 20, ttl=10), approval(now), approval(now - 20, ttl=10), approval(now)
    for a in (due, live, approved, done):
        await store.create_approval(a)
    await store.decide(approved.id, True, "human:h", "ok", now - 15)
    await store.decide(done.id, True, "human:h", "ok", now)
    assert await store.consume(done.id)
    waiter = asyncio.create_task(store.wait_decided(due.id, 30))
    await asyncio.sleep(0)
    expired = await store.expire_due(now)
    assert sorted(a.id for a in expired) == sorted([due.id, approved.id])
    assert all(a.state == "expired" for a in expired)
    assert (await asyncio.wait_for(waiter, 10)).state == "expired"
    lapsed = await store.get_approval(approved.id)
    assert (lapsed.state, lapsed.decided_by) == ("expired", "human:h")  # who approved it is kept
    assert await store.expire_due(now) == []
    assert (await store.get_approval(live.id)).state == "pending"
    assert (await store.get_approval(done.id)).state == "executed"


async def test_call_state_ignores_approvals(store: Any) -> None:
    for _ in range(50):
        await store.create_approval(approval())
    st = await store.call_state("sess:1", "k", "mail", "send_email")
    assert (st.legs, st.tool_used_before, st.pinned_hash) == (frozenset(), False, None)


async def test_second_instance_sees_the_same_state(make_store: Any) -> None:
    a_store, b_store = make_store(), make_store()
    await a_store.start()
    await b_store.start()
    a = approval()
    await a_store.create_approval(a)
    await a_store.add_legs("sess:1", frozenset({"P", "U"}), None)
    await a_store.set_pin("mail", "send_email", "sha256:aa", by="admin")
    await a_store.save_definitions({"sha256:aa": {"name": "send_email"}})
    assert await b_store.get_definition("sha256:aa") == {"name": "send_email"}
    assert [p.pinned_by for p in await b_store.list_pins()] == ["admin"]
    assert (await b_store.call_state("sess:1", "k", "mail", "send_email")).legs == {"P", "U"}
    now = time.time()
    outcomes = await asyncio.gather(*(s.decide(a.id, i % 2 == 0, f"human:{i}", "r", now)
                                      for i, s in enumerate([a_store, b_store] * 25)))
    assert sum(o.won for o in outcomes) == 1
