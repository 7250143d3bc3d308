"""The bus's numbers as Prometheus families: what ``GET /metrics`` serves.

Every counter in :class:`~ccbus.metrics.Counters` becomes
``ccbus_<name>_total`` with its labels (so a counter added anywhere in the
core appears here without more code); per-rule statistics come from the
engine, source states and the outbox are gauges read at scrape time, and
event-to-action latency is a histogram.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .health import source_status
from .metrics import Histogram
from .prometheus import Family

if TYPE_CHECKING:
    from .bus import Bus

__all__ = ["families", "histogram_family"]

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
    "config_reload_errors": "Config reloads refused because the new config had errors.",
    "state_flush_errors": "Failures to save rule state.",
}


def families(bus: Bus, outbox_depth: int, dead_letters: int) -> list[Family]:
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
               "Failed evaluations, by rule and kind (error, missing_field)."),
    ]
    for rule, stats in sorted(bus.engine.stats.items()):
        rules[0].add(stats.evaluated, rule=rule)
        rules[1].add(stats.matched, rule=rule)
        rules[2].add(stats.throttled, rule=rule)
        rules[3].add(stats.errors, rule=rule, kind="error")
        rules[3].add(stats.missing_field, rule=rule, kind="missing_field")
    active = Family("ccbus_rules_active", "gauge", "Rules loaded and routing.")
    active.add(len(bus.engine.index.rules))

    state = Family("ccbus_source_state", "gauge", "1 for the state each source is in.")
    ready = Family("ccbus_source_ready", "gauge", "1 when the source is ready (or degraded).")
    for name, runtime in sorted(bus.sources.items()):
        status = source_status(runtime)
        state.add(1, source=name, state=runtime.state)
        ready.add(1 if status["ready"] else 0, source=name)

    depth = Family("ccbus_outbox_depth", "gauge", "Action calls recorded and not yet delivered.")
    depth.add(outbox_depth)
    dead = Family("ccbus_dead_letters", "gauge", "Action calls in the dead-letter store.")
    dead.add(dead_letters)

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
    return [*out.values(), *rules, active, state, ready, depth, dead, latency,
            live, dropped, started]


def histogram_family(name: str, help_text: str, histogram: Histogram) -> Family:
    """A histogram's cumulative buckets (``le``), ``+Inf``, sum and count per label set."""
    family = Family(name, "histogram", help_text)
    for labels, buckets, total, count in histogram.series():
        for bound, cumulative in buckets:
            family.add(cumulative, "_bucket", **labels, le=repr(float(bound)))
        family.add(count, "_bucket", **labels, le="+Inf")
        family.add(total, "_sum", **labels)
        family.add(count, "_count", **labels)
    return family
