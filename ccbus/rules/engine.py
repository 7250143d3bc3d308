"""Matching events to rules: conditions, per-key gates and ``for`` timers.

The engine is synchronous and does no I/O: ``route(event, now)`` returns the
firings for one event and ``due(now)`` the firings of expired ``for``
timers.  The bus (and ``ccbus test``, ``ccbus try``) turn firings into
action calls.  Because routing is one synchronous step, swapping the rule
set between two events is atomic: no event sees half a reload, none is
routed twice.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from ccbus.errors import EvaluationError, MissingField, OverBudget
from ccbus.events.envelope import Event
from ccbus.observe.logs import LogEvery
from ccbus.observe.traces import RuleTraces
from ccbus.records import (
    COUNTING,
    FIRED,
    NO_MATCH,
    THROTTLED,
    TIMER_ARMED,
    TIMER_FIRED,
    TIMER_RUNNING,
    Run,
)
from ccbus.rules.budget import budget
from ccbus.rules.expressions import EnvelopeView, bounded_text
from ccbus.rules.index import RuleIndex
from ccbus.rules.model import Rule
from ccbus.rules.state import COUNT, FOR, THROTTLE, Pending, RuleState, StateTable

__all__ = ["Engine", "Firing", "RuleStats"]

log = logging.getLogger("ccbus.rules")

#: A rule that keeps failing logs at most once per this many seconds.
ERROR_LOG_INTERVAL = 60.0


@dataclass(slots=True)
class Firing:
    """A rule decided to act on an event (not frozen: one is made per firing, and a
    frozen dataclass's ``__init__`` costs a third more)."""

    rule: Rule
    event: Event
    #: The run recorded for it when traces are on: its calls are attached there.
    trace: Run | None = None


@dataclass(slots=True)
class RuleStats:
    """Counters per rule name; they survive reloads of the rule."""

    evaluated: int = 0
    matched: int = 0
    fired: int = 0
    throttled: int = 0
    errors: int = 0
    missing_field: int = 0
    #: Evaluations and renders not done because the event had used up its budget.
    over_budget: int = 0
    last_error: str = ""


class Engine:
    """Routes events through the current rule index."""

    def __init__(self, rules: list[Rule] | None = None, *, state: StateTable | None = None) -> None:
        self.state = state or StateTable()
        self.stats: dict[str, RuleStats] = {}
        self._timers: list[tuple[float, int, str, str]] = []
        #: timers armed so far (also their heap tie-breaker): the bus compares it
        #: before and after routing an event to know whether to wake its timer task
        self.timers_armed = 0
        #: When set, every evaluation is recorded (see :mod:`ccbus.observe.traces`).
        self.tracer: RuleTraces | None = None
        self._log_every = LogEvery(ERROR_LOG_INTERVAL)  # failed evaluations, per rule
        self.index = RuleIndex([])
        self.swap(rules or [])

    # -- rule set -----------------------------------------------------------------

    def swap(self, rules: list[Rule]) -> dict[str, list[str]]:
        """Replace the rule set at once; returns ``{"added": [...], "removed": [...], ...}``.

        A rule keeps its per-key state across the swap when its name and gate
        are unchanged; otherwise the state starts afresh.
        """
        old = {r.name: r for r in self.index.rules}
        new = {r.name: r for r in rules}
        changes = {
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(
                n for n in new.keys() & old.keys() if _fingerprint(new[n]) != _fingerprint(old[n])
            ),
        }
        self.index = RuleIndex(rules)
        self.state.retain({r.name for r in rules if r.gate is not None})
        for rule in rules:
            self.stats.setdefault(rule.name, RuleStats())
            if rule.gate is not None:
                self.state.for_rule(rule.name, rule.gate.signature)
        self._rebuild_timers()
        return changes

    def signatures(self) -> dict[str, tuple[Any, ...]]:
        return {r.name: r.gate.signature for r in self.index.rules if r.gate is not None}

    def _rebuild_timers(self) -> None:
        self._timers = []
        for rule in self.index.rules:
            if rule.gate is None or rule.gate.kind != FOR:
                continue
            state = self.state.for_rule(rule.name, rule.gate.signature)
            for key, pending in state.pending.items():
                if pending.event is not None:
                    self._push_timer(pending.deadline, rule.name, key)

    # -- routing --------------------------------------------------------------------

    def route(self, event: Event, now: float) -> list[Firing]:
        """The firings ``event`` causes now. Never raises for a rule's failure."""
        rules = self.index.lookup(event.type)
        if not rules:
            return []
        firings: list[Firing] = []
        data = event.data
        view = EnvelopeView(event)
        trace = self.tracer
        deadline = budget.deadline
        for rule in rules:
            stats = self.stats[rule.name]
            stats.evaluated += 1
            ok = True
            condition: bool | str | None = None
            if perf_counter() > deadline:
                # not evaluated, and no gate state touched: as if the rule did not match
                self.record_error(rule, stats, event, budget.exceeded("not evaluated"), now)
                if trace is not None:
                    trace.evaluated(rule.name, event, "error: over budget", NO_MATCH)
                continue
            if rule.condition is not None:
                try:
                    ok = condition = bool(rule.condition.evaluate(data, view))
                except OverBudget as err:
                    self.record_error(rule, stats, event, err, now)
                    if trace is not None:
                        trace.evaluated(rule.name, event, f"error: {err}", NO_MATCH)
                    continue
                except EvaluationError as err:
                    self.record_error(rule, stats, event, err, now)
                    ok, condition = False, f"error: {err}"
            gate = rule.gate
            if gate is not None and gate.kind == FOR:
                # a false condition matters too: it cancels the key's timer
                key = self._key(rule, gate.key, event, view, now)
                if key is not None:
                    stats.matched += ok
                    armed = self._for(rule, key, event, ok, now)
                    if trace is not None:
                        verdict = (TIMER_ARMED if armed else TIMER_RUNNING) if ok else NO_MATCH
                        trace.evaluated(rule.name, event, condition, verdict)
                continue
            if not ok:
                if trace is not None:
                    trace.evaluated(rule.name, event, condition, NO_MATCH)
                continue
            stats.matched += 1
            if gate is not None:
                if gate.kind == COUNT:
                    key = self._key(rule, gate.key, event, view, now)
                    if key is None or not self._count(rule, key, now):
                        if trace is not None:
                            trace.evaluated(rule.name, event, condition, COUNTING)
                        continue
                if not self._throttle_ok(rule, event, view, now):
                    if trace is not None:
                        trace.evaluated(rule.name, event, condition, THROTTLED)
                    continue
            stats.fired += 1
            firings.append(Firing(
                rule, event,
                None if trace is None else trace.evaluated(rule.name, event, condition, FIRED),
            ))
        return firings

    def _key(
        self, rule: Rule, expression: Any, event: Event, view: EnvelopeView, now: float
    ) -> str | None:
        """The rule's state key for this event, or None (counted) when it cannot be had."""
        try:
            return bounded_text(expression.evaluate(event.data, view))
        except EvaluationError as err:
            self.record_error(rule, self.stats[rule.name], event, err, now)
            return None

    def due(self, now: float) -> list[Firing]:
        """Firings of ``for`` timers whose time has come."""
        firings: list[Firing] = []
        while self._timers and self._timers[0][0] <= now:
            deadline, _, name, key = heapq.heappop(self._timers)
            live = self._live_timer(deadline, name, key)
            if live is None:
                continue  # cancelled, superseded, or its rule is gone
            rule, state = live
            pending = state.pending[key]
            event = pending.event
            assert event is not None
            pending.event = None  # fired: stays quiet until the condition resets
            self.state.touch(name, FOR, state.pending, key)
            fires = self._throttle_ok(rule, event, EnvelopeView(event), now)
            run = None
            if self.tracer is not None:
                run = self.tracer.evaluated(name, event, True, TIMER_FIRED if fires else THROTTLED)
            if fires:
                self.stats[name].fired += 1
                firings.append(Firing(rule, event, run))
        return firings

    def armed_timers(self) -> list[tuple[float, str, str]]:
        """The ``for`` timers still to fire, earliest first: ``(deadline, rule, key)``."""
        return [
            (deadline, name, key)
            for deadline, _, name, key in sorted(self._timers)
            if self._live_timer(deadline, name, key) is not None
        ]

    def _live_timer(self, deadline: float, name: str, key: str) -> tuple[Rule, RuleState] | None:
        """The rule and its state if this heap entry is still the key's armed timer
        (None: cancelled by a false condition, superseded, or the rule is gone)."""
        rule = self.index.by_name(name)
        if rule is None or rule.gate is None:
            return None
        state = self.state.for_rule(name, rule.gate.signature)
        pending = state.pending.get(key)
        if pending is None or pending.event is None or pending.deadline != deadline:
            return None
        return rule, state

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def sweep(self, now: float) -> int:
        """Forget keys whose windows are empty (call periodically)."""
        widths = {
            r.name: (r.gate.window if r.gate.kind == COUNT else 0.0, r.gate.throttle_window)
            for r in self.index.rules
            if r.gate is not None
        }
        return self.state.sweep(now, widths)

    # -- gates ------------------------------------------------------------------------

    def _for(self, rule: Rule, key: str, event: Event, ok: bool, now: float) -> bool:
        """Arm or cancel the key's timer; True when this event armed it."""
        assert rule.gate is not None
        state = self.state.for_rule(rule.name, rule.gate.signature)
        pending = state.pending.get(key)
        if not ok:
            if pending is not None:
                del state.pending[key]
                self.state.dirty.add((rule.name, FOR, key))
            return False
        if pending is None:
            deadline = now + rule.gate.window
            state.pending[key] = Pending(deadline, event)
            self.state.touch(rule.name, FOR, state.pending, key)
            self._push_timer(deadline, rule.name, key)
            return True
        return False

    def _count(self, rule: Rule, key: str, now: float) -> bool:
        assert rule.gate is not None
        state = self.state.for_rule(rule.name, rule.gate.signature)
        times = state.counts.get(key)
        if times is None:
            times = state.counts[key] = []
        horizon = now - rule.gate.window
        while times and times[0] <= horizon:
            times.pop(0)
        times.append(now)
        reached = len(times) >= rule.gate.threshold
        if reached:
            times.clear()  # the next firing needs a fresh set of matches
        self.state.touch(rule.name, COUNT, state.counts, key)
        return reached

    def _throttle_ok(self, rule: Rule, event: Event, view: EnvelopeView, now: float) -> bool:
        gate = rule.gate
        if gate is None or gate.throttle_key is None:
            return True
        key = self._key(rule, gate.throttle_key, event, view, now)
        if key is None:
            return False
        state = self.state.for_rule(rule.name, gate.signature)
        times = state.throttles.get(key)
        if times is None:
            times = state.throttles[key] = []
        horizon = now - gate.throttle_window
        while times and times[0] <= horizon:
            times.pop(0)
        if len(times) >= gate.throttle_max:
            self.stats[rule.name].throttled += 1
            return False
        times.append(now)
        self.state.touch(rule.name, THROTTLE, state.throttles, key)
        return True

    def _push_timer(self, deadline: float, rule: str, key: str) -> None:
        self.timers_armed += 1
        heapq.heappush(self._timers, (deadline, self.timers_armed, rule, key))

    def record_error(
        self,
        rule: Rule,
        stats: RuleStats,
        event: Event,
        err: EvaluationError,
        now: float,
        consequence: str = "the rule counts as not matching",
    ) -> None:
        """Count a failed evaluation; log it at most once a minute per rule."""
        if isinstance(err, MissingField):
            stats.missing_field += 1
        elif isinstance(err, OverBudget):
            stats.over_budget += 1
        else:
            stats.errors += 1
        stats.last_error = f"{err} (event {event.type} {event.id})"
        # over budget has its own once-a-minute line: a rule's ordinary errors must not hide it
        if self._log_every.due((rule.name, type(err) is OverBudget)) is not None:
            log.warning(
                "rule %s (%s): %s on event %s id=%s; %s "
                "(further errors of this rule are counted, logged once a minute)",
                rule.name,
                rule.where,
                err,
                event.type,
                event.id,
                consequence,
            )


def _fingerprint(rule: Rule) -> tuple[Any, ...]:
    return (
        rule.patterns,
        rule.condition.source if rule.condition else None,
        rule.gate.signature if rule.gate else None,
        tuple((a.name, a.params.source) for a in rule.actions),
    )
