"""From an event to the action calls it causes: the one path every command shares.

``ccbus run`` executes what this returns; ``ccbus try``, ``ccbus test``,
``ccbus replay --dry-run`` and the demo only show it.  Keeping one path is
what makes a passing rule test mean something for production.

For each event: drop duplicates (same source and id within a window), ask
the engine for firings, render each firing's ``do:`` parameters from the
event, validate them against the action's schema, and expand ``emit``
calls into derived events that are routed in the same step (with a hop
limit, so two rules that emit each other's events cannot loop forever).

Depth alone does not bound the work: a rule with K ``emit`` actions of the
type it listens to fans out K + K² + ... events within the hop limit.  So one
event may cause at most :data:`MAX_DERIVED` derived events in all, whatever
their depth; each emit past that is dropped, counted by rule
(``ccbus_emit_dropped_total{reason="fan_out"}``, and ``reason="depth"`` for the
hop limit) and logged at most once a minute per rule, naming the event.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from pydantic import BaseModel, ValidationError

from ccbus.errors import EvaluationError, OverBudget
from ccbus.events.envelope import Event
from ccbus.observe.logs import LogEvery
from ccbus.records import Invocation, RenderFailure, Run
from ccbus.rules.budget import DEFAULT_EVENT_BUDGET, budget
from ccbus.rules.engine import Engine, Firing
from ccbus.rules.expressions import EnvelopeView
from ccbus.rules.model import PREVIOUS, Rule

__all__ = ["Outcome", "Pipeline"]

log = logging.getLogger("ccbus.pipeline")

#: How many generations of ``emit`` an event may start.
MAX_HOPS = 8
#: How many derived events one event may cause in all, every generation counted.
MAX_DERIVED = 100
#: Seconds between two log lines about dropped emits of one rule.
DROP_LOG_INTERVAL = 60.0
HOPS_EXTENSION = "ccbushops"


@dataclass(slots=True)
class Outcome:
    """What one step produced: firings, and action calls in order."""

    firings: list[Firing] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)
    duplicates: int = 0
    render_errors: list[RenderFailure] = field(default_factory=list)
    #: Derived events routed for this outcome's event(s).
    derived: int = 0
    #: Emits dropped, by (rule, reason): ``depth`` (hop limit) or ``fan_out`` (:data:`MAX_DERIVED`).
    emits_dropped: dict[tuple[str, str], int] = field(default_factory=dict)


class Pipeline:
    """Routes events and renders actions, without executing anything."""

    def __init__(
        self,
        engine: Engine,
        *,
        dedup_window: float = 600.0,
        dedup_size: int = 100_000,
        observer: Callable[[Event, list[Firing], list[Invocation]], None] | None = None,
        event_budget: float = DEFAULT_EVENT_BUDGET,
    ) -> None:
        self.engine = engine
        #: Seconds one event's rules, templates and emitted events may take in all
        #: (see :mod:`ccbus.rules.budget`).
        self.event_budget = event_budget
        self.dedup_window = dedup_window
        self.dedup_size = dedup_size
        self.observer = observer
        # An OrderedDict, not a dict: evicting the oldest id from a plain dict with
        # ``next(iter(d))`` steps over every slot deleted before it, so a bus that has
        # seen ``dedup_size`` ids slows down with every event until the dict resizes.
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.duplicates = 0
        self.hop_limit_drops = 0
        self.fan_out_drops = 0
        self._drop_log = LogEvery(DROP_LOG_INTERVAL)  # per rule and reason

    def process(self, event: Event, now: float) -> Outcome:
        """Route one event (and whatever it emits); returns the action calls."""
        outcome = Outcome()
        if self._duplicate(event, now):
            outcome.duplicates += 1
            return outcome
        # budget.start()/restore() inlined: this runs for every event
        saved = budget.deadline, budget.seconds
        budget.deadline = min(saved[0], perf_counter() + self.event_budget)
        budget.seconds = self.event_budget
        try:
            firings = self.engine.route(event, now)
            if firings or self.observer is not None:  # most events fire nothing: no step
                self._step(event, firings, now, outcome)
        finally:
            budget.deadline, budget.seconds = saved
        return outcome

    def process_due(self, now: float) -> Outcome:
        """Fire the ``for`` timers that are due."""
        outcome = Outcome()
        by_event: dict[int, list[Firing]] = {}
        for firing in self.engine.due(now):
            by_event.setdefault(id(firing.event), []).append(firing)
        for firings in by_event.values():
            saved = budget.start(self.event_budget)
            try:
                self._step(firings[0].event, firings, now, outcome)
            finally:
                budget.restore(saved)
        return outcome

    def _step(self, event: Event, firings: list[Firing], now: float, outcome: Outcome) -> None:
        outcome.firings.extend(firings)
        made: list[Invocation] = []
        for firing in firings:
            made.extend(
                self.render_stage(firing.rule, firing.event, 0, now, outcome, trace=firing.trace)
            )
        if self.observer is not None:
            self.observer(event, firings, made)
        outcome.invocations.extend(made)
        for invocation in made:
            inline = invocation.spec.inline
            if inline is None:
                continue
            hops = int(event.extensions.get(HOPS_EXTENSION, 0)) + 1
            for derived in inline(invocation.params, event, invocation.rule):
                if hops > MAX_HOPS:
                    self.hop_limit_drops += 1
                    self._dropped(outcome, invocation, derived, "depth",
                                  f"events emitted {hops} generations deep, past the limit "
                                  f"of {MAX_HOPS} (rules emitting each other's events?)")
                    continue
                if outcome.derived >= MAX_DERIVED:
                    self.fan_out_drops += 1
                    self._dropped(outcome, invocation, derived, "fan_out",
                                  f"one event may cause at most {MAX_DERIVED} derived events "
                                  "(a rule emitting several events of its own type?)")
                    continue
                outcome.derived += 1
                derived.extensions[HOPS_EXTENSION] = hops
                self._step(derived, self.engine.route(derived, now), now, outcome)

    def _dropped(
        self, outcome: Outcome, invocation: Invocation, derived: Event, reason: str, why: str
    ) -> None:
        """Count a dropped emit on the outcome (the bus adds it to /metrics); log it
        at most once a minute per rule and reason."""
        key = (invocation.rule, reason)
        outcome.emits_dropped[key] = outcome.emits_dropped.get(key, 0) + 1
        held_back = self._drop_log.due(key)
        if held_back is not None:
            log.warning(
                "rule %s: emit of %s dropped while routing event %s id=%s: %s "
                "(counted in ccbus_emit_dropped_total; logged at most once a minute%s)",
                invocation.rule,
                derived.type,
                invocation.event.type,
                invocation.event.id,
                why,
                f", {held_back} more since the last line" if held_back else "",
            )

    def continue_after(
        self, rule: Rule, event: Event, index: int, result: Any, now: float
    ) -> Outcome | None:
        """The calls that waited for action ``index`` of ``rule``: rendered now that
        it succeeded, with its ``result`` as ``previous``.

        None (nothing to do, the common case) unless the action after ``index``
        reads ``previous``.  The dispatcher calls this before it forgets the
        finished call, so a crash in between runs that call again rather than
        losing what follows it.
        """
        if not rule.feeds_next(index):
            return None
        outcome = Outcome()
        saved = budget.start(self.event_budget)
        try:
            outcome.invocations = self.render_stage(
                rule, event, index + 1, now, outcome, previous=as_previous(result)
            )
        finally:
            budget.restore(saved)
        return outcome

    def render_stage(
        self,
        rule: Rule,
        event: Event,
        start: int,
        now: float,
        outcome: Outcome,
        *,
        previous: Any = None,
        trace: Run | None = None,
    ) -> list[Invocation]:
        """Render ``rule``'s actions from ``start`` up to the next one that waits
        for the result of the one before it (see :attr:`ActionCall.waits_for_previous`).
        ``trace``: the firing's trace run, handed on to its calls."""
        view = EnvelopeView(event)
        data = event.data if start == 0 else {**event.data, PREVIOUS: previous}
        made = []
        for index in range(start, len(rule.actions)):
            call = rule.actions[index]
            if index > start and call.waits_for_previous:
                break
            try:
                if call.validated is not None:  # no holes: nothing to render, nothing to spend
                    params = call.validated
                elif budget.spent():
                    raise budget.exceeded("not rendered")
                else:
                    # the schema's validator itself: ``model_validate`` only wraps it, per call
                    params = call.spec.params.__pydantic_validator__.validate_python(
                        call.params.render(data, view)
                    )
            except (EvaluationError, ValidationError) as err:
                reason = _short(err)
                message = f"action {index + 1} ({call.name}, line {call.line}): {reason}"
                self.engine.record_error(
                    rule,
                    self.engine.stats[rule.name],
                    event,
                    (OverBudget if isinstance(err, OverBudget) else EvaluationError)(message),
                    now,
                    consequence="this action is skipped, the rule's other actions run",
                )
                outcome.render_errors.append(
                    RenderFailure(rule.name, call.name, index, event, f"line {call.line}: {reason}")
                )
                continue
            made.append(
                Invocation(
                    rule=rule.name,
                    action=call.name,
                    index=index,
                    params=params,
                    event=event,
                    spec=call.spec,
                    feeds_next=rule.feeds_next(index),
                    trace=trace,
                )
            )
        return made

    def remember(self, seen: list[tuple[str, str, float]]) -> None:
        """Fill the duplicate window with ``(source, id, first seen)``, oldest first
        (a group's new leader: the ids whose calls its predecessor recorded)."""
        for source, event_id, at in seen:
            self._seen[(source, event_id)] = at
            self._seen.move_to_end((source, event_id))
        while len(self._seen) > self.dedup_size:
            self._seen.popitem(last=False)

    def _duplicate(self, event: Event, now: float) -> bool:
        key = (event.source, event.id)
        seen = self._seen
        first = seen.get(key)
        if first is not None and now - first < self.dedup_window:
            self.duplicates += 1
            return True
        seen[key] = now
        if first is not None:
            seen.move_to_end(key)
        elif len(seen) > self.dedup_size:
            seen.popitem(last=False)
        return False


def as_previous(result: Any) -> Any:
    """What a rule's next action sees as ``previous``: an action's return value
    as data (a mapping, or what its ``as_result()`` or dataclass fields give)."""
    as_result = getattr(result, "as_result", None)
    if callable(as_result):
        return as_result()
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return result


def _short(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"parameter {where}: {first['msg']}" if where else str(first["msg"])
    return str(err)
