"""Each event's time budget: what all of its rules' evaluation and rendering may cost.

Why a budget per event rather than limits per call: the library bounds each
call (a regular expression gives up after ``REGEX_TIMEOUT``, strings and
lists have size limits), but calls add up.  A condition with sixty regular
expressions near their limit, or a template with a hundred such holes, held
the one event loop (every source, ``/healthz``) for seconds.  So the
pipeline starts a budget when it takes an event (``event_budget`` in the
config, 50 ms by default) that the event's rules, templates and the events
it emits share:

* the engine checks it before each rule and the pipeline before each
  action it renders: once it is spent, the rule counts as not matching and
  the action as failed to render (:class:`~ccbus.errors.OverBudget`,
  counted per rule in ``ccbus_rule_errors_total{kind="over_budget"}``);
* the library's costly functions (regular expressions, building lists)
  read :func:`remaining`: a regular expression runs at most until the
  deadline, not a fresh ``REGEX_TIMEOUT`` per call.

The deadline lives in one module-level object, not in an argument, because
the library functions are called by compiled rule code that has no way to
pass it.  Not a ``threading.local``: reading one costs several times a plain
attribute on the hottest path, and events are routed on the event loop's
thread only (``ccbus test`` and ``ccbus try`` route on their one thread too).
"""

from __future__ import annotations

import math
from time import perf_counter

from ccbus.errors import OverBudget

__all__ = ["DEFAULT_EVENT_BUDGET", "EventBudget", "OverBudget", "budget", "remaining"]

#: Seconds one event's rules and templates may take in all (``event_budget``).
DEFAULT_EVENT_BUDGET = 0.05


class EventBudget:
    """The deadline of the event being routed (``inf``: none is)."""

    __slots__ = ("deadline", "seconds")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.seconds = math.inf

    def start(self, seconds: float) -> tuple[float, float]:
        """Start a budget of ``seconds``; returns what :meth:`restore` needs after.

        A budget started inside another (``ccbus test`` routing inside a
        routed step) never extends the outer one.
        """
        saved = (self.deadline, self.seconds)
        self.deadline = min(self.deadline, perf_counter() + seconds)
        self.seconds = seconds
        return saved

    def restore(self, saved: tuple[float, float]) -> None:
        self.deadline, self.seconds = saved

    def spent(self) -> bool:
        """True when the deadline has passed."""
        return perf_counter() > self.deadline

    def exceeded(self, what: str) -> OverBudget:
        """The error for ``what`` not done because the budget ran out."""
        return OverBudget(f"{what}: the event used up its budget of {self.seconds * 1000:g} ms")


#: The one budget that the engine, the pipeline and the library share.
budget = EventBudget()


def remaining() -> float:
    """Seconds left of the current event's budget (``inf`` outside routing)."""
    return budget.deadline - perf_counter()
