"""Audit event ids: a process that continues another's chain makes ids after the chain's last one,
even within the same millisecond (the restart that used to make `audit verify` say "reordered")."""

from __future__ import annotations

from gateway.telemetry.audit_ids import EventIds


def test_ids_continue_after_another_processs_last_id_in_the_same_millisecond() -> None:
    earlier = EventIds()
    last = [earlier.next(1_000) for _ in range(3)][-1]
    for _ in range(50):  # a fresh process draws its random part afresh: without start_after, half are lower
        later = EventIds()
        later.start_after(last)
        first, second = later.next(1_000), later.next(1_000)
        assert last < first < second


def test_a_later_millisecond_is_greater_and_a_foreign_id_is_ignored() -> None:
    ids = EventIds()
    ids.start_after("evt_" + "f" * 32)
    assert ids.next(1)[:16] == "evt_ffffffffffff"  # the clock behind the tail: ids still follow it
    fresh = EventIds()
    fresh.start_after("not-an-event-id")
    assert fresh.next(5_000).startswith("evt_000000001388")
