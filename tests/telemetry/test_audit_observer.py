"""AuditObserver: the presorted ``connector.call.completed`` record is complete and verifies; held calls' events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapters.audit_sinks import FileSink
from gateway.guard.record import CallRecord
from gateway.telemetry.audit import STAMP_KEYS, AuditLog
from gateway.telemetry.audit_verify import verify_lines
from gateway.telemetry.observers import AuditObserver
from policy import Decision, Leg, ToolCall
from tests.telemetry.test_spans import _ctx


def _record(agent: str | None, category: str | None, legs_after: frozenset[Leg]) -> CallRecord:
    record = CallRecord(_ctx(), "mail__read_inbox", ToolCall("alice", agent, frozenset(), "s1", "mail",
                                                             "read_inbox", {"folder": "inbox", "n": [1, 2]}))
    record.decision = Decision("allow", frozenset({Leg.P}), frozenset({Leg.P}), category,  # type: ignore[arg-type]
                               ("default.read",), ("reads default to allow",), "rev-1", "enforce", False, True, False)
    record.outcome = "allowed"
    record.is_error = True
    record.legs_after = legs_after
    return record


@pytest.mark.parametrize("agent", [None, "codex"])
@pytest.mark.parametrize("category", [None, "mail_read"])
@pytest.mark.parametrize("legs_after", [frozenset(), frozenset({Leg.P, Leg.U})])
async def test_completed_record_is_sorted_complete_and_chains(
    tmp_path: Path, agent: str | None, category: str | None, legs_after: frozenset[Leg]
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog([FileSink(path)])
    await audit.start()
    observer = AuditObserver(audit)
    record = _record(agent, category, legs_after)
    observer.finished(record)
    observer.finished(_record(agent, category, legs_after))  # a second one: the chain links them
    assert await audit.flush()
    await audit.aclose()

    lines = path.read_bytes().splitlines()
    assert verify_lines(lines).ok
    written = orjson.loads(lines[0])
    keys = [k for k in written if k != "hash"]
    assert keys == sorted(keys) and set(STAMP_KEYS) <= set(keys)

    # Every field of the call, None values left out.
    expected = {
        "args_hash": record.args_hash, "category": category, "decision": "allow", "enforced": "allow",
        "exposed_tool": "mail__read_inbox", "first_use": True, "is_error": True,
        "legs_after": "P+U" if legs_after else "P", "legs_before": "P", "method": "tools/call", "mode": "enforce",
            "outcome": "allowed",
        "pin_changed": False, "policy_revision": "rev-1", "principal": "alice", "protocol_version": "2025-11-25",
        "reasons": ["reads default to allow"], "rule_ids": ["default.read"], "session": "s1", "tool": "read_inbox",
        "trifecta": False, "upstream": "mail", "agent": agent,
    }
    expected = {k: v for k, v in expected.items() if v is not None}
    assert record.args_hash.startswith("sha256:")
    got = {k: v for k, v in written.items() if k not in {*STAMP_KEYS, "hash", "duration_ms"}}
    assert got == expected
    assert ("agent" in written) == (agent is not None) and ("category" in written) == (category is not None)
    assert isinstance(written["duration_ms"], float) and written["duration_ms"] >= 0


async def test_requested_event_of_a_hold_has_the_call_but_no_outcome() -> None:
    audit = AuditLog([])
    seen: list[dict[str, object]] = []
    audit.listen(seen.append)
    await audit.start()
    record = _record("codex", "mail_read", frozenset({Leg.P, Leg.U}))  # learned legs: not the decision's
    record.decision = record.decision._replace(effect="hold")  # type: ignore[union-attr]
    AuditObserver(audit).decided(record)
    audit.seal_pending()
    (event,) = seen
    assert event["type"] == "connector.call.requested" and event["decision"] == "hold"
    assert event["legs_after"] == "P" and event["agent"] == "codex" and event["args_hash"] == record.args_hash
    assert not {"outcome", "is_error", "duration_ms"} & set(event)
