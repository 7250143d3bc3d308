"""Rule traces: every verdict the engine can reach is recorded, the ring keeps the last N,
and calls get their outcomes as delivery settles them."""

from __future__ import annotations

from pathlib import Path

from support import write
from test_engine import RULES, ev

from ccbus.observe.traces import RuleTraces
from ccbus.pipeline import Pipeline
from ccbus.rules.engine import Engine
from ccbus.rules.loader import load_rules


def traced(tmp_path: Path, plugins, compiler, limit: int = 10) -> tuple[Engine, RuleTraces]:  # type: ignore[no-untyped-def]
    write(tmp_path / "rules" / "r.yaml", RULES)
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    engine = Engine(ruleset.rules)
    engine.tracer = RuleTraces(limit)
    return engine, engine.tracer


def verdicts(traces: RuleTraces, rule: str) -> list[tuple[object, str]]:
    return [(r["condition"], r["verdict"]) for r in traces.runs(rule) or []]


def test_every_verdict_is_recorded(tmp_path: Path, plugins, compiler) -> None:
    engine, traces = traced(tmp_path, plugins, compiler)
    crit = dict(severity="critical", metric="cpu", hostname="a")
    for now in (0, 1, 2):
        engine.route(ev("cvp.system.threshold_exceeded", **crit), now)
    engine.route(ev("cvp.system.threshold_exceeded", **{**crit, "severity": "minor"}), 3)
    assert verdicts(traces, "critical") == [
        (True, "fired"), (True, "fired"), (True, "throttled"), (False, "no match")]

    for now in (0, 1, 2):
        engine.route(ev("call.abandoned", queue="q1"), now)
    assert verdicts(traces, "abandon-burst") == [
        (None, "counting"), (None, "counting"), (None, "fired")]

    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 0)
    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 60)
    assert engine.due(16 * 60) != []
    engine.route(ev("agent.state_changed", agentId="a1", state="ready"), 17 * 60)
    assert verdicts(traces, "stuck") == [
        (True, "timer armed"), (True, "timer running"), (True, "fired (timer)"),
        (False, "no match")]

    engine.route(ev("call.started"), 0)  # no `caller`: the condition fails
    [(condition, verdict)] = verdicts(traces, "caller-known")
    assert str(condition).startswith("error: ") and "caller" in str(condition)
    assert verdict == "no match"


def test_the_ring_keeps_the_last_n_and_calls_get_their_outcomes(tmp_path: Path, plugins,
                                                                 compiler) -> None:
    engine, traces = traced(tmp_path, plugins, compiler, limit=3)
    pipeline = Pipeline(engine)
    outcomes = [pipeline.process(ev("call.started", caller=f"+31{n}"), n) for n in range(5)]
    runs = traces.runs("caller-known") or []
    assert [r["event"]["data"]["caller"] for r in runs] == ["+312", "+313", "+314"]
    for outcome in outcomes:
        traces.rendered(outcome.invocations)
    runs = traces.runs("caller-known") or []
    assert [r["actions"][0]["params"]["message"] for r in runs] == [
        "dutch caller +312", "dutch caller +313", "dutch caller +314"]
    key = outcomes[4].invocations[0].idempotency_key
    traces.settled(key, "retry", "503 from the target")
    assert (traces.runs("caller-known") or [])[-1]["actions"][0]["outcome"] == "retry"
    traces.settled(key, "ok")
    last = (traces.runs("caller-known") or [])[-1]["actions"][0]
    assert (last["outcome"], last["error"]) == ("ok", "")
    # calls of runs that fell out of the ring are forgotten, not kept for ever
    traces.settled(outcomes[0].invocations[0].idempotency_key, "ok")
    assert len(traces._by_key) == 2


def test_runs_of_removed_rules_are_forgotten(tmp_path: Path, plugins, compiler) -> None:
    engine, traces = traced(tmp_path, plugins, compiler)
    pipeline = Pipeline(engine)
    traces.rendered(pipeline.process(ev("call.started", caller="+311"), 0).invocations)
    assert traces.rules() == ["caller-known"] and len(traces._by_key) == 1
    traces.retain({"critical"})
    assert traces.rules() == [] and traces._by_key == {}
