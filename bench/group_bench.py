"""Group benchmark: the PostgreSQL store (a group's leader) against SQLite, in the same run.

A real ``Bus`` with delivery_bench's rule (one webhook call per event) and its
receiver process; per store a fresh bus: ``sqlite`` is the default outbox in a
state directory, ``postgres`` the same config plus ``cluster:`` on a fresh
database of the local server (the bus first wins the lease, then it is timed).
``--producers`` tasks publish the events at full speed, each ``await
bus.publish`` returning once the event's call is committed.  Reported:

* routed events/s: events / time until the last ``publish`` returned;
* durable deliveries/s: distinct keys delivered / time to the last first arrival.

    .venv/bin/python bench/group_bench.py [--events 5000] [--runs 3] [--producers 1,8]
        [--server postgresql://postgres@127.0.0.1:5432]

A benchmark, not a test: it prints the table and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import anyio.to_thread
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from delivery_bench import RULE, Receiver  # noqa: E402 - the same rule and receiver

from ccbus import Event, load_config  # noqa: E402
from ccbus.actions.api import idempotency_key  # noqa: E402
from ccbus.plugins import PluginHost  # noqa: E402
from ccbus.runtime.bus import Bus  # noqa: E402

CONFIG = """\
http: {enabled: false}
state_dir: state
rules: [rules]
log_level: warning
delivery: {concurrency: 16}
"""


async def one_run(receiver: Receiver, store: str, dsn: str, events: int, producers: int,
                  tag: str) -> tuple[float, float, int]:
    await anyio.to_thread.run_sync(receiver.reset)
    with tempfile.TemporaryDirectory(prefix="ccbus-group-bench-") as tmp:
        root = Path(tmp)
        (root / "rules").mkdir()
        (root / "rules" / "bench.yaml").write_text(RULE.replace("PORT", str(receiver.port)))
        config = CONFIG
        if store == "postgres":
            config += (f"cluster: {{dsn: '{dsn}', group: bench, instance: one, "
                       "lease_ttl: 15s, renew_every: 3s}\n")
        (root / "ccbus.yaml").write_text(config)
        bus = Bus(load_config(root / "ccbus.yaml"), PluginHost(autoload=False),
                  persist_state=False)
        batch = [Event(type="bench.tick", source="bench", id=f"{tag}-{i:06d}", data={"n": i})
                 for i in range(events)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(bus.run, watch_rules=False))
            await bus.started.wait()
            while bus.cluster is not None and not bus._leading:  # noqa: ASYNC110 - no event
                await anyio.sleep(0.05)

            async def produce(part: list[Event]) -> None:
                for event in part:
                    await bus.publish(event)

            start = time.time()
            async with anyio.create_task_group() as feeders:
                for p in range(producers):
                    feeders.start_soon(produce, batch[p::producers])
            routed = events / (time.time() - start)
            # the counters have no event to wait on: poll them
            while (bus.counters.get("actions", action="webhook", outcome="ok") < events  # noqa: ASYNC110
                   or await anyio.to_thread.run_sync(bus.delivery_store.pending_count)):
                await anyio.sleep(0.01)
            bus.stop()
    arrivals = (await anyio.to_thread.run_sync(receiver.stats))["arrivals"]
    firsts = [min(arrivals[k]) for k in (idempotency_key(e, "deliver", 0) for e in batch)
              if k in arrivals]
    return routed, len(firsts) / (max(firsts) - start), events - len(firsts)


async def bench(args: argparse.Namespace) -> None:
    receiver = Receiver()
    name = f"ccbus_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        print("| producers | store | routed events/s | durable deliveries/s | lost |")
        print("|---|---|---|---|---|")
        for producers in args.producers:
            figures: dict[str, list[tuple[float, float, int]]] = {"sqlite": [], "postgres": []}
            for run in range(args.runs):
                for store in ("sqlite", "postgres"):  # alternate: same machine load for both
                    figures[store].append(await one_run(
                        receiver, store, f"{args.server}/{name}", args.events, producers,
                        f"{store}-{producers}-{run}"))
            for store, runs in figures.items():
                print(f"| {producers} | {store} | {statistics.median(r[0] for r in runs):,.0f} | "
                      f"{statistics.median(r[1] for r in runs):,.0f} | {sum(r[2] for r in runs)} |")
    finally:
        receiver.close()
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--producers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    anyio.run(bench, args)


if __name__ == "__main__":
    main()
