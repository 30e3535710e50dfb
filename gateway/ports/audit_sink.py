"""Where sealed audit records go: the interface ``adapters/audit_sinks.py`` implements."""

from __future__ import annotations

from typing import Protocol


class AuditSink(Protocol):
    """A destination for sealed audit lines (a rotating file, stdout, a Redis stream)."""

    name: str

    async def tail_hash(self) -> str | None:
        """The ``hash`` of the last record this sink holds, to continue the chain (None: none/unknown)."""
        ...

    async def write(self, lines: list[bytes]) -> None:
        """Deliver complete JSON lines (each ends in newline); raise on any failure."""
        ...

    async def aclose(self) -> None: ...
