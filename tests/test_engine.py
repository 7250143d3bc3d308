"""Rule semantics: conditions, throttle, count, for, missing fields, reload and restart."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support import write

from ccbus.events.envelope import Event
from ccbus.pipeline import Pipeline
from ccbus.rules.engine import Engine
from ccbus.rules.loader import load_rules
from ccbus.rules.state import SqliteStateStore, StateTable

RULES = """
rules:
  - name: critical
    on: cvp.system.threshold_exceeded
    if: severity == "critical"
    throttle: {per: hostname, at_most: 2, every: 10m}
    do: [log: "{metric} on {hostname}"]
  - name: abandon-burst
    on: call.abandoned
    count: {per: queue, at_least: 3, within: 10m}
    do: [log: "burst in {queue}"]
  - name: stuck
    on: agent.state_changed
    if: state == "not_ready"
    for: {per: agentId, duration: 15m}
    do: [log: "{agentId} stuck"]
  - name: caller-known
    on: call.started
    if: caller.startswith("+31")
    do: [log: "dutch caller {caller}"]
"""


@pytest.fixture
def engine(tmp_path: Path, plugins, compiler) -> Engine:
    write(tmp_path / "rules" / "r.yaml", RULES)
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    assert not ruleset.errors
    return Engine(ruleset.rules)


def ev(type_: str, **data: object) -> Event:
    return Event(type=type_, source="t", data=dict(data))


def fired(engine: Engine, event: Event, now: float) -> list[str]:
    return [f.rule.name for f in engine.route(event, now)]


def test_throttle_limits_per_key(engine: Engine) -> None:
    crit = dict(severity="critical", metric="cpu")
    assert fired(engine, ev("cvp.system.threshold_exceeded", hostname="a", **crit), 0) == [
        "critical"
    ]
    assert fired(engine, ev("cvp.system.threshold_exceeded", hostname="a", **crit), 1) == [
        "critical"
    ]
    assert fired(engine, ev("cvp.system.threshold_exceeded", hostname="a", **crit), 2) == []
    assert fired(engine, ev("cvp.system.threshold_exceeded", hostname="b", **crit), 3) == [
        "critical"
    ]
    assert fired(engine, ev("cvp.system.threshold_exceeded", hostname="a", **crit), 601) == [
        "critical"
    ]
    assert engine.stats["critical"].throttled == 1


def test_count_fires_on_the_nth_match_within_the_window(engine: Engine) -> None:
    times = [0, 100, 700, 800, 900, 901, 902, 903]
    results = [fired(engine, ev("call.abandoned", queue="sales"), t) for t in times]
    # 0 and 100 expire before 700; 700/800/900 make three; the window then starts afresh
    assert [bool(r) for r in results] == [False, False, False, False, True, False, False, True]
    assert fired(engine, ev("call.abandoned", queue="support"), 904) == []


def test_for_fires_once_the_condition_has_held(engine: Engine) -> None:
    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 0)
    engine.route(ev("agent.state_changed", agentId="a2", state="not_ready"), 60)
    assert engine.due(899) == []
    engine.route(ev("agent.state_changed", agentId="a2", state="available"), 300)  # cancels a2
    [firing] = engine.due(900)
    assert firing.rule.name == "stuck" and firing.event.data["agentId"] == "a1"
    assert engine.due(10_000) == []
    # still not ready: no second firing until the condition has reset
    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 10_001)
    assert engine.due(20_000) == []
    engine.route(ev("agent.state_changed", agentId="a1", state="available"), 20_001)
    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 20_002)
    assert [f.rule.name for f in engine.due(20_002 + 900)] == ["stuck"]


def test_a_missing_field_is_false_counted_and_logged_once(engine: Engine, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ccbus.rules")
    for t in range(5):
        assert fired(engine, ev("call.started", callId="c"), t) == []
    stats = engine.stats["caller-known"]
    assert stats.missing_field == 5 and stats.errors == 0
    warnings = [r for r in caplog.records if "caller-known" in r.getMessage()]
    assert len(warnings) == 1
    assert "no field or key 'caller'" in warnings[0].getMessage()
    assert fired(engine, ev("call.started", caller="+3120"), 6) == ["caller-known"]


def test_a_failing_method_call_is_an_error_not_a_crash(engine: Engine) -> None:
    assert fired(engine, ev("call.started", caller=31), 0) == []
    assert engine.stats["caller-known"].errors == 1
    assert "startswith" in engine.stats["caller-known"].last_error


def test_state_survives_a_restart(tmp_path: Path, plugins, compiler) -> None:
    write(tmp_path / "rules" / "r.yaml", RULES)
    store = SqliteStateStore(tmp_path / "state" / "rules.sqlite3")

    def fresh_engine() -> Engine:
        ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
        engine = Engine(ruleset.rules)
        engine.state.restore(store.load(), engine.signatures())
        engine.swap(list(engine.index.rules))  # re-arms restored timers
        return engine

    first = fresh_engine()
    first.route(ev("call.abandoned", queue="sales"), 10)
    first.route(ev("call.abandoned", queue="sales"), 20)
    first.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 30)
    store.save(first.state.take_changes())

    second = fresh_engine()  # "restarted": only what the store kept
    assert fired(second, ev("call.abandoned", queue="sales"), 40) == ["abandon-burst"]
    [firing] = second.due(30 + 900)
    assert firing.event.data == {"agentId": "a1", "state": "not_ready"}
    assert firing.event.type == "agent.state_changed"


def test_reload_keeps_state_of_unchanged_rules_and_drops_changed(
    engine: Engine, tmp_path, plugins, compiler
) -> None:
    engine.route(ev("call.abandoned", queue="q"), 0)
    engine.route(ev("call.abandoned", queue="q"), 1)
    write(
        tmp_path / "rules" / "r.yaml",
        RULES.replace('if: severity == "critical"', 'if: severity == "major"'),
    )
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    changes = engine.swap(ruleset.rules)
    assert changes == {"added": [], "removed": [], "changed": ["critical"]}
    assert fired(engine, ev("call.abandoned", queue="q"), 2) == ["abandon-burst"]


def test_quiet_keys_are_swept_and_bounded(tmp_path: Path, plugins, compiler) -> None:
    write(tmp_path / "rules" / "r.yaml", RULES)
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    engine = Engine(ruleset.rules, state=StateTable(max_keys=100))
    for i in range(1000):
        engine.route(ev("call.abandoned", queue=f"q{i}"), i * 0.001)
    assert engine.state.keys() == 100 and engine.state.evicted == 900
    assert engine.sweep(10_000) == 100
    assert engine.state.keys() == 0


def test_unmatched_types_cost_nothing(engine: Engine) -> None:
    assert engine.route(ev("nobody.listens"), 0) == []
    assert all(s.evaluated == 0 for s in engine.stats.values())


def test_pipeline_drops_duplicates_and_limits_emit_loops(tmp_path, plugins, compiler) -> None:
    write(
        tmp_path / "rules" / "loop.yaml",
        """
        rules:
          - name: ping
            on: ping
            do: [emit: {type: pong}]
          - name: pong
            on: pong
            do: [emit: {type: ping}]
    """,
    )
    ruleset = load_rules([tmp_path / "rules"], actions=plugins.actions, compiler=compiler)
    pipeline = Pipeline(Engine(ruleset.rules))
    event = ev("ping")
    outcome = pipeline.process(event, 0)
    assert len(outcome.invocations) == 9  # the original plus MAX_HOPS generations
    assert pipeline.hop_limit_drops == 1
    assert pipeline.process(event, 1).duplicates == 1


def test_fired_for_markers_are_forgotten_after_a_day(engine: Engine) -> None:
    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 0)
    assert len(engine.due(900)) == 1
    assert engine.sweep(900 + 3600) == 0  # fired, still remembered
    assert engine.sweep(900 + 86_400) == 1
    engine.route(ev("agent.state_changed", agentId="a1", state="not_ready"), 90_000)
    assert len(engine.due(90_900)) == 1  # a key still stuck a day later warns again
