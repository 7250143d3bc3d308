"""Memory benchmark: RSS with 1,000 rules loaded and per-key state for 100,000 keys.

1. Generate 1,000 rules (200 event types x the 5 rule families of
   ``route_bench.py``), with gates on 2-3 rules per family: ``count`` (per
   agentId, queueId, hostname), ``throttle`` (per hostname, agentId, caller
   number) and ``for`` (per agentId, deviceId).  Load them through
   ``load_rules``; report RSS.
2. Route 100,000 events through ``Pipeline.process``, each with a key never
   seen before, so that every one of the 100,000 keys holds state in at least
   one stateful rule; every 1,000 events the change set is taken, as the bus's
   once-a-second state flush does.  Report RSS and live state entries.
3. Keys that have gone quiet: (a) advance the clock past every window, fire
   the due ``for`` timers and ``engine.sweep(now)``: the count and throttle
   entries go; (b) with ``StateTable(max_keys=N)``, route many more distinct
   keys: every per-rule map stays at N and ``state.evicted`` grows.

    .venv/bin/python bench/memory_bench.py [--keys 100000] [--json out.json]

A benchmark, not a test: prints PASS or ABOVE TARGET and exits 0 either way.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import route_bench as rb  # noqa: E402  (the rule families and event data live there)

from ccbus.events.envelope import Event  # noqa: E402
from ccbus.pipeline import Pipeline  # noqa: E402
from ccbus.rules.engine import Engine  # noqa: E402
from ccbus.rules.state import COUNT, FOR, THROTTLE, StateTable  # noqa: E402

TARGET_MB = 150.0
TYPES_PER_FAMILY = 40  # 5 families x 40 types x 5 rules = 1,000 rules
SITES = [f"site{n:02d}" for n in range(TYPES_PER_FAMILY)]

# Gates added for this benchmark, by family and rule suffix (the routing
# benchmark's own gates stay: call/abandoned throttle, agent/stuck count,
# threshold/critical throttle, queue/sla count).
_PER_CALLER = "\"get(event.data, 'caller.number', '')\""
EXTRA_GATES = {
    ("call", "intl"): "throttle: {per: " + _PER_CALLER + ", at_most: 1, every: 1h}",
    ("agent", "stuck"): "count: {per: agentId, at_least: 3, within: 10m}",
    ("agent", "logout"): "for: {per: agentId, duration: 15m}",
    ("agent", "vip"): "throttle: {per: agentId, at_most: 1, every: 10m}",
    ("threshold", "cpu"): "count: {per: hostname, at_least: 3, within: 10m}",
    ("device", "down"): "for: {per: deviceId, duration: 5m}",
}


def rss_bytes() -> int:
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")


def mb(n: int) -> float:
    return n / (1024 * 1024)


def family_specs(family: str) -> list[rb.RuleSpec]:
    specs = []
    for suffix, condition, actions, gate in rb.FAMILIES[family]:
        specs.append((suffix, condition, actions, EXTRA_GATES.get((family, suffix), gate)))
    return specs


def memory_types() -> dict[str, list[str]]:
    """200 event types: the 20 routing types at 10 sites each (``cvp.site04.call.ended``)."""
    types: dict[str, list[str]] = {}
    for family, base in rb.EVENT_TYPES.items():
        names = []
        for n in range(TYPES_PER_FAMILY):
            vendor, _, rest = base[n % len(base)].partition(".")
            names.append(f"{vendor}.{SITES[n]}.{rest}")
        types[family] = names
    return types


def write_rules(directory: Path) -> list[Path]:
    paths = []
    for family, types in memory_types().items():
        specs = family_specs(family)
        for event_type in types:
            path = directory / f"{rb.slug(event_type)}.yaml"
            path.write_text(rb.rule_file_text(event_type, family, specs))
            paths.append(path)
    return paths


def keyed_event(rnd: random.Random, family: str, event_type: str, i: int) -> Event:
    """An event whose key (agent, queue, host, device, caller) is ``i``: never seen before.

    The data is the routing benchmark's, nudged so the stateful rules match:
    this is the worst case for state, every event leaves some behind.
    """
    data = rb.DATA[family](rnd, i)
    tag = f"{i:06d}"
    if family == "call":
        data["caller"]["number"] = "+31" + tag
        data["result"] = "abandoned"
    elif family == "agent":
        data["agentId"] = "a" + tag
        data["state"] = "NOT_READY" if i % 2 else "LOGGED_OUT"
        data["reason"] = "Break"
        data["durationSeconds"] = 900
        data["skills"]["primary"] = "vip"
    elif family == "threshold":
        data["hostname"] = "cs" + tag
        data["severity"] = "critical"
        data["metric"] = "cpu"
        data["currentValue"] = 99.0
    elif family == "queue":
        data["queueId"] = "q" + tag
        data["sla"]["percent"] = 70
    else:
        data["deviceId"] = "gw-" + tag
        data["status"], data["previousStatus"] = "down", "up"
    return Event(
        type=event_type,
        source="bench",
        id=f"m{i:07d}",
        vendor=event_type.split(".", 1)[0],
        subject=str(data[rb.KEY_FIELD[family]]),
        data=data,
    )


def route_keys(
    pipeline: Pipeline, keys: range, start: float, spacing: float = 0.01, seed: int = 7
) -> float:
    """Route one event per key in ``keys`` (types round-robin); returns the last ``now``."""
    rnd = random.Random(seed)
    typed = [(family, t) for family, types in memory_types().items() for t in types]
    now = start
    for n, i in enumerate(keys):
        family, event_type = typed[i % len(typed)]
        now = start + n * spacing
        pipeline.process(keyed_event(rnd, family, event_type, i), now)
        if n % 1000 == 999:
            pipeline.engine.state.take_changes()  # what the bus's state flush does
            pipeline.process_due(now)  # what the bus's timer task does
    pipeline.engine.state.take_changes()
    return now


def state_breakdown(state: StateTable) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for rule_state in state.rules.values():
        kinds[COUNT] += len(rule_state.counts)
        kinds[THROTTLE] += len(rule_state.throttles)
        kinds[FOR] += len(rule_state.pending)
    return {k: kinds[k] for k in (COUNT, THROTTLE, FOR)}


def distinct_keys(state: StateTable) -> int:
    seen: set[str] = set()
    for rule_state in state.rules.values():
        for mapping in rule_state.maps().values():
            seen.update(mapping)
    return len(seen)


def largest_map(state: StateTable) -> int:
    return max(
        (len(m) for s in state.rules.values() for m in s.maps().values()),
        default=0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys (100000)")
    parser.add_argument("--bound", type=int, default=100, help="max_keys for part (b) (100)")
    parser.add_argument(
        "--bound-keys", type=int, default=100_000, help="distinct keys routed in part (b) (100000)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.getLogger("ccbus").addHandler(logging.NullHandler())
    logging.getLogger("ccbus").propagate = False

    gc.collect()
    rss_start = rss_bytes()
    with tempfile.TemporaryDirectory(prefix="ccbus-membench-") as tmp:
        paths = write_rules(Path(tmp))
        t0 = time.perf_counter()
        system = rb.load_system(paths)
        load_s = time.perf_counter() - t0
    rules = system.rules
    stateful = Counter(
        (r.gate.kind or "throttle") if r.gate is not None else "stateless" for r in rules
    )
    engine = Engine(rules, state=StateTable())
    pipeline = Pipeline(engine)
    gc.collect()
    rss_rules = rss_bytes()
    print(
        f"{len(rules)} rules in {len(paths)} files loaded in {load_s:.2f} s "
        f"({', '.join(f'{n} {k}' for k, n in sorted(stateful.items()))})"
    )

    t0 = time.perf_counter()
    end = route_keys(pipeline, range(args.keys), rb.START)
    route_s = time.perf_counter() - t0
    gc.collect()
    rss_state = rss_bytes()
    live = engine.state.keys()
    kinds = state_breakdown(engine.state)
    keys_with_state = distinct_keys(engine.state)
    print(
        f"routed {args.keys:,} events with distinct keys in {route_s:.1f} s: "
        f"{live:,} live state entries ({kinds[COUNT]:,} count, {kinds[THROTTLE]:,} throttle, "
        f"{kinds[FOR]:,} for) over {keys_with_state:,} distinct keys; "
        f"dedup window holds {len(pipeline._seen):,} ids"
    )

    # (a) quiet keys go: past every window (the longest is 1 h), fire due timers, sweep.
    later = end + 2 * 3600
    fired = len(pipeline.process_due(later).firings)
    removed = engine.sweep(later)
    engine.state.take_changes()
    after_sweep = engine.state.keys()
    kinds_after = state_breakdown(engine.state)
    gc.collect()
    rss_swept = rss_bytes()
    print(
        f"(a) clock +2 h: {fired:,} due `for` timers fired, sweep removed {removed:,} entries; "
        f"{after_sweep:,} left ({kinds_after[COUNT]:,} count, {kinds_after[THROTTLE]:,} throttle, "
        f"{kinds_after[FOR]:,} for)"
    )

    # (b) a small bound: many more distinct keys than the bound.
    del pipeline, engine
    gc.collect()
    bounded = Engine(rules, state=StateTable(max_keys=args.bound))
    bounded_pipeline = Pipeline(bounded)
    checkpoints = []
    step = max(1, args.bound_keys // 4)
    now = rb.START
    for first in range(0, args.bound_keys, step):
        keys = range(first, min(first + step, args.bound_keys))
        now = route_keys(bounded_pipeline, keys, now + 1.0, seed=first)
        checkpoints.append(
            {
                "routed_keys": keys.stop,
                "live_entries": bounded.state.keys(),
                "largest_map": largest_map(bounded.state),
                "evicted": bounded.state.evicted,
            }
        )
    maps = sum(1 for s in bounded.state.rules.values() for m in s.maps().values() if m)
    print(
        f"(b) StateTable(max_keys={args.bound:,}), {args.bound_keys:,} distinct keys: "
        + "; ".join(
            f"after {c['routed_keys']:,}: {c['live_entries']:,} entries, "
            f"largest map {c['largest_map']:,}, evicted {c['evicted']:,}"
            for c in checkpoints
        )
        + f" ({maps} non-empty per-rule maps, so at most {maps * args.bound:,} entries)"
    )

    print()
    print(f"{'RSS':<44}{'MB':>8}")
    print("-" * 52)
    for label, value in (
        ("at start (interpreter + ccbus imported)", rss_start),
        (f"after loading {len(rules):,} rules", rss_rules),
        (f"after state for {keys_with_state:,} keys ({live:,} entries)", rss_state),
        ("after sweep (Python keeps freed memory)", rss_swept),
    ):
        print(f"{label:<44}{mb(value):>8.1f}")
    print("-" * 52)
    peak = max(rss_rules, rss_state)
    verdict = "PASS" if mb(peak) <= TARGET_MB else "ABOVE TARGET"
    print(f"target: <= {TARGET_MB:.0f} MB RSS with 1,000 rules and 100k keys of state: {verdict}")

    if args.json:
        doc = {
            "benchmark": "memory",
            "machine": rb.machine(),
            "rules": len(rules),
            "rule_kinds": dict(stateful),
            "keys": args.keys,
            "rss_mb": {
                "start": round(mb(rss_start), 1),
                "rules_loaded": round(mb(rss_rules), 1),
                "with_state": round(mb(rss_state), 1),
                "after_sweep": round(mb(rss_swept), 1),
            },
            "state": {
                "live_entries": live,
                "by_kind": kinds,
                "distinct_keys": keys_with_state,
                "sweep_removed": removed,
                "for_timers_fired": fired,
                "after_sweep": after_sweep,
                "after_sweep_by_kind": kinds_after,
            },
            "bounded": {"max_keys": args.bound, "checkpoints": checkpoints},
            "target_mb": TARGET_MB,
            "verdict": verdict,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
