"""What the observers read of a running bus: a narrow, read-only view.

The listener, health checks, ``/metrics`` and lifecycle hooks see the bus
through these protocols, never the :class:`~ccbus.runtime.bus.Bus` class
itself (as pluggy hands a ``HookCaller`` a callable, not the plugin manager).
So nothing under :mod:`ccbus.observe` imports the module that wires
everything together, and a test can observe any object that has these
attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ccbus.observe.live import LiveFeed
    from ccbus.observe.logs import Redactor
    from ccbus.observe.traces import RuleTraces

__all__ = ["BusView", "ClusterView", "CounterView", "DeadLetterDesk", "HistogramView",
           "RuleStatsView", "SourceView", "cluster_of"]

#: A counter series as a snapshot lists it: name, labels, value.
CounterSample = tuple[str, dict[str, str], float]
#: A histogram series: labels, cumulative ``(bound, count)`` buckets, sum, count.
HistogramSeries = tuple[dict[str, str], list[tuple[float, int]], float, int]


class CounterView(Protocol):
    """The counters (:class:`ccbus.observe.metrics.Counters`), as observers use them."""

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None: ...
    def total(self, name: str) -> float: ...
    def snapshot(self) -> list[CounterSample]: ...


class HistogramView(Protocol):
    """A latency histogram (:class:`ccbus.observe.metrics.Histogram`), as ``/metrics`` reads it."""

    def series(self) -> Iterable[HistogramSeries]: ...


class SourceView(Protocol):
    """One configured source and how it is doing."""

    @property
    def plugin(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def restarts(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def last_error(self) -> str: ...
    @property
    def since(self) -> float: ...


class RuleStatsView(Protocol):
    """One rule's evaluation counts."""

    @property
    def evaluated(self) -> int: ...
    @property
    def matched(self) -> int: ...
    @property
    def throttled(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def missing_field(self) -> int: ...
    @property
    def over_budget(self) -> int: ...


class ClusterView(Protocol):
    """This instance's place in its group (``cluster:``), as observers show it."""

    @property
    def group(self) -> str: ...
    @property
    def instance(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def leader(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def failovers(self) -> int: ...
    @property
    def leading(self) -> bool: ...
    def reason(self) -> str: ...


def cluster_of(bus: object) -> ClusterView | None:
    """The bus's group membership, or None for a bus on its own (an optional attribute,
    so that views written before groups existed stay views)."""
    member: ClusterView | None = getattr(bus, "cluster", None)
    return member


class StartedFlag(Protocol):
    def is_set(self) -> bool: ...


class BusView(Protocol):
    """A running bus as its observers (and ``startup``/``shutdown`` hooks) see it.

    Example, in a plugin's ``startup`` hook::

        @hookimpl
        def startup(bus: BusView) -> None:
            log.info("ccbus started with %d rules", len(bus.rule_names()))
    """

    @property
    def counters(self) -> CounterView: ...
    @property
    def latency(self) -> HistogramView: ...
    @property
    def live(self) -> LiveFeed: ...
    @property
    def traces(self) -> RuleTraces: ...
    @property
    def redactor(self) -> Redactor: ...
    @property
    def start_time(self) -> float: ...
    @property
    def started(self) -> StartedFlag: ...
    @property
    def sources(self) -> Mapping[str, SourceView]: ...

    def storage_problem(self) -> str | None:
        """Why the bus accepts no input now (its state directory is full), None when it does."""
        ...

    def rule_names(self) -> list[str]:
        """The names of the rules loaded and routing, sorted."""
        ...

    def rule_stats(self) -> Mapping[str, RuleStatsView]:
        """Each rule's evaluation counts, by rule name."""
        ...

    async def outbox_counts(self) -> tuple[int, int]:
        """Calls pending in the outbox, and dead letters."""
        ...


class DeadLetterDesk(Protocol):
    """The dead letters as the live console lists and acts on them.

    Not part of :class:`BusView`: that is read-only and handed to plugins'
    hooks; only the listener's guarded routes (:mod:`ccbus.observe.admin`) get this.
    """

    async def dead_letter_list(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many dead letters there are, and the newest ``limit`` of them, newest first."""
        ...

    async def retry_dead_letters(self, ids: list[int]) -> list[int]:
        """Put dead letters back in the outbox; returns the ids moved (``ValueError``:
        this store cannot)."""
        ...

    async def purge_dead_letters(self, ids: list[int]) -> int:
        """Delete dead letters; returns how many (``ValueError``: this store cannot)."""
        ...
