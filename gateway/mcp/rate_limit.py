"""Requests per principal: one token bucket each, in this process.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes one.
Checking is O(1) (a dict lookup and some float arithmetic, no lock: the event loop is one
thread). A bucket left alone long enough to refill is the same as no bucket, so idle ones are
dropped by a sweep every ``sweep_seconds``, which keeps the table to the principals seen
recently. Per process: with N gateway processes a principal gets N times the rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets keyed by principal id."""

    __slots__ = ("_buckets", "_clock", "_full_after", "_next_sweep", "_sweep_every", "burst", "rate")

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic, sweep_seconds: float = 60.0
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}  # principal -> [tokens, when last updated]
        self._clock = clock
        self._full_after = self.burst / rate  # seconds an empty bucket takes to refill
        self._sweep_every = max(sweep_seconds, self._full_after)
        self._next_sweep = clock() + self._sweep_every

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, principal: str) -> float:
        """Take one token for ``principal``: 0.0 when allowed, else the seconds until one is there."""
        now = self._clock()
        bucket = self._buckets.get(principal)
        if bucket is None:
            if now >= self._next_sweep:
                self._sweep(now)
            self._buckets[principal] = [self.burst - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def refusal(self, wait: float) -> str:
        """What a refused caller is told: the limit by name, and when to retry."""
        return (
            f"Too many requests: over the per-principal rate limit requests_per_principal (limits.requests_per_second"
            f" = {self.rate:g}, limits.request_burst = {self.burst:g}); retry after {retry_after(wait)}s"
        )

    def _sweep(self, now: float) -> None:
        # Only when a new principal arrives: a table of the recently active ones, swept once a minute.
        idle_since = now - self._full_after
        self._buckets = {p: b for p, b in self._buckets.items() if b[1] > idle_since}
        self._next_sweep = now + self._sweep_every


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait of ``seconds``."""
    return str(max(1, math.ceil(seconds)))


LIMIT_EXCEEDED = -32012
"""JSON-RPC error code: a per-principal limit refused the request (server-defined range, next to the
guard's -32010 denied and -32011 held). Sent with HTTP 429."""
