"""Durable audit in-process: the barrier answers wait on, group commit, bad builders, a torn tail, insertion."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
from pathlib import Path

import orjson
import pytest

from adapters.audit_sinks import FileSink
from gateway.cli.audit import register
from gateway.telemetry.audit import GENESIS, AuditLog, EventType
from gateway.telemetry.audit_verify import canonical, read_lines, verify_lines


class CountingFileSink(FileSink):
    """The real file sink, counting its writes (to see group commit)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.write_now = self._count_now

    async def write(self, lines: list[bytes]) -> None:
        self.batches.append(len(lines))
        await super().write(lines)

    def _count_now(self, lines: list[bytes]) -> None:
        self.batches.append(len(lines))
        self._write_lines(lines)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


def _types(path: Path) -> list[str]:
    return [orjson.loads(x)["type"] for x in path.read_bytes().splitlines()]


async def test_durable_completes_only_once_the_record_is_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog([FileSink(path)])
    await audit.start()
    audit.emit_deferred(EventType.CALL_COMPLETED, lambda: {"tool": "read_inbox", "n": 1})
    written = audit.durable()
    assert not written.done() and not path.exists()  # sealed at the end of this loop iteration, then written
    assert await written is True
    assert [orjson.loads(x)["n"] for x in path.read_bytes().splitlines()] == [1]
    await audit.aclose()


async def test_concurrent_answers_share_one_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = CountingFileSink(path)
    audit = AuditLog([sink])
    await audit.start()

    async def call(i: int) -> bool:
        audit.emit_deferred(EventType.CALL_COMPLETED, lambda: {"tool": "read_inbox", "n": i})
        return await audit.durable()

    results = await asyncio.gather(*(call(i) for i in range(100)))
    assert results == [True] * 100
    assert sink.batches == [100]  # group commit: one write released all 100 answers
    assert [orjson.loads(x)["n"] for x in path.read_bytes().splitlines()] == list(range(100))
    await audit.aclose()


async def test_a_sink_that_is_down_makes_answers_wait_at_most_durable_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = tmp_path / "audit-a.jsonl"
    sink_b = FileSink(Path("/dev/full"))  # every write fails with ENOSPC
    sink_b.name = "file-b"
    audit = AuditLog([FileSink(good), sink_b], durable_timeout=0.2)
    await audit.start()
    with caplog.at_level(logging.ERROR, logger="triplock.audit"):
        audit.emit(EventType.CALL_COMPLETED, tool="read_inbox", n=1)
        assert await audit.durable() is False  # the first sink has it; the second does not
    assert good.read_bytes().count(b"\n") == 1
    health = audit.health()
    assert health["undurable_answers"] == 1 and not health["ok"] and not health["full"]
    assert any("1 answers were sent before their audit records were written (sink file-b" in r.message
               for r in caplog.records)
    sink_b.path = tmp_path / "audit-b.jsonl"  # the disk is fixed: the held record arrives, in order
    audit.emit(EventType.CALL_COMPLETED, tool="read_inbox", n=2)
    assert await asyncio.wait_for(audit.durable(), 15) is True
    for f in (good, sink_b.path):
        assert [orjson.loads(x)["n"] for x in f.read_bytes().splitlines()] == [1, 2]
        assert verify_lines(read_lines([f]), expected_prev=GENESIS).ok
    assert audit.health()["undurable_answers"] == 1
    await audit.aclose()


async def test_full_backlog_sets_full_until_the_sink_catches_up(tmp_path: Path) -> None:
    sink = FileSink(Path("/dev/full"))
    audit = AuditLog([sink], max_backlog=3, durable_timeout=0.05)
    await audit.start()
    for i in range(2):
        audit.emit(EventType.CALL_COMPLETED, n=i)
    assert not audit.full
    audit.emit(EventType.CALL_COMPLETED, n=2)
    assert audit.full and audit.health()["full"] and not audit.health()["ok"]
    sink.path = tmp_path / "audit.jsonl"
    assert await audit.flush(timeout=15)
    assert not audit.full and audit.health()["ok"]
    await audit.aclose()


async def test_a_builder_that_raises_is_replaced_and_its_batch_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog([FileSink(path)])
    await audit.start()

    def broken() -> dict[str, object]:
        raise KeyError("secret-argument-value")

    with caplog.at_level(logging.ERROR, logger="triplock.audit"):
        audit.emit_deferred(EventType.CALL_COMPLETED, lambda: {"tool": "read_inbox", "n": 1})
        audit.emit_deferred(EventType.CALL_COMPLETED, broken)
        audit.emit_deferred(EventType.APPROVAL_GRANTED, lambda: {"unserialisable": object()})
        audit.emit_deferred(EventType.CALL_COMPLETED, lambda: {"tool": "read_inbox", "n": 4})
        assert await audit.durable() is True
    records = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [r["type"] for r in records] == [EventType.CALL_COMPLETED, EventType.RECORD_FAILED,
                                            EventType.RECORD_FAILED, EventType.CALL_COMPLETED]
    assert {k: records[1][k] for k in ("failed_type", "error")} == {"failed_type": EventType.CALL_COMPLETED,
                                                                    "error": "KeyError"}
    assert {k: records[2][k] for k in ("failed_type", "error")} == {"failed_type": EventType.APPROVAL_GRANTED,
                                                                    "error": "TypeError"}
    assert set(records[1]) == {"failed_type", "error", "event_id", "time", "type", "prev_hash", "hash"}
    assert [records[0]["n"], records[3]["n"]] == [1, 4]
    assert b"secret-argument-value" not in path.read_bytes()
    assert not any("secret-argument-value" in r.getMessage() for r in caplog.records)
    assert any("audit record connector.call.completed could not be built (KeyError at " in r.getMessage()
               for r in caplog.records)
    assert verify_lines(read_lines([path]), expected_prev=GENESIS).ok
    assert _cli("verify", "--from-genesis", str(path)) == 0
    await audit.aclose()


async def _log_of(path: Path, n: int) -> list[bytes]:
    audit = AuditLog([FileSink(path)])
    await audit.start()
    for i in range(n):
        audit.emit(EventType.CALL_COMPLETED, principal="alice", n=i)
    assert await audit.flush()
    await audit.aclose()
    return path.read_bytes().splitlines(keepends=True)


async def test_verify_reports_a_torn_last_line_as_a_truncated_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = await _log_of(path, 3)
    torn = lines[2][:40]  # a crash cut the last write short: no newline
    path.write_bytes(b"".join(lines[:2]) + torn)
    result = verify_lines(read_lines([path]), expected_prev=GENESIS)
    assert (result.ok, result.records, result.torn_tail) == (True, 2, 40)
    assert result.last_hash == orjson.loads(lines[1])["hash"]
    assert _cli("verify", "--from-genesis", str(path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and "2 records" in out
    assert ("TRUNCATED TAIL: the last line is 40 bytes of a record a crash cut short (left out of the chain; "
            "the gateway removes it when it starts again)") in out
    # A broken line anywhere but at the very end is no torn tail: the chain is broken there.
    path.write_bytes(lines[0] + torn + b"\n" + lines[1] + lines[2])
    result = verify_lines(read_lines([path]), expected_prev=GENESIS)
    assert (result.ok, result.broken_line, result.reason) == (False, 2, "not valid JSON")
    # A restarted gateway cuts the torn tail and continues the chain from the last whole record.
    path.write_bytes(b"".join(lines[:2]) + torn)
    more = await _log_of(path, 1)
    assert len(more) == 3 and verify_lines(read_lines([path]), expected_prev=GENESIS).ok


async def test_verify_detects_an_inserted_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = await _log_of(path, 4)
    forged = orjson.loads(lines[1])  # a well-formed record with a correct hash of its own
    forged["n"] = 99
    forged["event_id"] = orjson.loads(lines[1])["event_id"] + "0"
    forged.pop("hash")
    forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
    path.write_bytes(b"".join([lines[0], lines[1], orjson.dumps(forged) + b"\n", lines[2], lines[3]]))
    result = verify_lines(read_lines([path]), expected_prev=GENESIS)
    assert (result.ok, result.broken_line) == (False, 3)
    assert "deleted, inserted or reordered" in (result.reason or "")
