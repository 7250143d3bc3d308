"""Routing benchmark: events/s and per-event latency of ``Pipeline.process``.

What is measured is what the bus does for every event before any action
runs: duplicate check, rule lookup by type, conditions, per-key gates
(throttle/count), rendering of every ``do:`` parameter and validation of the
rendered parameters against the action's schema.  Actions are not executed.

The workload is generated into a temporary directory as real YAML rule files
and loaded through ``load_rules``, so the real loader and compiler produce
what is measured: 100 rules over 20 event types (5 rules per type, of which
at most 3 can match one event), conditions and templates in the style of
the shipped rules, and 10,000 pre-built events whose data is varied so that
0-3 rules match each.

In the same run, a naive baseline routes the same events through the same
rules the way a straightforward simpleeval implementation would: loop over
all 100 rules with ``fnmatch``, re-parse and evaluate each condition and
each template hole with a fresh ``simpleeval.EvalWithCompoundTypes`` every
time, same gates, same parameter validation.  Before timing, both are run
once over all events from the same start and their outputs are compared, so
the two do the same work.

    .venv/bin/python bench/route_bench.py [--events 10000] [--runs 7] [--json out.json]

A benchmark, not a test: prints PASS or BELOW TARGET and exits 0 either way.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import simpleeval
import yaml

from ccbus.config.durations import parse_duration
from ccbus.events.envelope import Event
from ccbus.pipeline import Pipeline
from ccbus.plugins import PluginHost
from ccbus.rules.engine import Engine
from ccbus.rules.loader import load_rules
from ccbus.rules.model import Rule
from ccbus.rules.state import StateTable
from ccbus.rules.testing import ManualClock
from ccbus.runtime.bus import make_compiler

TARGET_EVENTS_PER_SECOND = 100_000
START = 1_767_603_600.0  # 2026-01-05T09:00:00Z
EVENT_SPACING = 0.01  # simulated seconds between events (100 events/s of bus time)
RUN_GAP = 1_000.0  # simulated seconds between runs: past every window and the dedup window

# ---------------------------------------------------------------------------
# Workload: rule families (5 rules each) and their event data.
#
# In every family rules 1/2 exclude each other, rules 3/4 exclude each other
# and rule 5 is independent, so an event matches 0..3 rules.  A rule is
# (suffix, condition, actions, gate); actions are YAML flow text for `do:`;
# gate is YAML flow text for throttle/count (or None).

RuleSpec = tuple[str, str, list[str], str | None]

FAMILIES: dict[str, list[RuleSpec]] = {
    "call": [
        (
            "sales-wait",
            'lower(queue) == "sales" and waitSeconds > 30',
            [
                "log: \"sales caller {get(event.data, 'caller.number', 'unknown')} waited "
                '{round(waitSeconds)}s on {callId} ({event.vendor})"'
            ],
            None,
        ),
        (
            "service-wait",
            'lower(queue) in ["support", "billing"] and waitSeconds > 60',
            [
                'log: {message: "{queue} call {callId} waited {round(waitSeconds)}s", '
                "level: warning}",
                'log: "escalate {callId} to {lower(queue)}-leads"',
            ],
            None,
        ),
        (
            "abandoned",
            'result == "abandoned"',
            [
                'log: "abandoned {callId} in {queue} after {waitSeconds}s from '
                "{get(event.data, 'caller.name', '?')}\""
            ],
            "throttle: {per: queue, at_most: 20, every: 1m}",
        ),
        (
            "long-failed",
            'result in ["failed", "transferred"] and durationSeconds > 600',
            [
                'log: {message: "long {result} call {callId}: {round(durationSeconds / 60, 1)} '
                "min, agent {coalesce(get(event.data, 'agent'), 'none')}\", level: info}"
            ],
            None,
        ),
        (
            "intl",
            'startswith(get(event.data, "caller.number", ""), "+31") '
            'and not (result == "completed" and waitSeconds < 5)',
            ["log: \"international caller {get(event.data, 'caller.number', '')} on {callId}\""],
            None,
        ),
    ],
    "agent": [
        (
            "stuck",
            'state in ["NOT_READY", "AFTER_CALL_WORK"] and durationSeconds > 300',
            [
                'log: {message: "agent {agentId} in {state} for {round(durationSeconds / 60)} '
                "min (reason {coalesce(get(event.data, 'reason'), 'none')})\", level: warning}"
            ],
            "count: {per: agentId, at_least: 2, within: 10m}",
        ),
        (
            "logout",
            'state == "LOGGED_OUT" and reason != ""',
            ['log: "agent {agentId} logged out: {reason}"'],
            None,
        ),
        (
            "sales",
            'lower(team) == "sales" and priority >= 5',
            [
                'log: "sales agent {agentId} is {lower(state)}"',
                'log: {message: "team {team}: {agentId} -> {state}", level: debug}',
            ],
            None,
        ),
        (
            "support",
            'lower(team) == "support" and not (reason in ["Lunch", "Break"])',
            ['log: "support agent {agentId}: {state}/{reason}"'],
            None,
        ),
        (
            "vip",
            'get(event.data, "skills.primary", "") == "vip" and state != "READY"',
            ['log: "VIP agent {agentId} unavailable ({state}, {event.type})"'],
            None,
        ),
    ],
    "threshold": [
        (
            "critical",
            'severity == "critical" and currentValue > thresholdValue',
            [
                'log: {message: "{metric} critical on {hostname}: {currentValue} > '
                '{thresholdValue}", level: error}'
            ],
            "throttle: {per: hostname, at_most: 1, every: 10m}",
        ),
        (
            "major",
            'severity in ["major", "minor"] and currentValue > thresholdValue * 1.2',
            ['log: "{severity} {metric} on {hostname}: {currentValue}"'],
            None,
        ),
        (
            "cpu",
            'metric == "cpu" and currentValue >= 90',
            ["log: \"cpu {currentValue}% on {hostname} ({get(event.data, 'site.region', '?')})\""],
            None,
        ),
        (
            "storage",
            'metric in ["memory", "disk"] and startswith(hostname, "cs")',
            ['log: "{metric} at {currentValue} on call server {hostname}"'],
            None,
        ),
        (
            "emea",
            'get(event.data, "site.region", "") == "emea" and severity != "warning"',
            [
                'log: {message: "EMEA {severity}: {metric} {currentValue}/{thresholdValue} on '
                '{hostname}", level: warning}'
            ],
            None,
        ),
    ],
    "queue": [
        (
            "no-agents",
            "waiting > 5 and agentsAvailable == 0",
            ['log: {message: "queue {name}: {waiting} waiting, no agents", level: error}'],
            None,
        ),
        (
            "long-wait",
            "waiting <= 5 and longestWaitSeconds > 120",
            ['log: "queue {name}: longest wait {longestWaitSeconds}s ({waiting} waiting)"'],
            None,
        ),
        (
            "sales",
            'lower(name) == "sales" and waiting > 2',
            ['log: "sales queue {queueId}: {waiting} waiting, {agentsAvailable} free"'],
            None,
        ),
        (
            "service",
            'lower(name) in ["support", "billing"] and waiting > 0',
            [
                'log: "{name} queue {queueId} has {waiting} waiting"',
                'log: {message: "{queueId}: longest {longestWaitSeconds}s", level: debug}',
            ],
            None,
        ),
        (
            "sla",
            'get(event.data, "sla.percent", 100) < 80',
            ["log: \"SLA {get(event.data, 'sla.percent')}% on {name} ({queueId})\""],
            "count: {per: queueId, at_least: 2, within: 10m}",
        ),
    ],
    "device": [
        (
            "down",
            'status == "down" and previousStatus == "up"',
            ['log: {message: "{deviceType} {deviceId} went down", level: error}'],
            None,
        ),
        (
            "degraded",
            'status == "degraded" and previousStatus != "degraded"',
            ['log: "{deviceId} degraded (was {previousStatus})"'],
            None,
        ),
        (
            "trunk",
            'deviceType in ["Gateway", "SIPTrunk"] and status != "up"',
            [
                "log: \"{deviceType} {deviceId} at {get(event.data, 'location.site', '?')}: "
                '{status}"'
            ],
            None,
        ),
        (
            "phone",
            'deviceType == "Phone" and status != "up"',
            ['log: "phone {deviceId}: {status}"'],
            None,
        ),
        (
            "ams",
            'get(event.data, "location.site", "") == "AMS" and status != previousStatus',
            ['log: "AMS {deviceId}: {previousStatus} -> {status} ({event.vendor})"'],
            None,
        ),
    ],
}

#: The 20 event types, four per family: native vendor types and canonical ones.
EVENT_TYPES: dict[str, list[str]] = {
    "call": ["cvp.call.ended", "genesys.EventAbandoned", "call.abandoned", "enreach.CallEnded"],
    "agent": [
        "genesys.EventAgentNotReady",
        "avaya.AgentState",
        "enreach.UserStatus",
        "agent.state_changed",
    ],
    "threshold": [
        "cvp.system.threshold_exceeded",
        "avaya.Alarm",
        "system.alert",
        "cucm.PerfAlert",
    ],
    "queue": [
        "queue.status",
        "genesys.EventQueueStats",
        "enreach.QueueStatus",
        "avaya.SkillStatus",
    ],
    "device": [
        "device.status_changed",
        "cucm.DeviceStatus",
        "cvp.device.state",
        "avaya.MediaGateway",
    ],
}

CANONICAL_VENDORS = ["cvp", "genesys", "avaya", "enreach", "cucm"]
KEY_FIELD = {
    "call": "callId",
    "agent": "agentId",
    "threshold": "hostname",
    "queue": "queueId",
    "device": "deviceId",
}


def slug(event_type: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", event_type).strip("-").lower()


def rule_file_text(event_type: str, family: str, specs: list[RuleSpec] | None = None) -> str:
    """The YAML text of one rule file: the family's five rules bound to ``event_type``."""
    lines = [f"# generated by bench/route_bench.py: {family} rules for {event_type}", "rules:"]
    for suffix, condition, actions, gate in specs or FAMILIES[family]:
        lines.append(f"  - name: {slug(event_type)}-{suffix}")
        lines.append(f"    on: {event_type}")
        lines.append(f"    if: {json.dumps(condition)}")
        if gate:
            lines.append(f"    {gate}")
        lines.append("    do:")
        lines.extend(f"      - {action}" for action in actions)
        lines.append("")
    return "\n".join(lines)


def write_rules(directory: Path) -> list[Path]:
    """Write the 100 rules of the routing benchmark as 20 YAML files."""
    paths = []
    for family, types in EVENT_TYPES.items():
        for event_type in types:
            path = directory / f"{slug(event_type)}.yaml"
            path.write_text(rule_file_text(event_type, family))
            paths.append(path)
    return paths


def _call_data(rnd: random.Random, i: int) -> dict[str, Any]:
    number = rnd.choice(["+31", "+31", "+44", "+1", "+49", "0"]) + str(rnd.randrange(10**8, 10**9))
    data: dict[str, Any] = {
        "callId": f"c{i:06d}",
        "caller": {"number": number, "name": rnd.choice(["J. Smith", "A. Jansen", "M. Rossi"])},
        "queue": rnd.choice(["Sales", "SALES", "Support", "Billing", "Retention"]),
        "waitSeconds": round(rnd.expovariate(1 / 60), 1),
        "durationSeconds": int(rnd.expovariate(1 / 400)),
        "result": rnd.choice(["completed"] * 3 + ["abandoned", "failed", "transferred"]),
    }
    if rnd.random() < 0.6:
        data["agent"] = f"a{rnd.randrange(200)}"
    return data


def _agent_data(rnd: random.Random, i: int) -> dict[str, Any]:
    data: dict[str, Any] = {
        "agentId": f"a{rnd.randrange(200)}",
        "state": rnd.choice(
            ["READY", "READY", "NOT_READY", "AFTER_CALL_WORK", "LOGGED_OUT", "BUSY"]
        ),
        "reason": rnd.choice(["", "", "Lunch", "Break", "Training", "Meeting"]),
        "team": rnd.choice(["Sales", "SALES", "SUPPORT", "Support", "Back office"]),
        "durationSeconds": int(rnd.expovariate(1 / 400)),
        "skills": {"primary": rnd.choice(["standard", "standard", "vip"])},
    }
    if rnd.random() < 0.97:  # a few events lack a field a condition reads: "no match"
        data["priority"] = rnd.randrange(10)
    return data


def _threshold_data(rnd: random.Random, i: int) -> dict[str, Any]:
    threshold = rnd.choice([80, 85, 90])
    return {
        "severity": rnd.choice(["critical", "major", "minor", "warning", "warning"]),
        "metric": rnd.choice(["cpu", "memory", "disk", "calls"]),
        "hostname": rnd.choice(["cs", "vxml-", "rpt"]) + f"{rnd.randrange(1, 21):02d}",
        "currentValue": round(rnd.uniform(60, 120), 1),
        "thresholdValue": threshold,
        "site": {"region": rnd.choice(["emea", "emea", "amer", "apac"])},
    }


def _queue_data(rnd: random.Random, i: int) -> dict[str, Any]:
    return {
        "queueId": f"q{rnd.randrange(50)}",
        "name": rnd.choice(["Sales", "Support", "Billing", "VIP", "Tech"]),
        "waiting": rnd.choice([0, 0, 1, 2, 3, 6, 9]),
        "agentsAvailable": rnd.choice([0, 0, 1, 3, 5]),
        "longestWaitSeconds": int(rnd.expovariate(1 / 60)),
        "sla": {"percent": rnd.randrange(60, 101)},
    }


def _device_data(rnd: random.Random, i: int) -> dict[str, Any]:
    return {
        "deviceId": rnd.choice(["gw", "trunk", "sep", "srv"]) + f"-{rnd.randrange(300):03d}",
        "status": rnd.choice(["up", "up", "down", "degraded"]),
        "previousStatus": rnd.choice(["up", "up", "down", "degraded"]),
        "deviceType": rnd.choice(["Gateway", "SIPTrunk", "Phone", "Phone", "Server"]),
        "location": {"site": rnd.choice(["AMS", "LON", "NYC", "SIN"])},
    }


DATA: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "call": _call_data,
    "agent": _agent_data,
    "threshold": _threshold_data,
    "queue": _queue_data,
    "device": _device_data,
}


def vendor_of(event_type: str, rnd: random.Random) -> str:
    head = event_type.split(".", 1)[0]
    return head if head in CANONICAL_VENDORS else rnd.choice(CANONICAL_VENDORS)


def build_events(count: int, seed: int = 42) -> list[Event]:
    """``count`` events spread evenly over the 20 types, data varied, built once."""
    rnd = random.Random(seed)
    typed = [(family, t) for family, types in EVENT_TYPES.items() for t in types]
    events = []
    for i in range(count):
        family, event_type = typed[rnd.randrange(len(typed))]
        data = DATA[family](rnd, i)
        events.append(
            Event(
                type=event_type,
                source="bench",
                id=f"ev{i:07d}",
                vendor=vendor_of(event_type, rnd),
                subject=str(data[KEY_FIELD[family]]),
                data=data,
            )
        )
    return events


# ---------------------------------------------------------------------------
# The system under test


@dataclass
class System:
    rules: list[Rule]
    actions: dict[str, Any]
    clock: ManualClock


def load_system(paths: list[Path]) -> System:
    plugins = PluginHost(autoload=False)
    clock = ManualClock(START)
    compiler = make_compiler(plugins, clock)
    ruleset = load_rules(paths, actions=plugins.actions, compiler=compiler)
    if ruleset.errors:
        raise SystemExit("generated rules do not load:\n" + "\n".join(map(str, ruleset.errors)))
    return System(ruleset.rules, dict(plugins.actions), clock)


#: (wall seconds, CPU seconds, rules matched) of one run
Timing = tuple[float, float, int]


class CcbusRouter:
    """``Pipeline.process``: what the bus runs for each event."""

    name = "ccbus"

    def __init__(self, system: System) -> None:
        self.engine = Engine(system.rules, state=StateTable())
        self.pipeline = Pipeline(self.engine)

    def process(self, event: Event, now: float) -> tuple[int, list[tuple[str, str, Any]]]:
        outcome = self.pipeline.process(event, now)
        calls = [(i.rule, i.action, i.params.model_dump()) for i in outcome.invocations]
        return len(outcome.firings), calls

    def run(self, events: list[Event], start: float, latencies: list[int]) -> Timing:
        process = self.pipeline.process
        clock = time.perf_counter_ns
        append = latencies.append
        matched = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i, event in enumerate(events):
            now = start + i * EVENT_SPACING
            a = clock()
            outcome = process(event, now)
            b = clock()
            append(b - a)
            matched += len(outcome.firings)
        return time.perf_counter() - t0, time.process_time() - c0, matched


# ---------------------------------------------------------------------------
# The naive baseline: what "just use simpleeval" would do.

_HOLE = re.compile(r"\{([^{}]+)\}")


@dataclass
class NaiveRule:
    name: str
    patterns: list[str]
    condition: str | None
    actions: list[tuple[str, Any]]
    kind: str | None = None  # "count" or None
    key: str | None = None
    threshold: int = 0
    window: float = 0.0
    throttle_key: str | None = None
    throttle_max: int = 0
    throttle_window: float = 0.0
    counts: dict[str, list[float]] = field(default_factory=dict)
    throttles: dict[str, list[float]] = field(default_factory=dict)


def naive_rules(paths: Iterable[Path], actions: dict[str, Any]) -> list[NaiveRule]:
    """The same rule files read with plain PyYAML: strings stay strings, nothing compiled."""
    rules = []
    for path in paths:
        for raw in yaml.safe_load(path.read_text())["rules"]:
            on = raw["on"] if "on" in raw else raw[True]  # YAML 1.1 reads a bare `on` as True
            calls = []
            for item in raw["do"]:
                ((action, params),) = item.items()
                if not isinstance(params, dict):
                    params = {actions[action].shorthand: params}
                calls.append((action, params))
            rule = NaiveRule(raw["name"], [on] if isinstance(on, str) else on, raw.get("if"), calls)
            gate = raw.get("count")
            if gate:
                rule.kind = "count"
                rule.key = gate.get("per") or "event.subject"
                rule.threshold = gate["at_least"]
                rule.window = parse_duration(gate["within"])
            throttle = raw.get("throttle")
            if throttle:
                rule.throttle_key = throttle.get("per") or rule.key or "event.subject"
                rule.throttle_max = throttle.get("at_most", 1)
                rule.throttle_window = parse_duration(throttle["every"])
            rules.append(rule)
    return rules


class NaiveRouter:
    """Every rule, every event: fnmatch, then parse-and-evaluate each expression each time."""

    name = "naive simpleeval"

    def __init__(self, system: System, paths: list[Path]) -> None:
        self.rules = naive_rules(paths, system.actions)
        self.actions = system.actions
        # the same function library the compiled expressions call
        self.functions = dict(make_compiler(PluginHost(autoload=False), system.clock).functions)

    def _eval(self, expr: str, names: dict[str, Any]) -> Any:
        return simpleeval.EvalWithCompoundTypes(names=names, functions=self.functions).eval(expr)

    def _render(self, value: Any, names: dict[str, Any]) -> Any:
        if isinstance(value, str):
            holes = _HOLE.findall(value)
            if len(holes) == 1 and value == "{" + holes[0] + "}":
                return self._eval(holes[0], names)
            return _HOLE.sub(lambda m: _text(self._eval(m.group(1), names)), value)
        if isinstance(value, dict):
            return {k: self._render(v, names) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, names) for v in value]
        return value

    def _window(
        self, table: dict[str, list[float]], key: str, width: float, now: float
    ) -> list[float]:
        times = table.setdefault(key, [])
        while times and times[0] <= now - width:
            times.pop(0)
        return times

    def process(self, event: Event, now: float) -> tuple[int, list[tuple[str, str, Any]]]:
        names = dict(event.data)
        names["event"] = event
        fired = 0
        calls = []
        for rule in self.rules:
            if not any(fnmatchcase(event.type, p) for p in rule.patterns):
                continue
            try:
                ok = rule.condition is None or bool(self._eval(rule.condition, names))
            except Exception:  # a missing field or a failing function: "no match"
                ok = False
            if not ok:
                continue
            if rule.kind == "count":
                assert rule.key is not None
                times = self._window(
                    rule.counts, _text(self._eval(rule.key, names)), rule.window, now
                )
                times.append(now)
                if len(times) < rule.threshold:
                    continue
                times.clear()
            if rule.throttle_key is not None:
                key = _text(self._eval(rule.throttle_key, names))
                times = self._window(rule.throttles, key, rule.throttle_window, now)
                if len(times) >= rule.throttle_max:
                    continue
                times.append(now)
            fired += 1
            for action, params in rule.actions:
                try:
                    rendered = self._render(params, names)
                    checked = self.actions[action].params.model_validate(rendered)
                except Exception:
                    continue
                calls.append((rule.name, action, checked.model_dump()))
        return fired, calls

    def run(self, events: list[Event], start: float, latencies: list[int]) -> Timing:
        clock = time.perf_counter_ns
        append = latencies.append
        process = self.process
        matched = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i, event in enumerate(events):
            now = start + i * EVENT_SPACING
            a = clock()
            fired, _ = process(event, now)
            b = clock()
            append(b - a)
            matched += fired
        return time.perf_counter() - t0, time.process_time() - c0, matched


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------
# Measuring


@dataclass
class Result:
    name: str
    runs: int
    events: int
    rates: list[float]
    cpu_rates: list[float]
    p50_us: float
    p99_us: float
    mean_us: float
    matches_per_event: float

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": self.runs,
            "events_per_run": self.events,
            "events_per_second_median": round(self.median_rate),
            "events_per_second_runs": [round(r) for r in self.rates],
            "events_per_second_best": round(max(self.rates)),
            "events_per_cpu_second_median": round(statistics.median(self.cpu_rates)),
            "latency_p50_us": round(self.p50_us, 2),
            "latency_p99_us": round(self.p99_us, 2),
            "latency_mean_us": round(self.mean_us, 2),
            "matches_per_event": round(self.matches_per_event, 3),
        }


def percentile(sorted_values: list[int], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def measure(router: Any, events: list[Event], runs: int, warmup: int = 2) -> Result:
    latencies: list[int] = []
    rates: list[float] = []
    cpu_rates: list[float] = []
    matched_total = 0
    for r in range(warmup + runs):
        start = START + RUN_GAP * (r + 1)
        sink: list[int] = [] if r < warmup else latencies
        elapsed, cpu, matched = router.run(events, start, sink)
        if r >= warmup:
            rates.append(len(events) / elapsed)
            cpu_rates.append(len(events) / cpu)
            matched_total += matched
    latencies.sort()
    return Result(
        name=router.name,
        runs=runs,
        events=len(events),
        rates=rates,
        cpu_rates=cpu_rates,
        p50_us=percentile(latencies, 0.50) / 1000,
        p99_us=percentile(latencies, 0.99) / 1000,
        mean_us=sum(latencies) / len(latencies) / 1000,
        matches_per_event=matched_total / (runs * len(events)),
    )


def cross_check(system: System, paths: list[Path], events: list[Event]) -> dict[str, Any]:
    """Run both implementations once from fresh state; they must produce the same calls."""
    fast, naive = CcbusRouter(system), NaiveRouter(system, paths)
    histogram: Counter[int] = Counter()
    invocations = 0
    for i, event in enumerate(events):
        now = START + i * EVENT_SPACING
        fired_a, calls_a = fast.process(event, now)
        fired_b, calls_b = naive.process(event, now)
        if (fired_a, calls_a) != (fired_b, calls_b):
            raise SystemExit(
                f"baseline and ccbus disagree on event {i} ({event.type} {event.data}):\n"
                f"  ccbus: {fired_a} {calls_a}\n  naive: {fired_b} {calls_b}"
            )
        histogram[fired_a] += 1
        invocations += len(calls_a)
    errors = sum(s.errors + s.missing_field for s in fast.engine.stats.values())
    return {
        "identical": True,
        "matches_histogram": {str(k): histogram[k] for k in sorted(histogram)},
        "invocations_per_event": round(invocations / len(events), 3),
        "evaluation_errors": errors,
    }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per run (10000)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of ccbus (7)")
    parser.add_argument(
        "--baseline-runs", type=int, default=3, help="timed runs of the naive baseline (3)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    # a failing condition logs a warning once a minute per rule; keep the table readable
    logging.getLogger("ccbus").addHandler(logging.NullHandler())
    logging.getLogger("ccbus").propagate = False
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="ccbus-bench-") as tmp:
        paths = write_rules(Path(tmp))
        t0 = time.perf_counter()
        system = load_system(paths)
        load_seconds = time.perf_counter() - t0
        events = build_events(args.events, args.seed)
        types = Counter(e.type for e in events)
        print(
            f"workload: {len(system.rules)} rules in {len(paths)} files over {len(types)} event "
            f"types (loaded and compiled in {load_seconds * 1000:.0f} ms), "
            f"{len(events)} events"
        )
        check = cross_check(system, paths, events) if not args.no_baseline else {}
        if check:
            print(
                "cross-check: ccbus and the baseline produce identical calls for every event; "
                f"matches/event histogram {check['matches_histogram']}, "
                f"{check['invocations_per_event']} action calls/event"
            )
        gc.collect()
        fast = measure(CcbusRouter(system), events, args.runs, args.warmup)
        naive = None
        if not args.no_baseline:
            gc.collect()
            naive = measure(NaiveRouter(system, paths), events, args.baseline_runs, 1)

    info = machine()
    info["load_average_1m_before"] = round(load_before, 2)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; "
        f"load average {load_before:.2f} before, {info['load_average_1m']:.2f} after "
        "(other processes on the machine skew wall-clock figures)"
    )
    print()
    header = f"{'':<18}{'events/s (median)':>18}{'per CPU-s':>11}"
    header += f"{'p50 µs':>9}{'p99 µs':>9}{'mean µs':>9}"
    header += f"{'matches/ev':>12}{'runs':>6}"
    print(header)
    print("-" * len(header))
    for result in (fast, naive):
        if result is None:
            continue
        print(
            f"{result.name:<18}{result.median_rate:>18,.0f}"
            f"{statistics.median(result.cpu_rates):>11,.0f}{result.p50_us:>9.1f}"
            f"{result.p99_us:>9.1f}{result.mean_us:>9.1f}{result.matches_per_event:>12.2f}"
            f"{result.runs:>6}"
        )
    print("-" * len(header))
    ratio = fast.median_rate / naive.median_rate if naive else None
    if ratio is not None:
        print(f"ccbus / naive baseline: {ratio:.1f}x")
    print(
        f"ccbus runs (events/s): {', '.join(f'{r:,.0f}' for r in fast.rates)} "
        f"(best {max(fast.rates):,.0f}; noise from other load only ever slows a run down)"
    )
    verdict = "PASS" if fast.median_rate >= TARGET_EVENTS_PER_SECOND else "BELOW TARGET"
    print(
        f"target: >= {TARGET_EVENTS_PER_SECOND:,} events/s on one core: {verdict} "
        f"({fast.median_rate:,.0f} events/s)"
    )

    if args.json:
        doc = {
            "benchmark": "route",
            "machine": info,
            "workload": {
                "rules": len(system.rules),
                "event_types": len(types),
                "events": len(events),
                "seed": args.seed,
                "load_ms": round(load_seconds * 1000, 1),
                **check,
            },
            "ccbus": fast.as_dict(),
            "baseline": naive.as_dict() if naive else None,
            "ratio": round(ratio, 2) if ratio else None,
            "target_events_per_second": TARGET_EVENTS_PER_SECOND,
            "verdict": verdict,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
