"""Counters and histograms the bus keeps: events in, rule outcomes, actions, sources.

A deliberately small registry (a dict keyed by name and labels) that health,
``/metrics`` and ``ccbus status`` read; it costs one dict update per
increment on the hot path.  :mod:`ccbus.telemetry` turns it into Prometheus
families, so a new counter shows up in ``/metrics`` without further code.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["LATENCY_BUCKETS", "Counters", "Histogram", "KeyCache", "Labels", "SeriesKey"]

Labels = tuple[tuple[str, str], ...]
#: A counter series: its name and labels (see :meth:`Counters.key`).
SeriesKey = tuple[str, Labels]

#: Seconds: from milliseconds (a healthy local call) to minutes (retries behind a dead target).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0, 1800.0)


def _labels(labels: dict[str, str]) -> Labels:
    """Labels in name order, the key of a series.  Runs several times per event,
    so the common cases (none, one, two) take no ``sorted()``."""
    items = tuple(labels.items())
    if len(items) == 2:
        return items if items[0][0] < items[1][0] else (items[1], items[0])
    return items if len(items) < 2 else tuple(sorted(items))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeyCache(dict[K, V], Generic[K, V]):
    """Series keys made once per short key of the caller's (an action name, a
    ``(source, type)`` pair): ``cache[action]`` makes it on first use.

    For counters that move on every event or call, where building and ordering a
    label dict each time (:meth:`Counters.inc`) was a measurable share of the bus.
    """

    def __init__(self, make: Callable[[K], V]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, short: K) -> V:
        key = self[short] = self.make(short)
        return key


class Counters:
    def __init__(self) -> None:
        self._values: defaultdict[tuple[str, Labels], float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._values[(name, _labels(labels))] += amount

    def key(self, name: str, **labels: str) -> SeriesKey:
        """One series' key, for a path that runs per event and keeps it (see :meth:`add`)."""
        return (name, _labels(labels))

    def add(self, key: SeriesKey, amount: float = 1.0) -> None:
        """:meth:`inc` by a key from :meth:`key`: no label dict to build and order."""
        self._values[key] += amount

    def get(self, name: str, **labels: str) -> float:
        return self._values.get((name, _labels(labels)), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self._values.items() if n == name)

    def snapshot(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (name, dict(labels), value) for (name, labels), value in sorted(self._values.items())
        ]


@dataclass(slots=True)
class _Series:
    buckets: list[int]
    sum: float = 0.0
    count: int = 0


@dataclass(slots=True)
class Histogram:
    """Observations in fixed buckets (upper bounds, seconds), per label set."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    _series: dict[Labels, _Series] = field(default_factory=dict)

    def observe(self, value: float, **labels: str) -> None:
        self.add(_labels(labels), value)

    def key(self, **labels: str) -> Labels:
        """One series' key, for a path that runs per call and keeps it (see :meth:`add`)."""
        return _labels(labels)

    def add(self, key: Labels, value: float) -> None:
        """:meth:`observe` by a key from :meth:`key`."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series([0] * len(self.bounds))
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            series.buckets[index] += 1
        series.sum += value
        series.count += 1

    def series(self) -> Iterable[tuple[dict[str, str], list[tuple[float, int]], float, int]]:
        """Per label set: cumulative ``(upper bound, count)`` pairs, sum and count."""
        for labels, series in sorted(self._series.items()):
            running, cumulative = 0, []
            for bound, hits in zip(self.bounds, series.buckets, strict=True):
                running += hits
                cumulative.append((bound, running))
            yield dict(labels), cumulative, series.sum, series.count
