"""The text format as Prometheus's own parser reads it: escaping, histograms, numbers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ccbus.observe.metrics import Family, Histogram, histogram_family, render


def test_label_values_and_help_are_escaped_and_parse_back() -> None:
    family = Family("ccbus_events_in_total", "counter", 'Events "in", by type\\source.\nline 2')
    odd = 'we"ird\\type\nwith newline'
    family.add(3, source="s", type=odd)
    family.add(1.5, source="s", type="plain")
    [parsed] = text_string_to_metric_families(render([family]))
    assert parsed.type == "counter"
    assert {s.labels["type"]: s.value for s in parsed.samples} == {odd: 3.0, "plain": 1.5}


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram(bounds=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value, action="a")
    [parsed] = text_string_to_metric_families(render([histogram_family("x_seconds", "h",
                                                                       histogram)]))
    values = {(s.name, s.labels.get("le")): s.value for s in parsed.samples}
    assert values[("x_seconds_bucket", "0.1")] == 2  # le is inclusive
    assert values[("x_seconds_bucket", "1.0")] == 3
    assert values[("x_seconds_bucket", "+Inf")] == 4
    assert values[("x_seconds_count", None)] == 4 and values[("x_seconds_sum", None)] == 3.65


def test_label_values_past_the_limit_are_counted_as_other() -> None:
    from ccbus.observe.metrics import Counters, KeyCache

    counters = Counters(max_label_values=3)
    keys = KeyCache(lambda t: counters.key("events_in", source="s", type=t), limit=2)
    for i in range(10):
        counters.add(keys[f"t{i}"])
        counters.inc("events_in", source="s", type=f"t{i}")
    assert len(keys) == 2
    assert counters.get("events_in", source="s", type="t0") == 2
    assert counters.get("events_in", source="s", type="other") == 14
    assert counters.get("metrics_labels_folded", metric="events_in", label="type") == 14
    assert counters.total("events_in") == 20
    assert len(counters.snapshot()) == 5  # t0, t1, t2, other and the folded counter
