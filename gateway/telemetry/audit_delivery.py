"""Getting sealed audit lines to the sinks: one queue and task per sink, and the durability barrier.

:class:`SinkWorker` drains one sink's queue in batches; a line leaves the queue only once
the sink accepted it. A sink with a ``write_now`` (a local file without fsync) is written in
the sealing pass itself while nothing else waits for it; the task takes over retries. Every
worker receives every sealed line, in the same order, so "the first *n* records" means the
same records in every sink, and ``written`` (lines the sink has accepted) says how far a sink is.

:class:`DurabilityBarrier` is the group commit: a call's answer waits on a ticket (the
number of records emitted before it, its own included) until every sink has written that
many. All the answers whose records went out in one batch are released by that one
write; an answer never waits longer than ``timeout`` (a sink is down), and those that
gave up are counted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.ports.audit_sink import AuditSink

log = logging.getLogger("triplock.audit")

MAX_BATCH = 512


class DeliveryOwner(Protocol):
    """What a worker reports to (the audit log)."""

    linger: float

    def delivered(self, worker: SinkWorker, n: int) -> None: ...

    def failed(self, worker: SinkWorker) -> None: ...


class SinkWorker:
    """One sink's queue and the task that drains it."""

    def __init__(self, sink: AuditSink, owner: DeliveryOwner) -> None:
        self.sink = sink
        self.owner = owner
        self.queue: collections.deque[bytes] = collections.deque()
        self.written = 0  # lines this sink accepted since the log started
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.ok = True
        self.last_error = ""
        self.task: asyncio.Task[None] | None = None
        self._last_loud = 0.0

    def put(self, lines: list[bytes]) -> None:
        queue = self.queue
        queue.extend(lines)
        write_now = self.sink.write_now
        if write_now is not None and not self.owner.linger and len(queue) == len(lines):
            # Nothing else is waiting for this sink: write in the sealing pass itself, which spares
            # the answers waiting on these records a wake-up of the worker task per batch.
            try:
                write_now(lines)
            except Exception:  # the worker retries the batch, and reports the failure
                pass
            else:
                queue.clear()
                self.written += len(lines)
                self.owner.delivered(self, len(lines))
                return
        self.idle.clear()
        self.wake.set()

    async def run(self) -> None:
        backoff = 0.1
        queue = self.queue
        while True:
            if not queue:
                self.idle.set()
                self.wake.clear()
                await self.wake.wait()
            linger = self.owner.linger
            if linger and len(queue) < MAX_BATCH:
                # Without durable answers, let a batch build up, also under steady load: a thread
                # hop per few records cost far more than the records (~25 us per call). With durable
                # answers linger is 0: the batch is what was sealed meanwhile (group commit).
                await asyncio.sleep(linger)
            n = min(len(queue), MAX_BATCH)
            batch = [queue[i] for i in range(n)]
            try:
                await self.sink.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _ in range(n):  # only now: a record leaves the queue once its sink has it
                queue.popleft()
            self.written += n
            backoff = 0.1
            if not self.ok:
                self.ok = True
                log.warning("audit sink %s recovered; delivered the held records", self.sink.name)
            self.owner.delivered(self, n)

    def _failed(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if self.ok or now - self._last_loud > 30:
            self._last_loud = now
            log.error("audit sink %s is failing (%s): %d records held in memory, retrying; nothing is dropped",
                      self.sink.name, self.last_error, len(self.queue))
        self.ok = False
        self.owner.failed(self)


class DurabilityBarrier:
    """Futures released when every sink has written up to their ticket, or at their deadline.

    Tickets and deadlines only grow in the order waiters arrive, so one deque holds the waiters
    sorted by both: releasing is popping from the left, and one timer (for the oldest deadline)
    serves them all.
    """

    def __init__(self, timeout: float, on_expired: Callable[[int], None]) -> None:
        self.timeout = timeout
        self.durable_upto = 0  # records every sink has written
        self._on_expired = on_expired
        self._waiters: collections.deque[tuple[int, float, asyncio.Future[bool]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[bool] | None = None

    def wait(self, ticket: int) -> asyncio.Future[bool]:
        """A future: True once the first ``ticket`` records are written by every sink, False at the deadline."""
        loop = asyncio.get_running_loop()
        if ticket <= self.durable_upto:
            done = self._done
            if done is None or done.get_loop() is not loop:
                done = self._done = loop.create_future()
                done.set_result(True)
            return done
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append((ticket, loop.time() + self.timeout, fut))
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._expire)
        return fut

    def advance(self, upto: int) -> None:
        """Every sink has written the first ``upto`` records: release the answers waiting on them."""
        self.durable_upto = upto
        waiters = self._waiters
        while waiters and waiters[0][0] <= upto:
            fut = waiters.popleft()[2]
            if not fut.done():  # a cancelled waiter (client gone) is simply dropped
                fut.set_result(True)

    def _expire(self) -> None:
        self._timer = None
        waiters = self._waiters
        if not waiters:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = 0
        while waiters and waiters[0][1] <= now:
            fut = waiters.popleft()[2]
            if not fut.done():
                fut.set_result(False)
                expired += 1
        if expired:
            self._on_expired(expired)
        if waiters:
            self._timer = loop.call_at(waiters[0][1], self._expire)

    def release_all(self) -> None:
        """Shutdown: nobody waits any more (what is still queued is not durable)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        expired = 0
        while self._waiters:
            fut = self._waiters.popleft()[2]
            if not fut.done():
                fut.set_result(False)
                expired += 1
        if expired:
            self._on_expired(expired)


__all__ = ["MAX_BATCH", "DeliveryOwner", "DurabilityBarrier", "SinkWorker"]
