"""What the observers read of a running bus: a narrow, read-only view.

The listener, health checks, ``/metrics`` and lifecycle hooks see the bus
through these protocols, never the :class:`~ccbus.runtime.bus.Bus` class
itself (as pluggy hands a ``HookCaller`` a callable, not the plugin manager).
So nothing under :mod:`ccbus.observe` imports the module that wires
everything together, and a test can observe any object that has these
attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ccbus.observe.live import LiveFeed
    from ccbus.observe.logs import Redactor
    from ccbus.observe.metrics import Counters, Histogram
    from ccbus.observe.traces import RuleTraces

__all__ = ["BusView", "RuleStatsView", "SourceView"]


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
    def counters(self) -> Counters: ...
    @property
    def latency(self) -> Histogram: ...
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

    def rule_names(self) -> list[str]:
        """The names of the rules loaded and routing, sorted."""
        ...

    def rule_stats(self) -> Mapping[str, RuleStatsView]:
        """Each rule's evaluation counts, by rule name."""
        ...

    async def outbox_counts(self) -> tuple[int, int]:
        """Calls pending in the outbox, and dead letters."""
        ...
