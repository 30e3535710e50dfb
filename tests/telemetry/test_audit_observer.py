"""AuditObserver's hot path: the presorted ``connector.call.completed`` record equals the general one and verifies."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapters.audit_sinks import FileSink
from gateway.audit import STAMP_KEYS, AuditLog
from gateway.audit_verify import verify_lines
from gateway.observers import AuditObserver
from gateway.pipeline import CallRecord
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

    # The same fields the general path (_fields + outcome) writes, None values left out.
    expected = AuditObserver._fields(record)
    expected.update(outcome="allowed", is_error=True)
    if legs_after:
        expected["legs_after"] = "P+U"
    got = {k: v for k, v in written.items() if k not in {*STAMP_KEYS, "hash", "duration_ms"}}
    assert got == orjson.loads(orjson.dumps(expected))
    assert ("agent" in written) == (agent is not None) and ("category" in written) == (category is not None)
    assert isinstance(written["duration_ms"], float) and written["duration_ms"] >= 0
