"""Lock-free counters and histograms for the instruments every request touches.

Why: ``prometheus_client`` guards each value with a lock (a histogram observation takes two),
which measured about 2.5 µs per observation and 1 µs per increment on the benchmark machine;
a request records three of them. All recording happens on the event loop's thread, so plain
Python numbers suffice. Collection (``/metrics`` on the loop, the OTLP pusher on its own
thread) reads a snapshot; a histogram's count is derived from its buckets, so a snapshot is
always self-consistent even when it races a recording.

They register into the same ``CollectorRegistry`` as the other instruments and expose the
same names and labels a ``prometheus_client`` Counter or Histogram would.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class HistogramChild:
    """One label set of a :class:`HotHistogram`."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # bisect_left: the first bucket whose upper bound is >= value, Prometheus' "le".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class CounterChild:
    """One label set of a :class:`HotCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HotHistogram(Collector):
    """A histogram with ``labels(*values)`` children, like ``prometheus_client.Histogram``."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...],
                 unit: str = "") -> None:
        self.name, self.documentation, self.labelnames, self.unit = name, documentation, labelnames, unit
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames, unit=self.unit)
        for values, child in list(self._children.items()):
            counts = list(child.counts)  # snapshot; count = sum of buckets, so it always matches +Inf
            cumulative, running = [], 0
            for bound, n in zip((*map(_le, self.bounds), "+Inf"), counts, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            family.add_metric(list(values), cumulative, child.sum)
        yield family

    def describe(self) -> list[Any]:
        return []


class HotCounter(Collector):
    """A counter with ``labels(*values)`` children, like ``prometheus_client.Counter``."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = CounterChild()
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value, created=child.created)
        yield family

    def describe(self) -> list[Any]:
        return []


def _le(bound: float) -> str:
    # prometheus_client's spelling of bucket bounds (floatToGoString): 0.01, 1.0, 300.0
    return repr(float(bound))


__all__ = ["CounterChild", "HistogramChild", "HotCounter", "HotHistogram"]
