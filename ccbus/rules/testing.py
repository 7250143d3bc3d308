"""Rule test cases, run offline: ``ccbus test RULES_DIR``.

A rule file may carry ``tests:`` next to its ``rules:``.  Each case feeds
events (and waits) through that file's rules on a virtual clock and
compares the actions the rules would call, in order, with ``expect``::

    tests:
      - name: an abandoned call is logged
        events:
          - {type: call.abandoned, subject: c1, data: {callId: c1, queue: sales}}
          - wait: 10m                     # moves the clock; due `for` timers fire
        expect:
          - log: {message: "abandoned in sales"}   # same shape as `do:`
          - action: emit                  # or explicit: action, rule, params
            rule: abandoned-escalate
            params: {type: ops.escalate}

``params`` are compared as a subset: keys not named are not checked.
An action that reads ``previous`` (the result of the action before it) is
called in a test only when the case says what that action returned::

        results:
          cucm.make_call: {connectionId: "4711", state: INITIATING}

A rule that reads ``secret("name")`` sees the config's ``secrets:`` when
``ccbus test -c CONFIG`` runs it; a case may stand in test values instead,
so the real ones are needed neither in the test nor on the machine::

        secrets: {crm-hmac: test-hmac}

``expect: []`` asserts that nothing happens.  Each case starts with fresh
rule state; the clock starts at ``start`` (default: the first event's
``time``, else 2026-01-05T09:00:00Z, a Monday morning).

Cases use only the rules of their own file, so adding a rule elsewhere never
breaks another file's tests.  Nothing is executed: the same pipeline as
``ccbus run`` renders the calls, and the test compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ccbus.actions.api import ActionSpec
from ccbus.config.durations import parse_duration
from ccbus.config.yamlfile import line_of
from ccbus.errors import EvaluationError
from ccbus.events.envelope import Event, parse_timestamp
from ccbus.pipeline import Outcome, Pipeline
from ccbus.records import Invocation
from ccbus.rules.engine import Engine
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.functions import Clock
from ccbus.rules.loader import RuleFile, load_rules
from ccbus.rules.model import Rule

__all__ = ["CASE_KEYS", "CaseResult", "CompilerFor", "ManualClock", "run_file_tests"]

#: The keys a test case may have.
CASE_KEYS = ("name", "events", "expect", "start", "results", "secrets")

#: Builds the expression compiler for a set of secrets (on the tests' clock): how a
#: case's stand-in ``secrets:`` reach ``secret()``, which is bound when rules compile.
CompilerFor = Callable[[Mapping[str, str]], ExpressionCompiler]

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class ManualClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: float) -> None:
        self.current = start

    def now(self) -> float:
        return self.current


@dataclass(slots=True)
class CaseResult:
    file: Path
    name: str
    line: int
    failures: list[str] = field(default_factory=list)
    actual: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def run_file_tests(
    rule_file: RuleFile,
    actions: dict[str, ActionSpec],
    clock: ManualClock,
    *,
    compiler_for: CompilerFor | None = None,
) -> list[CaseResult]:
    """Run every test case of one rule file against that file's rules.

    ``clock`` must be the clock the file's rules were compiled against (so
    ``now()`` in expressions follows the test's waits).  A case with
    ``secrets:`` runs the file's rules compiled again by ``compiler_for``
    with those values (``secret()`` is bound at compile time); without
    ``compiler_for`` such a case is reported as malformed.
    """
    results = []
    for index, case in enumerate(rule_file.tests):
        line = line_of(rule_file.root, ("tests", index))
        name = (
            case.get("name", f"case {index + 1}") if isinstance(case, dict) else f"case {index + 1}"
        )
        result = CaseResult(rule_file.path, str(name), line)
        try:
            _run_case(rule_file, case, actions, clock, result, compiler_for)
        except (ValueError, TypeError, KeyError, EvaluationError) as err:
            result.failures.append(f"the test case itself is malformed: {err}")
        results.append(result)
    return results


def _run_case(
    rule_file: RuleFile,
    case: Any,
    actions: dict[str, ActionSpec],
    clock: ManualClock,
    result: CaseResult,
    compiler_for: CompilerFor | None = None,
) -> None:
    if not isinstance(case, dict):
        raise ValueError("a test case is a mapping with 'name', 'events' and 'expect'")
    unknown = set(case) - set(CASE_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            f"(a case has {', '.join(CASE_KEYS)})"
        )
    returned = case.get("results") or {}
    if not isinstance(returned, dict):
        raise ValueError("'results' maps action names to what they return")
    steps = case.get("events") or []
    if "expect" not in case:
        raise ValueError("missing 'expect' (use 'expect: []' for 'nothing happens')")
    clock.current = _start(case, steps)
    rules = rule_file.rules
    if case.get("secrets") is not None:
        rules = _with_secrets(rule_file, case["secrets"], actions, compiler_for)
    pipeline = Pipeline(Engine(rules))
    invocations: list[Invocation] = []
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            raise ValueError(f"event {number} must be a mapping")
        if set(step) == {"wait"}:
            target = clock.current + parse_duration(step["wait"])
            # fire timers in order, each at its own deadline, as the bus would
            while (deadline := pipeline.engine.next_deadline()) is not None and deadline <= target:
                clock.current = max(clock.current, deadline)
                invocations += _continued(
                    pipeline, pipeline.process_due(clock.current), returned, clock.current
                )
            clock.current = target
            continue
        doc = {"id": f"test-{number}", **step}
        event = Event.from_dict(doc, default_source="test")
        outcome = pipeline.process(event, clock.current)
        invocations += _continued(pipeline, outcome, returned, clock.current)
        result.failures.extend(f"event {number}: {e}" for e in outcome.render_errors)
    result.actual = [_show(i) for i in invocations]
    _compare(_expectations(case["expect"], actions), invocations, result)


def _with_secrets(
    rule_file: RuleFile,
    stand_ins: Any,
    actions: dict[str, ActionSpec],
    compiler_for: CompilerFor | None,
) -> list[Rule]:
    """The file's rules compiled again, ``secret()`` answering with the case's values."""
    if not isinstance(stand_ins, dict) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in stand_ins.values()
    ):
        raise ValueError("'secrets' maps secret names to test values, e.g. {crm-hmac: test}")
    if compiler_for is None:
        raise ValueError("'secrets' stand-ins need `ccbus test` (this runner cannot recompile)")
    values = {str(k): str(v) for k, v in stand_ins.items()}
    [again] = load_rules([rule_file.path], actions=actions, compiler=compiler_for(values)).files
    return again.rules


def _continued(
    pipeline: Pipeline, outcome: Outcome, returned: dict[str, Any], now: float
) -> list[Invocation]:
    """The outcome's calls, each followed by the calls that wait for its result,
    when the case says what it returned (as the bus does once a call succeeds)."""
    calls: list[Invocation] = []
    for invocation in outcome.invocations:
        calls.append(invocation)
        rule = pipeline.engine.index.by_name(invocation.rule)
        if invocation.action not in returned or rule is None:
            continue
        after = pipeline.continue_after(
            rule, invocation.event, invocation.index, returned[invocation.action], now
        )
        if after is None:
            continue
        outcome.render_errors += after.render_errors
        calls += _continued(pipeline, after, returned, now)
    return calls


def _start(case: dict[str, Any], steps: list[Any]) -> float:
    if "start" in case:
        moment = parse_timestamp(case["start"])
        if moment is None:
            raise ValueError(f"'start' is not a timestamp: {case['start']!r}")
        return moment.timestamp()
    for step in steps:
        if isinstance(step, dict) and step.get("time"):
            moment = parse_timestamp(step["time"])
            if moment is not None:
                return moment.timestamp()
    return DEFAULT_START.timestamp()


def _expectations(raw: Any, actions: dict[str, ActionSpec]) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError("'expect' must be a list")
    expected = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError(f"an expectation is a mapping, not {item!r}")
        if "action" in item:
            unknown = set(item) - {"action", "rule", "params"}
            if unknown:
                raise ValueError(f"unknown key(s) in expectation: {', '.join(sorted(unknown))}")
            expected.append(
                {
                    "action": item["action"],
                    "rule": item.get("rule"),
                    "params": item.get("params") or {},
                }
            )
        elif len(item) == 1:
            name, params = next(iter(item.items()))
            spec = actions.get(name)
            if params is not None and not isinstance(params, dict):
                if spec is None or spec.shorthand is None:
                    raise ValueError(f"action {name!r} has no shorthand parameter")
                params = {spec.shorthand: params}
            expected.append({"action": name, "rule": None, "params": params or {}})
        else:
            raise ValueError(f"an expectation names one action: {item!r}")
    return expected


def _compare(expected: list[dict[str, Any]], actual: list[Invocation], result: CaseResult) -> None:
    if len(expected) != len(actual):
        result.failures.append(
            f"expected {len(expected)} action call(s), got {len(actual)}"
            + "".join(f"\n      got: {_show(i)}" for i in actual)
        )
        return
    for number, (want, got) in enumerate(zip(expected, actual, strict=True), start=1):
        if want["action"] != got.action:
            result.failures.append(
                f"call {number}: expected action {want['action']!r}, got {_show(got)}"
            )
            continue
        if want["rule"] is not None and want["rule"] != got.rule:
            result.failures.append(
                f"call {number}: expected rule {want['rule']!r}, got rule {got.rule!r}"
            )
        params = got.params.model_dump(by_alias=True)
        for key, value in want["params"].items():
            if key not in params:
                result.failures.append(f"call {number} ({got.action}): no parameter {key!r}")
            elif not _matches(value, params[key]):
                result.failures.append(
                    f"call {number} ({got.action}): {key} expected {value!r}, got {params[key]!r}"
                )


def _matches(want: Any, got: Any) -> bool:
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and _matches(v, got[k]) for k, v in want.items())
    return bool(want == got)


def _show(invocation: Invocation) -> str:
    return f"{invocation.rule}: {invocation.describe()}"
