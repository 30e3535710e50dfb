"""Checking an audit chain: ``triplock audit verify`` and the tests use :func:`verify_lines`.

A record's ``hash`` is sha256 of its canonical JSON without ``hash`` (sorted keys, orjson),
and its ``prev_hash`` is the previous record's ``hash``: editing, deleting, inserting or
reordering a record breaks the chain at that record, and ``event_id`` must increase.

A torn last line (a crash cut the last write short: no newline, not a whole record) is
tolerated and reported as ``torn_tail``: it was never a whole record (with durable answers,
its call was not answered: an answer waits for the whole write), and the gateway cuts it off
when it starts again. A line that is not a record anywhere else breaks the chain. (Whole
records cut off the end cannot be seen in one file alone: compare its last hash with another
sink's.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's hash covers: sorted-key JSON of everything but ``hash``."""
    return orjson.dumps({k: v for k, v in record.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    first_prev_hash: str | None = None
    broken_line: int | None = None
    broken_event_id: str | None = None
    reason: str | None = None
    last_hash: str | None = None
    torn_tail: int = 0  # bytes of a torn last line, left out of the chain


def verify_lines(lines: Iterable[bytes | str], expected_prev: str | None = None) -> VerifyResult:
    """Check a chain; ``expected_prev`` anchors the first record (None: accept its ``prev_hash``).

    Reports the first record that does not verify: edited (hash mismatch), deleted or
    reordered (``prev_hash`` is not the previous record's hash, or event ids go backwards).
    A torn last line is left out and reported as ``torn_tail`` (see the module's docstring).
    """
    prev = expected_prev
    first: str | None = None
    last_id = ""
    n = 0
    lineno = 0
    pending = iter(lines)
    raw = next(pending, None)
    while raw is not None:
        following = next(pending, None)  # one line of look-ahead: is this the last one?
        lineno += 1
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
        current = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        raw = following
        if not current.strip():
            continue
        n += 1
        reason, event_id, record = _check(current, prev, last_id)
        if reason == _NOT_JSON and following is None and not current.endswith("\n"):
            return VerifyResult(True, n - 1, first, last_hash=prev, torn_tail=size)
        if reason is not None:
            return VerifyResult(False, n - 1, first, lineno, event_id, reason, prev)
        assert record is not None
        if first is None:
            first = record.get("prev_hash")
        last_id = event_id if isinstance(event_id, str) else last_id
        prev = record["hash"]
    return VerifyResult(True, n, first, last_hash=prev)


_NOT_JSON = "not valid JSON"


def _check(text: str, prev: str | None, last_id: str) -> tuple[str | None, Any, dict[str, Any] | None]:
    """(reason it is broken or None, its event_id, the record) for one line."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _NOT_JSON, None, None
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        return "not an audit record (no hash)", None, None
    event_id = record.get("event_id")
    if record["hash"] != hashlib.sha256(canonical(record)).hexdigest():
        return "hash does not match the record's content (edited)", event_id, None
    if prev is not None and record.get("prev_hash") != prev:
        return ("prev_hash is not the previous record's hash (a record was deleted, inserted or reordered "
                "before this one)"), event_id, None
    if isinstance(event_id, str) and event_id <= last_id:
        return "event_id is not after the previous record's (reordered)", event_id, None
    return None, event_id, record


def read_lines(paths: Iterable[str | os.PathLike[str]]) -> Iterator[bytes]:
    """The lines of several files in order (rotated files first, then the active one)."""
    for path in paths:
        with open(path, "rb") as f:
            yield from f


__all__ = ["VerifyResult", "canonical", "read_lines", "verify_lines"]
