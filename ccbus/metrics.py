"""Counters the bus keeps: events in, rule outcomes, actions, source states.

A deliberately small registry (a dict keyed by name and labels) that the
health endpoint and ``ccbus status`` read; it costs one dict update per
increment on the hot path.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = ["Counters"]


class Counters:
    def __init__(self) -> None:
        self._values: defaultdict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(
            float
        )

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._values[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name: str, **labels: str) -> float:
        return self._values.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self._values.items() if n == name)

    def snapshot(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (name, dict(labels), value) for (name, labels), value in sorted(self._values.items())
        ]
