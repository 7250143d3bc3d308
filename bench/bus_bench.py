"""Bus benchmark: events/s through ``Bus.publish`` and the dispatcher, vs routing alone.

Every source plugin hands its events to ``Bus.publish``; what that costs per
event bounds what any source can deliver.  The workload is the one the
plugin benchmarks use: per vendor record, a native event that one rule
matches (its in-process action counts) and a canonical event that no rule
matches.  N records (2N events) are built before the clock starts, then:

* **bus**: a real ``Bus`` (config file and rules in a temporary directory,
  outbox off, HTTP off) running; each event is ``await bus.publish(event)``;
  the clock stops when the action has run N times (routing, recording the
  call in the in-memory store, the lane's worker running it, settling it);
* **routing alone** (the baseline): the same events through
  ``bus.pipeline.process`` with nothing executed: the cost of deciding, so
  the difference is the cost of running the calls.

Rate = records/s (each record is 2 bus events).  Medians of ``--runs``.

    .venv/bin/python bench/bus_bench.py [--records 20000] [--runs 5] [--json out.json]

A benchmark, not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import yaml
from counting import Counting, publish_all

from ccbus.config.file import load_config
from ccbus.events.envelope import Event
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

RULES = """
rules:
  - name: count
    on: bench.Agent*
    if: seq >= 0
    do: [bench.count: {agent: "{AgentID}"}]
"""


def build_events(records: int, run: int) -> list[Event]:
    now = datetime.now(UTC)
    events = []
    for i in range(records):
        agent = f"agent-{i % 50}"
        events.append(Event(id=f"r{run}-n{i}", source="bench", type="bench.AgentReady",
                            time=now, subject=agent, vendor="bench",
                            data={"seq": i, "AgentID": agent, "State": "Ready"}))
        events.append(Event(id=f"r{run}-c{i}", source="bench", type="agent.state_changed",
                            time=now, subject=agent, vendor="bench",
                            data={"agent": agent, "state": "ready"}))
    return events


def make_bus(workdir: Path, counting: Counting) -> Bus:
    (workdir / "rules").mkdir(parents=True)
    (workdir / "rules" / "count.yaml").write_text(RULES)
    config = {"sources": {}, "rules": ["rules"], "state_dir": "state",
              "http": {"enabled": False}, "delivery": {"outbox": False}}
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    host = PluginHost(autoload=False, extra=[counting])
    return Bus(load_config(workdir / "ccbus.yaml"), host, persist_state=False)


async def bus_run(records: int, run: int, workdir: Path) -> float:
    counting = Counting()
    bus = make_bus(workdir, counting)
    return await publish_all(bus, build_events(records, run), counting, records)


def routing_run(records: int, run: int, workdir: Path) -> float:
    bus = make_bus(workdir, Counting())
    events = build_events(records, run)
    clock = bus.clock
    started = time.perf_counter()
    calls = 0
    for event in events:
        calls += len(bus.pipeline.process(event, clock.now()).invocations)
    elapsed = time.perf_counter() - started
    assert calls == records, calls
    return records / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    bus: list[float] = []
    routing: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ccbus-bus-bench-") as tmp:
        anyio.run(bus_run, 2000, -1, Path(tmp) / "warmup")
        for run in range(args.runs):
            routing.append(routing_run(args.records, run, Path(tmp) / f"route{run}"))
            bus.append(anyio.run(bus_run, args.records, run, Path(tmp) / f"bus{run}"))
            print(f"run {run + 1}: routing alone {routing[-1]:>9,.0f} records/s   "
                  f"bus {bus[-1]:>9,.0f} records/s", flush=True)
    result = {
        "benchmark": "bus",
        "machine": {"python": platform.python_version(), "cores": os.cpu_count(),
                    "load_average_1m_before": load, "load_average_1m_after": os.getloadavg()[0]},
        "records_per_run": args.records,
        "routing_alone": {"rates": routing, "median": statistics.median(routing)},
        "bus": {"rates": bus, "median": statistics.median(bus)},
    }
    median_bus, median_routing = result["bus"]["median"], result["routing_alone"]["median"]
    print(f"\n{args.records:,} records per run (2 events each: one matched, one not), "
          f"{args.runs} runs, load {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'':28}{'records/s':>12}{'events/s':>12}{'µs/record':>11}")
    for name, median in (("routing alone (baseline)", median_routing), ("bus", median_bus)):
        print(f"{name:28}{median:>12,.0f}{2 * median:>12,.0f}{1e6 / median:>11.1f}")
    print(f"running the calls costs {1e6 / median_bus - 1e6 / median_routing:.1f} µs per record")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
