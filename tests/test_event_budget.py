"""Every event has a bounded cost (issue #18, section 3), through the real loader,
engine and pipeline:

* patterns taken from event data are refused by size before they are compiled,
  quickly and without a memory blow-up, and the refusal is cached;
* ``sub()`` and the methods that can outgrow their input are held to the
  documented limits (strings 100,000 characters, lists 10,000 items);
* one event's rules and templates share a time budget: past it, a rule counts
  as not matching and an action as failed to render, counted per rule in
  ``/metrics`` and logged once a minute with the rule and the event.

No timings are asserted beyond generous bounds the issue demands to hold
(``bench/attack_bench.py`` measures).
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from pathlib import Path

import pytest
from support import write

from ccbus.errors import EvaluationError
from ccbus.events.envelope import Event
from ccbus.pipeline import Pipeline
from ccbus.rules.engine import Engine
from ccbus.rules.expressions import ExpressionCompiler
from ccbus.rules.functions import SystemClock, build_library, pattern_cost
from ccbus.rules.loader import load_rules

#: A backtracking pattern and a text on which one search takes tens of milliseconds:
#: under the per-call timeout, so only the budget can stop sixty of them.
SLOW = r"^(\w+\s?)*$"
SLOW_TEXT = "a" * 3000 + "!"


@pytest.fixture
def library() -> dict:  # type: ignore[type-arg]
    return build_library(SystemClock())


def compile_and_run(source: str, **data: object) -> object:
    expression = ExpressionCompiler(build_library(SystemClock())).expression(source)
    return expression.evaluate(data)


@pytest.mark.parametrize("pattern", [
    "(?:x{65535}){65535}",
    "x{4294967294}",
    "(a{1000}|b{1000}){1000}",
    "(?:x{1000}){100}",  # compiles in a second or so without the bound: enough to show it
])
def test_patterns_from_data_are_refused_by_size_quickly_and_without_memory(
    pattern: str,
) -> None:
    tracemalloc.start()
    began = time.perf_counter()
    with pytest.raises(EvaluationError, match=r"too large: its repeats expand to .* the limit is"):
        compile_and_run("matches(pattern, 'xx')", pattern=pattern)
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 5_000_000


def test_pattern_cost_counts_repeats_through_nesting() -> None:
    assert pattern_cost(r"\d{4}") == 4
    assert pattern_cost(r"^\+31\d{9}$") == 14
    assert pattern_cost("(ab|cd)*") == 5  # unbounded repeats are not unrolled
    assert pattern_cost("(?:(?:x{10}){10}){10}") > 1000
    assert pattern_cost("(a{1000}|b{1000}){1000}") > 2_000_000


def test_ordinary_patterns_still_work_and_are_cached(library: dict) -> None:  # type: ignore[type-arg]
    assert library["extract"](r"[0-9]{4}$", "+31201234567") == "4567"
    assert library["matches"](r"^\+31\d{9}$", "+31201234567")
    assert library["sub"]("(a)", r"<\1>", "banana") == "b<a>n<a>n<a>"
    from ccbus.rules import functions

    assert r"[0-9]{4}$" in functions._patterns._entries
    with pytest.raises(EvaluationError, match="bad regular expression"):
        library["matches"]("(", "x")


def test_sub_output_is_capped_as_it_is_built(library: dict) -> None:  # type: ignore[type-arg]
    # a lookahead capture repeats the rest of the text at every position: 4.5 M from 3,000
    with pytest.raises(EvaluationError, match="over the limit of 100,000 characters"):
        library["sub"]("(?=(.*))", r"\1", "a" * 3000)
    # a large text whose result stays under the limit is fine (no worst-case guess)
    assert len(library["sub"]("a", "bb", "a" * 40_000 + "c" * 10_000)) == 90_000


@pytest.mark.parametrize("source", [
    "big.upper().upper().upper()",
    "upper(upper(upper(big)))",
    "len(commas.split(','))",
    "len(lines.splitlines())",
])
def test_method_and_function_results_are_held_to_the_limits(source: str) -> None:
    with pytest.raises(EvaluationError, match=r"over the limit of 100,000|more than 10,000 items"):
        compile_and_run(source, big="\u0390" * 40_000, commas="," * 20_000,
                        lines="\n" * 20_000)


def test_methods_within_the_limits_work() -> None:
    assert compile_and_run("'a,b'.split(',') + 'ß'.upper().split()") == ["a", "b", "SS"]
    assert compile_and_run("len(s.split(','))", s="," * 9_999) == 10_000


RULES = f"""
rules:
  - name: slow-condition
    on: attack.*
    if: {" or ".join(["matches(slow, s) == 7"] * 60)}
    do: [log: "never"]
  - name: after-the-budget
    on: attack.*
    if: "true"
    do: [log: "never either"]
  - name: calm
    on: calm.*
    do: [log: "calm {{n}}"]
"""

TEMPLATE_RULES = f"""
rules:
  - name: slow-template
    on: attack.*
    do:
      - log: "{"".join(["{matches(slow, s)}"] * 100)}"
      - log: "constant parameters cost nothing and still go out"
"""


def pipeline_for(tmp_path: Path, rules: str, plugins, budget: float = 0.05) -> Pipeline:  # type: ignore[no-untyped-def]
    write(tmp_path / "rules" / "r.yaml", rules)
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions,
                         compiler=ExpressionCompiler(build_library(SystemClock())))
    assert not ruleset.errors, ruleset.errors
    return Pipeline(Engine(ruleset.rules), event_budget=budget)


def attack(n: int = 0) -> Event:
    return Event(type="attack.probe", source="attacker", id=f"a{n}",
                 data={"slow": SLOW, "s": SLOW_TEXT})


def test_a_condition_past_the_budget_counts_as_not_matching_and_is_logged_once(
    tmp_path: Path, plugins, caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    pipeline = pipeline_for(tmp_path, RULES, plugins)
    caplog.set_level(logging.WARNING, logger="ccbus.rules")
    began = time.perf_counter()
    outcomes = [pipeline.process(attack(n), time.time()) for n in range(3)]
    elapsed = time.perf_counter() - began
    assert all(not o.firings and not o.invocations for o in outcomes)
    stats = pipeline.engine.stats
    assert stats["slow-condition"].over_budget == 3
    assert stats["after-the-budget"].over_budget == 3  # never reached: not matched either
    assert stats["after-the-budget"].matched == 0
    assert elapsed < 3 * 0.05 * 10  # the budget, with room for a loaded machine
    lines = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert len(lines) == 2, lines  # one per rule, not one per event
    assert "slow-condition" in lines[0] and "attack.probe id=a0" in lines[0]
    assert "used up its budget of 50 ms" in lines[0]
    # another source's events are routed as ever
    calm = pipeline.process(Event(type="calm.tick", source="calm", data={"n": 1}), time.time())
    assert [i.params.message for i in calm.invocations] == ["calm 1"]  # type: ignore[attr-defined]


def test_a_template_past_the_budget_fails_to_render_and_constant_actions_still_go(
    tmp_path: Path, plugins,  # type: ignore[no-untyped-def]
) -> None:
    pipeline = pipeline_for(tmp_path, TEMPLATE_RULES, plugins)
    began = time.perf_counter()
    outcome = pipeline.process(attack(), time.time())
    assert time.perf_counter() - began < 0.05 * 10
    [failure] = outcome.render_errors
    assert failure.rule == "slow-template" and failure.index == 0
    assert "line 5:" in failure.reason and "used up its budget of 50 ms" in failure.reason
    assert [i.index for i in outcome.invocations] == [1]
    assert pipeline.engine.stats["slow-template"].over_budget == 1
