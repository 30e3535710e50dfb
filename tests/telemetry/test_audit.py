"""The audit log: hash chain, verify (edited / deleted / reordered), rotation, restart, loud failing sinks."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.audit_sinks import FileSink, RedisStreamSink
from gateway.cli.audit import register
from gateway.telemetry.audit import GENESIS, AuditLog, EventType
from gateway.telemetry.audit_verify import read_lines, verify_lines
from gateway.telemetry.metrics import Metrics
from tests.support import free_port


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``check()`` with a deadline (yielding to the sink tasks between looks)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


async def _write_log(path: Path, n: int) -> AuditLog:
    audit = AuditLog([FileSink(path)])
    await audit.start()
    for i in range(n):
        audit.emit(EventType.CALL_REQUESTED, principal="alice", session="s1", upstream="mail", tool="send_email",
                   args_hash=f"{i:064x}", decision="allow", rule_ids=["r1"], policy_revision="rev-1",
                   legs=frozenset({"P", "E"}))
    assert await audit.flush()
    await audit.aclose()
    return audit


async def test_records_are_chained_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    await _write_log(path, 5)
    lines = path.read_bytes().splitlines()
    records = [orjson.loads(x) for x in lines]
    assert len(records) == 5 and records[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))
    ids = [r["event_id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert records[0]["legs"] == ["E", "P"] and records[0]["type"] == "connector.call.requested"
    assert records[0]["time"].endswith("Z")
    assert _cli("verify", str(path), "--from-genesis") == 0
    assert "OK" in capsys.readouterr().out


async def test_time_and_event_id_follow_the_clock_to_the_millisecond() -> None:
    # Records share a millisecond under load: the stamp is cached per millisecond and must not go stale.
    times = iter([1_700_000_000.0004, 1_700_000_000.0009, 1_700_000_000.0021, 1_700_000_001.5, 1_700_000_001.4999])
    audit = AuditLog([], clock=lambda: next(times))
    seen: list[dict[str, object]] = []
    audit.listen(seen.append)
    await audit.start()
    for _ in range(5):
        audit.emit(EventType.CONFIG_RELOADED)
    assert [r["time"] for r in seen] == [
        "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.002Z",
        "2023-11-14T22:13:21.500Z", "2023-11-14T22:13:21.499Z",
    ]
    ids = [str(r["event_id"]) for r in seen]
    assert [i[4:16] for i in ids[:4]] == [f"{ms:012x}" for ms in (1_700_000_000_000, 1_700_000_000_000,
                                                                     1_700_000_000_002, 1_700_000_001_500)]
    # Within a millisecond, and when the clock steps back, ids still increase.
    assert ids == sorted(ids) and len(set(ids)) == 5 and int(ids[1][16:], 16) == int(ids[0][16:], 16) + 1


def test_event_ids_count_up_by_one_within_a_millisecond_across_the_byte_boundary() -> None:
    audit = AuditLog([], clock=lambda: 1_700_000_000.0)
    seen: list[dict[str, object]] = []
    audit.listen(seen.append)
    audit._started = True  # no sinks: only the listener sees the sealed records
    for _ in range(600):
        audit.emit(EventType.CONFIG_RELOADED)
    ids = [str(r["event_id"]) for r in seen]
    assert all(len(i) == 36 and i.startswith("evt_018bcfe56800") for i in ids)
    values = [int(i[16:], 16) for i in ids]
    assert values == list(range(values[0], values[0] + 600))


async def test_deferred_fields_are_built_when_sealed_in_emission_order() -> None:
    audit = AuditLog([], clock=lambda: 1_700_000_000.0)
    seen: list[dict[str, object]] = []
    audit.listen(seen.append)
    await audit.start()
    built: list[str] = []

    def build() -> dict[str, object]:
        built.append("deferred")
        return {"tool": "read_inbox"}

    audit.emit_deferred(EventType.CALL_COMPLETED, build)
    assert built == [] and seen == []  # queued: built by the sealing pass at the end of the loop iteration
    audit.emit(EventType.CONFIG_RELOADED, ok=True)  # seals what is queued first, then itself
    assert built == ["deferred"]
    assert [(r["type"], r.get("tool")) for r in seen] == [(EventType.CALL_COMPLETED, "read_inbox"),
                                                          (EventType.CONFIG_RELOADED, None)]
    assert seen[1]["prev_hash"] == seen[0]["hash"]


def test_deferred_fields_reach_typed_listeners_without_sinks() -> None:
    audit = AuditLog([])
    seen: list[dict[str, object]] = []
    audit.listen(seen.append, {EventType.APPROVAL_GRANTED})
    audit.emit_deferred(EventType.APPROVAL_GRANTED, lambda: {"approval_id": "a1"})
    audit.emit_deferred(EventType.CALL_COMPLETED, lambda: {"approval_id": "a2"})
    assert seen == [{"approval_id": "a1", "type": EventType.APPROVAL_GRANTED}]


@pytest.mark.parametrize("tamper, line, reason", [
    ("edit", 3, "edited"),
    ("delete", 3, "deleted"),
    ("reorder", 2, "reordered"),
])
async def test_verify_names_the_first_broken_record(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    tamper: str, line: int, reason: str) -> None:
    path = tmp_path / "audit.jsonl"
    await _write_log(path, 6)
    lines = path.read_bytes().splitlines(keepends=True)
    if tamper == "edit":
        rec = orjson.loads(lines[2])
        rec["decision"] = "deny"
        lines[2] = orjson.dumps(rec) + b"\n"
    elif tamper == "delete":
        del lines[2]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    result = verify_lines(read_lines([path]), expected_prev=GENESIS)
    assert not result.ok and result.broken_line == line and reason in (result.reason or "")
    assert _cli("verify", str(path)) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN") and f"line {line}" in out


async def test_restart_continues_the_chain_and_rotation_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await _write_log(path, 3)
    audit = AuditLog([FileSink(path, max_bytes=1024)])  # rotates after every batch
    await audit.start()
    for i in range(40):
        audit.emit(EventType.CALL_COMPLETED, principal="bob", outcome="allowed", n=i)
        if i % 8 == 7:
            assert await audit.flush()  # one batch per 8 records, so the file rotates between batches
    await audit.aclose()
    rotated = sorted(tmp_path.glob("audit-*.jsonl"))
    assert len(rotated) >= 3
    files = [*rotated, path] if path.exists() else rotated
    result = verify_lines(read_lines(files), expected_prev=GENESIS)
    assert result.ok and result.records == 43
    # One rotated file alone verifies from its own first record (anchored, not from genesis).
    assert verify_lines(read_lines([rotated[1]])).ok
    assert not verify_lines(read_lines([rotated[1]]), expected_prev=GENESIS).ok


def _metric(metrics: Metrics, name: str) -> dict[str, float]:
    text = metrics.exposition().decode()
    return {s.labels.get("triplock_audit_sink", ""): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


async def test_full_disk_is_loud_and_keeps_every_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = FileSink(Path("/dev/full"))  # every write fails with ENOSPC
    metrics = Metrics()
    audit = AuditLog([sink], metrics=metrics, backlog_alert=3)
    await audit.start()
    with caplog.at_level(logging.ERROR, logger="triplock.audit"):
        for i in range(5):
            audit.emit(EventType.CALL_REQUESTED, principal="alice", n=i)
        await _until(lambda: not audit.health()["sinks"]["file"]["ok"])
    health = audit.health()
    assert not health["ok"] and health["backlog"] == 5 and "No space" in health["sinks"]["file"]["last_error"]
    assert any("audit sink file is failing" in r.message and "5 records held" in r.message for r in caplog.records)
    assert any("backlog is over 3" in r.message for r in caplog.records)
    assert _metric(metrics, "triplock_audit_sink_up") == {"file": 0.0}
    assert _metric(metrics, "triplock_audit_sink_errors_total")["file"] >= 1
    assert _metric(metrics, "triplock_audit_backlog") == {"file": 5.0}
    # The disk "frees up": the same records arrive, in order, with an intact chain.
    good = tmp_path / "audit.jsonl"
    sink.path = good
    assert await audit.flush(timeout=15)
    assert audit.health()["ok"] and _metric(metrics, "triplock_audit_sink_up") == {"file": 1.0}
    assert [orjson.loads(x)["n"] for x in good.read_bytes().splitlines()] == [0, 1, 2, 3, 4]
    assert verify_lines(read_lines([good]), expected_prev=GENESIS).ok
    await audit.aclose()


async def test_redis_stream_sink_dead_then_alive(tmp_path: Path) -> None:
    port = free_port()
    audit = AuditLog([RedisStreamSink(f"redis://127.0.0.1:{port}/0", "audit-test")])
    await audit.start()
    for i in range(3):
        audit.emit(EventType.AGENT_LIFECYCLE, action="suspended" if i == 0 else "resumed", target=f"agent:{i}")
    await _until(lambda: not audit.health()["ok"])
    assert audit.backlog() == 3
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        assert await audit.flush(timeout=30)
        assert audit.health()["ok"]
        import redis.asyncio as redis

        client = redis.Redis(port=port)
        entries = await client.xrange("audit-test")
        await client.aclose()
        lines = [(fields or {})[b"event"] for _, fields in entries or []]
        assert [orjson.loads(x)["target"] for x in lines] == ["agent:0", "agent:1", "agent:2"]
        assert verify_lines(lines, expected_prev=GENESIS).ok
        await audit.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_typed_listener_sees_its_events_without_sealing_anything() -> None:
    # With no sinks, the approval-metrics listener must not make every call pay for a sealed record.
    audit = AuditLog([])
    seen: list[dict[str, object]] = []
    audit.listen(seen.append, {EventType.APPROVAL_GRANTED})
    await audit.start()
    assert not audit.enabled
    assert audit.emit(EventType.CALL_COMPLETED, tool="send_email") is None
    audit.emit(EventType.APPROVAL_GRANTED, approval_id="apr-1")
    assert seen == [{"approval_id": "apr-1", "type": EventType.APPROVAL_GRANTED}]
    everything: list[dict[str, object]] = []
    audit.listen(everything.append)  # a listener for every type: records are sealed for it
    assert audit.enabled
    record = audit.emit(EventType.CALL_COMPLETED, tool="send_email")
    assert record is not None and record["prev_hash"] == GENESIS and everything == [record]
    assert len(seen) == 1
    await audit.aclose()
