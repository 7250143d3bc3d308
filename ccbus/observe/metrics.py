"""The bus's numbers: counters and histograms kept on the hot path, and ``GET /metrics``.

Three parts, in the order a number travels:

* the registry: a deliberately small dict keyed by name and labels
  (:class:`Counters`, :class:`Histogram`); it costs one dict update per
  increment on the hot path, and health, ``/metrics`` and ``ccbus status`` read it;
* :func:`families`: the registry and the bus's gauges (read through a
  :class:`~ccbus.observe.view.BusView` at scrape time) as Prometheus families, so
  a counter added anywhere in the core appears without more code;
* :func:`render`: the Prometheus text exposition format (0.0.4), written out by
  hand.  Why not ``prometheus_client``: its registry is process-global (several
  buses in one test process would collide) and it would only wrap our own
  :class:`Counters` in a custom collector anyway; the format is a few lines of
  escaping.  The tests parse our output with ``prometheus_client``'s own parser,
  so the format is checked by the reference implementation all the same.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from ccbus.observe.health import source_status
from ccbus.observe.view import cluster_of

if TYPE_CHECKING:
    from ccbus.observe.view import BusView, HistogramView

__all__ = [
    "CONTENT_TYPE", "LATENCY_BUCKETS", "Counters", "Family", "Histogram", "KeyCache", "Labels",
    "MAX_LABEL_VALUES", "OTHER", "SeriesKey", "families", "histogram_family", "render",
]

Labels = tuple[tuple[str, str], ...]
#: Distinct values one label of one counter may take; later values count as :data:`OTHER`.
MAX_LABEL_VALUES = 1000
#: The label value that stands for every value past :data:`MAX_LABEL_VALUES`.
OTHER = "other"
#: The counter of increments whose label values were folded into :data:`OTHER`.
FOLDED = "metrics_labels_folded"
#: A counter series: its name and labels (see :meth:`Counters.key`).
SeriesKey = tuple[str, Labels]

#: Seconds: from milliseconds (a healthy local call) to minutes (retries behind a dead target).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0, 1800.0)


def _labels(labels: dict[str, str]) -> Labels:
    """Labels in name order, the key of a series.  Runs several times per event,
    so the common cases (none, one, two) take no ``sorted()``."""
    items = tuple(labels.items())
    if len(items) == 2:
        return items if items[0][0] < items[1][0] else (items[1], items[0])
    return items if len(items) < 2 else tuple(sorted(items))


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeyCache(dict[K, V], Generic[K, V]):
    """Series keys made once per short key of the caller's (an action name, a
    ``(source, type)`` pair): ``cache[action]`` makes it on first use.

    For counters that move on every event or call, where building and ordering a
    label dict each time (:meth:`Counters.inc`) was a measurable share of the bus.
    Holds at most ``limit`` keys: short keys made from outside data (event types)
    must not grow it for ever; past the limit a key is made on each use instead.
    """

    def __init__(self, make: Callable[[K], V], limit: int = 4 * MAX_LABEL_VALUES) -> None:
        super().__init__()
        self.make = make
        self.limit = limit

    def __missing__(self, short: K) -> V:
        key = self.make(short)
        if len(self) < self.limit:
            self[short] = key
        return key


class Counters:
    """Counter series by name and labels, with label cardinality bounded.

    Label values often come from outside (an event's ``type``, a source's
    refusal reason): without a bound, a sender inventing a new event type per
    message grows ``/metrics`` and memory for ever.  So each label of each
    counter keeps at most ``max_label_values`` distinct values; past that a new
    value is counted under ``other`` (:data:`OTHER`), and every increment folded
    that way is also counted in ``metrics_labels_folded{metric, label}``.
    """

    def __init__(self, max_label_values: int = MAX_LABEL_VALUES) -> None:
        self._values: defaultdict[tuple[str, Labels], float] = defaultdict(float)
        self.max_label_values = max_label_values
        #: distinct values seen so far, per (counter, label), up to the bound
        self._seen: dict[tuple[str, str], set[str]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.add((name, _labels(labels)), amount)

    def key(self, name: str, **labels: str) -> SeriesKey:
        """One series' key, for a path that runs per event and keeps it (see :meth:`add`)."""
        return (name, _labels(labels))

    def add(self, key: SeriesKey, amount: float = 1.0) -> None:
        """:meth:`inc` by a key from :meth:`key`: no label dict to build and order."""
        values = self._values
        if key in values:  # the hot path: a series that exists
            values[key] += amount
        else:
            self._new_series(key, amount)

    def _new_series(self, key: SeriesKey, amount: float) -> None:
        """A series not seen before: kept if each label value is within the bound,
        else counted with the values past it folded into ``other``."""
        name, labels = key
        folded: list[str] = []
        kept: list[tuple[str, str]] = []
        for label, value in labels:
            seen = self._seen.get((name, label))
            if seen is None:
                seen = self._seen[(name, label)] = set()
            if value not in seen:
                if len(seen) >= self.max_label_values and name != FOLDED:
                    folded.append(label)
                    value = OTHER
                else:
                    seen.add(value)
            kept.append((label, value))
        self._values[(name, tuple(kept))] += amount
        for label in folded:
            self._values[(FOLDED, (("label", label), ("metric", name)))] += amount

    def get(self, name: str, **labels: str) -> float:
        return self._values.get((name, _labels(labels)), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self._values.items() if n == name)

    def snapshot(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (name, dict(labels), value) for (name, labels), value in sorted(self._values.items())
        ]


@dataclass(slots=True)
class _Series:
    buckets: list[int]
    sum: float = 0.0
    count: int = 0


@dataclass(slots=True)
class Histogram:
    """Observations in fixed buckets (upper bounds, seconds), per label set."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    _series: dict[Labels, _Series] = field(default_factory=dict)

    def observe(self, value: float, **labels: str) -> None:
        self.add(_labels(labels), value)

    def key(self, **labels: str) -> Labels:
        """One series' key, for a path that runs per call and keeps it (see :meth:`add`)."""
        return _labels(labels)

    def add(self, key: Labels, value: float) -> None:
        """:meth:`observe` by a key from :meth:`key`."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series([0] * len(self.bounds))
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            series.buckets[index] += 1
        series.sum += value
        series.count += 1

    def series(self) -> Iterable[tuple[dict[str, str], list[tuple[float, int]], float, int]]:
        """Per label set: cumulative ``(upper bound, count)`` pairs, sum and count."""
        for labels, series in sorted(self._series.items()):
            running, cumulative = 0, []
            for bound, hits in zip(self.bounds, series.buckets, strict=True):
                running += hits
                cumulative.append((bound, running))
            yield dict(labels), cumulative, series.sum, series.count


# ---------------------------------------------------------------------------
# The exposition format

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[str, dict[str, str], float]  # (suffix, labels, value)


@dataclass(slots=True)
class Family:
    """One metric: name, type, help, and samples (the suffix is ``_bucket`` etc.)."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, labels, value in family.samples:
            lines.append(f"{family.name}{suffix}{_label_text(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _label_text(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_value(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


# ---------------------------------------------------------------------------
# What GET /metrics serves

#: HELP texts of the counters the core keeps; others get a generic one.
COUNTER_HELP = {
    "events_in": "Events received, by source and type.",
    "events_duplicate": "Events dropped as duplicates (same source and id within the window).",
    "rule_fired": "Rule firings (condition and gates passed), by rule.",
    "rule_load_errors": "Rule file problems found while loading or reloading.",
    "rule_reloads": "Rule set loads and reloads.",
    "actions": "Action call attempts settled, by action and outcome.",
    "actions_recorded": "Action calls recorded in the outbox, by action.",
    "actions_deduplicated": "Action calls already in the outbox (same idempotency key).",
    "action_seconds": "Time spent running action calls, by action.",
    "source_restarts": "Times a source's run() raised and was restarted.",
    "source_reconnects": "Times a source went into the reconnecting state.",
    "source_bad_input": "Inputs a source refused (bad frames, signatures, bodies), by reason.",
    "http_responses": "Responses of the local HTTP listener, by status code.",
    "http_refused_requests": "Requests the local HTTP listener refused before any route saw "
                             "them, by reason (ambiguous_length, protocol_400, protocol_431).",
    "config_reload_errors": "Config reloads refused because the new config had errors.",
    "state_flush_errors": "Failures to save rule state.",
    "emit_dropped": "Derived events not raised, by rule and reason: depth (too many "
    "generations) or fan_out (one event caused too many derived events).",
    "storage_outages": "Times the state directory filled up and input was paused.",
    "storage_probe_failures": "Probes of a full state directory that found no room yet.",
    FOLDED: "Increments counted under label value 'other' because the label already had "
            "its maximum number of distinct values, by metric and label.",
}


def families(bus: BusView, outbox_depth: int, dead_letters: int) -> list[Family]:
    out: dict[str, Family] = {}
    for name, labels, value in bus.counters.snapshot():
        metric = f"ccbus_{name}_total"
        family = out.get(metric)
        if family is None:
            help_text = COUNTER_HELP.get(name, f"ccbus counter {name}.")
            family = out[metric] = Family(metric, "counter", help_text)
        family.add(value, **labels)

    rules = [
        Family("ccbus_rule_evaluations_total", "counter", "Events a rule was evaluated for."),
        Family("ccbus_rule_matches_total", "counter", "Evaluations whose condition held."),
        Family("ccbus_rule_throttled_total", "counter", "Firings suppressed by throttle."),
        Family("ccbus_rule_errors_total", "counter",
               "Failed evaluations and renders, by rule and kind "
               "(error, missing_field, over_budget)."),
    ]
    for rule, stats in sorted(bus.rule_stats().items()):
        rules[0].add(stats.evaluated, rule=rule)
        rules[1].add(stats.matched, rule=rule)
        rules[2].add(stats.throttled, rule=rule)
        rules[3].add(stats.errors, rule=rule, kind="error")
        rules[3].add(stats.missing_field, rule=rule, kind="missing_field")
        rules[3].add(stats.over_budget, rule=rule, kind="over_budget")
    active = Family("ccbus_rules_active", "gauge", "Rules loaded and routing.")
    active.add(len(bus.rule_names()))

    state = Family("ccbus_source_state", "gauge", "1 for the state each source is in.")
    ready = Family("ccbus_source_ready", "gauge", "1 when the source is ready (or degraded).")
    for name, runtime in sorted(bus.sources.items()):
        status = source_status(runtime)
        state.add(1, source=name, state=runtime.state)
        ready.add(1 if status["ready"] else 0, source=name)

    member = cluster_of(bus)
    cluster: list[Family] = []
    if member is not None:
        leader = Family("ccbus_cluster_leader", "gauge", "1 while this instance leads its group.")
        leader.add(1 if member.leading else 0, group=member.group, instance=member.instance)
        epoch = Family("ccbus_cluster_epoch", "gauge", "The group's lease epoch as last seen.")
        epoch.add(member.epoch, group=member.group)
        failovers = Family("ccbus_cluster_failovers_total", "counter",
                           "Times this instance took the lease over (a new epoch).")
        failovers.add(member.failovers, group=member.group)
        cluster = [leader, epoch, failovers]

    depth = Family("ccbus_outbox_depth", "gauge", "Action calls recorded and not yet delivered.")
    depth.add(outbox_depth)
    dead = Family("ccbus_dead_letters", "gauge", "Action calls in the dead-letter store.")
    dead.add(dead_letters)
    full = Family("ccbus_storage_full", "gauge",
                  "1 while the state directory is full and no input is accepted.")
    full.add(0 if bus.storage_problem() is None else 1)

    latency = histogram_family(
        "ccbus_event_to_action_seconds",
        "From an action call being recorded (its event routed) to its success.",
        bus.latency,
    )

    live = Family("ccbus_live_subscribers", "gauge", "Live view pages connected.")
    live.add(bus.live.subscribers)
    dropped = Family("ccbus_live_dropped_total", "counter",
                     "Live view records dropped for pages that could not keep up.")
    dropped.add(bus.live.dropped)
    started = Family("ccbus_start_time_seconds", "gauge", "When this process started (Unix).")
    started.add(bus.start_time)
    return [*out.values(), *rules, active, state, ready, depth, dead, full, latency,
            live, dropped, started, *cluster]


def histogram_family(name: str, help_text: str, histogram: HistogramView) -> Family:
    """A histogram's cumulative buckets (``le``), ``+Inf``, sum and count per label set."""
    family = Family(name, "histogram", help_text)
    for labels, buckets, total, count in histogram.series():
        for bound, cumulative in buckets:
            family.add(cumulative, "_bucket", **labels, le=repr(float(bound)))
        family.add(count, "_bucket", **labels, le="+Inf")
        family.add(total, "_sum", **labels)
        family.add(count, "_count", **labels)
    return family
