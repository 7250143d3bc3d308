"""Long-run benchmark: one bus, millions of events, CPU per event slice by slice.

Every other benchmark starts a fresh bus per run of at most 100k events, and a
service runs for months: a cost that grows with what the bus has seen (a
duplicate window that fills up, a cache that is never trimmed, a dict used as a
FIFO) shows in none of them.  This one publishes ``--events`` events (unique
ids, so the duplicate window fills and then evicts on every event) through one
running bus, with the workload of ``bus_bench.py`` (per record a native event
one rule matches and a canonical event no rule matches), and reports the
process's CPU time per event for every slice of ``--slice`` events.

The bus is flat when the last slices cost what the first ones after the window
filled did: the verdict compares the median of the last three slices with the
median of the first three after the window is full, and passes within 20 %.

``--old-dedup`` runs the same workload with the duplicate window of commit
d2acefc (a plain dict, oldest evicted with ``del d[next(iter(d))]``), the
baseline that made a long-running bus twenty times slower.

    .venv/bin/python bench/longrun_bench.py [--events 2000000] [--slice 100000]
        [--old-dedup] [--json out.json]

A benchmark, not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from bus_bench import make_bus
from counting import Counting

from ccbus.events.envelope import Event
from ccbus.pipeline import Pipeline

FLAT_WITHIN = 0.20


def events(count: int) -> Iterator[Event]:
    """``count`` events, built as they are published (a list of millions would be the
    benchmark's own memory, not the bus's)."""
    now = datetime.now(UTC)
    for i in range(count // 2):
        agent = f"agent-{i % 50}"
        yield Event(id=f"n{i}", source="bench", type="bench.AgentReady", time=now,
                    subject=agent, vendor="bench",
                    data={"seq": i, "AgentID": agent, "State": "Ready"})
        yield Event(id=f"c{i}", source="bench", type="agent.state_changed", time=now,
                    subject=agent, vendor="bench", data={"agent": agent, "state": "ready"})


def old_duplicate(self: Pipeline, event: Event, now: float) -> bool:
    """The duplicate window as it was in d2acefc: a plain dict used as a FIFO."""
    seen: dict[Any, float] = self.__dict__.setdefault("_old_seen", {})
    key = (event.source, event.id)
    first = seen.get(key)
    if first is not None and now - first < self.dedup_window:
        self.duplicates += 1
        return True
    if first is not None:
        del seen[key]
    seen[key] = now
    if len(seen) > self.dedup_size:
        del seen[next(iter(seen))]
    return False


async def run(total: int, slice_size: int, workdir: Path) -> list[float]:
    """µs of process CPU per event, for each slice of ``slice_size`` published events."""
    counting = Counting()
    bus = make_bus(workdir, counting)
    per_event: list[float] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        cpu = time.process_time()
        for n, event in enumerate(events(total), start=1):
            await bus.publish(event)
            if n % slice_size == 0:
                while counting.calls < n // 2:  # noqa: ASYNC110 - the slice's calls ran
                    await anyio.sleep(0.001)
                now = time.process_time()
                per_event.append((now - cpu) / slice_size * 1e6)
                cpu = now
                print(f"events {n - slice_size + 1:>9,}-{n:>9,}: "
                      f"{per_event[-1]:7.1f} µs CPU per event", flush=True)
        bus.stop()
    return per_event


def verdict(per_event: list[float], window_slices: int) -> dict[str, Any]:
    settled = per_event[window_slices:] or per_event
    first = statistics.median(settled[:3])
    last = statistics.median(settled[-3:])
    return {"first_after_window_us": first, "last_us": last, "ratio": last / first,
            "flat": abs(last / first - 1) <= FLAT_WITHIN}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--slice", type=int, default=100_000)
    parser.add_argument("--old-dedup", action="store_true",
                        help="the duplicate window of d2acefc (a dict used as a FIFO)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.old_dedup:
        Pipeline._duplicate = old_duplicate  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="ccbus-longrun-") as tmp:
        per_event = anyio.run(run, args.events, args.slice, Path(tmp))
    # the window holds 100,000 (source, id) pairs: it is full after that many events
    result = {"benchmark": "longrun", "events": args.events, "slice": args.slice,
              "old_dedup": args.old_dedup, "us_cpu_per_event": per_event,
              **verdict(per_event, window_slices=max(1, 100_000 // args.slice))}
    print(f"\nfirst slices after the window filled: {result['first_after_window_us']:.1f} µs/event;"
          f" last: {result['last_us']:.1f} µs/event; ratio {result['ratio']:.2f} "
          f"({'flat' if result['flat'] else 'NOT flat'} within {FLAT_WITHIN:.0%})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
