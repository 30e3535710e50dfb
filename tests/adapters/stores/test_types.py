"""The pure parts of gateway.ports.store: ids, argument hashes, records, the decision rule."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from gateway.ports.records import (
    PendingApproval,
    args_hash,
    binding_key,
    check_legs,
    decide_transition,
    new_approval_id,
)
from policy import Legs


def test_ids_are_time_ordered_unique_and_long() -> None:
    ids = [new_approval_id(1_700_000_000 + i) for i in range(100)]
    assert ids == sorted(ids)
    assert len(set(new_approval_id(1_700_000_000) for _ in range(1000))) == 1000  # 80 random bits
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)


def test_args_hash_is_canonical() -> None:
    assert args_hash({"b": 1, "a": [1, {"y": 2, "x": "é"}]}) == args_hash({"a": [1, {"x": "é", "y": 2}], "b": 1})
    assert args_hash({"a": 1}) != args_hash({"a": "1"})
    assert args_hash(None) == args_hash({})
    assert args_hash({}).startswith("sha256:") and len(args_hash({})) == 71


def test_binding_cannot_be_confused_by_separators() -> None:
    assert binding_key("a|b", "c", "u", "t", "h") != binding_key("a", "b|c", "u", "t", "h")


def test_record_round_trips_through_a_dict() -> None:
    a = PendingApproval.new(principal="agent:a", session_id="s", upstream="u", tool="t", arguments={"q": "<b>"},
                            policy_revision="rev-1", legs_before="P", legs_after=["P", "E"], rule_ids=["r1"],
                            reasons=["why"], category="email_send", now=1_700_000_000.123456)
    assert a.args_preview == '{"q":"<b>"}' and a.expires_at == 1_700_000_000.123456 + 3600
    assert PendingApproval.from_dict(a.to_dict()) == a
    assert a.to_dict()["legs_after"] == "PE"
    with pytest.raises(ValueError):
        PendingApproval.from_dict({**a.to_dict(), "state": "maybe"})
    with pytest.raises(ValueError):
        check_legs({"P", "Q"})
    assert check_legs("P+U") == check_legs("PU") == check_legs(Legs.parse("P,U")) == {"P", "U"}
    assert check_legs("-") == frozenset()
    b = replace(a, legs_before=Legs.format(Legs.parse("PU")), exposed_name="mail.send")  # type: ignore[arg-type]
    assert b.legs_before == {"P", "U"} and PendingApproval.from_dict(b.to_dict()) == b


def test_decide_rule_order() -> None:
    now = time.time()
    a = PendingApproval.new(principal="agent:a", session_id="s", upstream="u", tool="t", arguments={},
                            policy_revision="r", now=now - 10, ttl_seconds=5)
    assert decide_transition(None, True, "h", "", now).status == "not_found"
    assert decide_transition(a, True, "agent:a", "", now).status == "forbidden"
    assert decide_transition(replace(a, state="approved"), True, "h", "", now).status == "conflict"
    out = decide_transition(a, True, "h", "", now)
    assert (out.status, out.changed, out.approval.state if out.approval else None) == ("expired", True, "expired")
    live = replace(a, expires_at=now + 1)
    out = decide_transition(live, False, "h", "no", now)
    assert out.won and out.approval == replace(live, state="denied", decided_by="h", decided_at=now, reason="no")
