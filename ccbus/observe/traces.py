"""What each rule did with its last N events: the answer to "why did (not) it fire?".

Like Home Assistant's automation traces, a run is recorded each time a rule
is evaluated: the event, the condition's result, the verdict (fired, no
match, throttled, counting, timer armed or running), the rendered calls,
and, as the dispatcher settles them, each call's outcome (ok, retry,
dead letter).  Each rule keeps its last ``limit`` runs in a ring; the
engine calls :meth:`RuleTraces.evaluated` only when traces are on, so the
routing benchmark's path stays as it was.

Runs hold references to events and parameters and turn them into JSON only
when asked (``GET /traces/RULE``, ``ccbus traces RULE``), so recording costs
a deque append.  With secrets configured, a call's parameters are kept as
the outbox keeps them instead, with references (``${secret:NAME}``) in
place of secret values; the HTTP layer also masks what it serves.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from ccbus.config.secrets import SecretBook
from ccbus.events.envelope import Event
from ccbus.records import ActionTrace, Invocation, RenderFailure, Run

__all__ = ["RuleTraces"]


#: How far back a rendered call looks for its run (several events can be in one step).
_MATCH_DEPTH = 16


class RuleTraces:
    """The last ``limit`` runs of every rule (``limit`` 0: record nothing)."""

    def __init__(self, limit: int = 20, secrets: SecretBook | None = None) -> None:
        self.limit = limit
        #: A call's parameters are kept with references in place of these secrets.
        self.secrets = secrets if secrets is not None else SecretBook()
        self._runs: dict[str, deque[Run]] = {}
        self._by_key: dict[str, ActionTrace] = {}

    def evaluated(self, rule: str, event: Event, condition: bool | str | None,
                  verdict: str) -> Run:
        """Record one evaluation; the run is returned so that the calls rendered for
        it can be attached without looking for it (see :meth:`rendered`)."""
        run = Run(time.time(), event, condition, verdict, [])
        runs = self._runs.get(rule)
        if runs is None:
            runs = self._runs[rule] = deque(maxlen=self.limit)
        if len(runs) == self.limit:  # the oldest drops out as this one goes in
            if not runs:
                return run  # limit 0: nothing is kept
            self._drop(runs[0])
        runs.append(run)
        return run

    def rendered(self, invocations: list[Invocation], outcome: str = "recorded") -> None:
        """Attach rendered calls to the runs that made them: ``invocation.trace``, or
        for a call rendered later (one that waited for ``previous``) the rule's
        recent run of the same event."""
        for invocation in invocations:
            run = invocation.trace or self._find(invocation.rule, invocation.event)
            if run is None or run.dropped:
                continue
            params: Any = invocation.params
            if self.secrets:  # the trace keeps references, never a secret's value
                text = params.model_dump_json(by_alias=True, exclude_defaults=True)
                if self.secrets.contains(text):  # most calls carry none: keep the model
                    params = self.secrets.seal(json.loads(text))[0]
            trace = ActionTrace(
                invocation.action,
                invocation.index,
                invocation.idempotency_key,
                params,
                outcome="emitted" if invocation.spec.inline is not None else outcome,
            )
            run.actions.append(trace)
            if trace.outcome == "recorded":
                self._by_key[trace.key] = trace

    def failed_to_render(self, failures: list[RenderFailure]) -> None:
        for failure in failures:
            run = self._find(failure.rule, failure.event)
            if run is not None:
                run.actions.append(
                    ActionTrace(failure.action, failure.index, "", None, "dead_letter",
                                self.secrets.redact(
                                    f"parameters did not render: {failure.reason}"))
                )

    def settled(self, key: str, outcome: str, error: str = "") -> None:
        """The dispatcher finished an attempt of a call (``ok``, ``retry``, ``dead_letter``)."""
        trace = self._by_key.get(key)
        if trace is None:
            return
        trace.outcome, trace.error = outcome, error  # the dispatcher masked it
        if outcome != "retry":
            del self._by_key[key]

    def retain(self, rules: set[str]) -> None:
        """Forget the runs of rules that are gone (after a reload)."""
        for name in set(self._runs) - rules:
            for run in self._runs.pop(name):
                self._drop(run)

    def _drop(self, run: Run) -> None:
        """A run leaves its ring: its calls are no longer followed, and none is added."""
        run.dropped = True
        for trace in run.actions:
            if self._by_key.get(trace.key) is trace:
                del self._by_key[trace.key]

    def rules(self) -> list[str]:
        return sorted(self._runs)

    def runs(self, rule: str) -> list[dict[str, Any]] | None:
        """The rule's runs, oldest first, as JSON-ready dicts; None for an unknown rule."""
        runs = self._runs.get(rule)
        return None if runs is None else [run.to_dict() for run in runs]

    def _find(self, rule: str, event: Event) -> Run | None:
        runs = self._runs.get(rule)
        if not runs:
            return None
        for depth in range(1, min(len(runs), _MATCH_DEPTH) + 1):
            run = runs[-depth]
            if run.event is event:
                return run
        return None
