"""Where sealed audit records go: the interface ``adapters/audit_sinks.py`` implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class AuditSink(Protocol):
    """A destination for sealed audit lines (a rotating file, stdout, a Redis stream)."""

    name: str
    # A synchronous write for sinks where one takes microseconds (a local file without fsync): the
    # audit log may call it in its sealing pass instead of waking the sink's task. None: write only.
    write_now: Callable[[list[bytes]], None] | None

    async def tail_hash(self) -> str | None:
        """The ``hash`` of the last record this sink holds, to continue the chain (None: none/unknown).
        A sink that can also sets ``tail_event_id`` (the record's ``event_id``), so the ids of the records
        that follow come after it even when the previous process wrote in the same millisecond."""
        ...

    async def write(self, lines: list[bytes]) -> None:
        """Deliver complete JSON lines (each ends in newline); raise on any failure.

        Return only once the sink holds them (a file: written to it; Redis: acknowledged):
        with durable answers, calls' answers wait for this.
        """
        ...

    async def aclose(self) -> None: ...
