"""Cheap per-call deadlines for the upstream hot path: ``async with deadline(seconds): ...``.

Why not ``asyncio.timeout``: on uvloop each use costs about 11 µs (a timer handle armed and
cancelled, rescheduling, task bookkeeping), measured on the benchmark machine, and every
proxied call needs one. Here a block only registers itself in a dict; one sweep per
``RESOLUTION`` seconds, armed only while blocks are registered, cancels the tasks whose
deadline has passed. A deadline may fire up to ``RESOLUTION`` late, which is fine for call
timeouts measured in seconds.

Semantics match ``asyncio.timeout``: the block's task is cancelled, and the ``CancelledError``
leaving the block becomes ``TimeoutError``; a cancellation from anyone else passes through.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

RESOLUTION = 0.05


class _Sweeper:
    """The registered blocks of one event loop and the one timer that checks them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.blocks: dict[Deadline, None] = {}
        self.armed = False

    def add(self, block: Deadline) -> None:
        self.blocks[block] = None
        if not self.armed:
            self.armed = True
            self.loop.call_later(RESOLUTION, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        for block in [b for b in self.blocks if b.when <= now]:
            del self.blocks[block]
            block.expire()
        if self.blocks:
            self.loop.call_later(RESOLUTION, self.sweep)
        else:
            self.armed = False


_SWEEPERS: dict[asyncio.AbstractEventLoop, _Sweeper] = {}


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        for old in [lp for lp in _SWEEPERS if lp.is_closed()]:  # loops of finished test runs
            del _SWEEPERS[old]
        sweeper = _SWEEPERS[loop] = _Sweeper(loop)
    return sweeper


class Deadline:
    """An async context manager that turns overrunning the deadline into ``TimeoutError``."""

    __slots__ = ("_sweeper", "expired", "seconds", "task", "when")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.when = 0.0
        self.task: asyncio.Task[object] | None = None
        self._sweeper: _Sweeper | None = None

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task(loop)
        if self.task is None:
            raise RuntimeError("deadline() must be used inside a task")
        self.when = loop.time() + self.seconds
        self._sweeper = _sweeper(loop)
        self._sweeper.add(self)
        return self

    def expire(self) -> None:
        # The task is suspended at an await inside the block (the block is still registered),
        # so the cancellation is delivered inside it.
        self.expired = True
        assert self.task is not None
        self.task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sweeper is not None:
            self._sweeper.blocks.pop(self, None)
        if self.expired and exc_type is asyncio.CancelledError:
            assert self.task is not None
            if self.task.uncancel() == 0:  # only our cancellation: it is a timeout
                raise TimeoutError from exc
        return None


def deadline(seconds: float) -> Deadline:
    """``async with deadline(5.0):`` raises ``TimeoutError`` if the block takes longer (±``RESOLUTION``)."""
    return Deadline(seconds)


__all__ = ["RESOLUTION", "Deadline", "deadline"]
