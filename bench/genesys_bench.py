"""Genesys benchmark: records/s from Kafka through the bus and a rule, against a bare consumer.

The broker is the plugin's Kafka wire-protocol test peer
(``python -m ccbus_peers.kafka``; no Kafka broker package can be
installed here) in its own process, so it has its own core.  Before the
clock starts, N agent-state records (``EventAgentReady`` /
``EventAgentNotReady`` of 50 agents, JSON, ``{tenant}:{agent}`` keys) are
produced once into the 3 partitions of ``voice-agentstate``.  Then two
consumers take turns reading all of them, each run with a fresh consumer
group from the earliest offset, in the same invocation:

* **baseline**: a bare ``AIOKafkaConsumer`` (manual commits, like ours):
  ``getmany``, ``json.loads`` per record, ``commit()`` after every poll;
* **ccbus**: a real ``Bus`` (config file and rules in a temporary directory,
  outbox off) with the ``genesys`` source: key parsed, JSON decoded, the
  native event plus the canonical ``agent.state_changed`` emitted, routed,
  offsets committed after every poll; this rule runs an in-process
  counting action for every native event::

      - name: count
        on: genesys.EventAgent*
        if: seq >= 0
        do: [bench.count: {agent: "{AgentID}"}]

A third figure, **bus alone**, publishes the same records' events (mapped
before the clock starts) straight into ``Bus.publish`` with the same rule
and no Kafka at all: the ceiling the core's event path sets, so the table
shows how much of the gap to the bare consumer is the plugin and how much
the bus.

Rate per run = N / (time from starting the consumer to the last record
handled), group join included for both.  For ccbus the clock starts when the
bus has started its sources (``Bus.started``), as the baseline's starts at
``consumer.start()``: opening the bus's stores and loading rules come before
any consumer exists and are not consuming time.  The table gives medians over the
runs and the ratio ccbus / baseline.

    .venv/bin/python bench/genesys_bench.py [--records 50000] [--runs 5] [--json out.json]

A benchmark, not a test: prints PASS or BELOW TARGET and exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import ccbus_genesys
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from ccbus_genesys.scenarios import agent_flaps
from counting import Counting, publish_all

from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

TARGET = 10_000.0  # records/s through the bus and a rule
TARGET_RATIO = 0.7
TOPIC = "voice-agentstate"

RULES = """
rules:
  - name: count
    on: genesys.EventAgent*
    if: seq >= 0
    do: [bench.count: {agent: "{AgentID}"}]
"""


def start_broker() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ccbus_peers.kafka", "--partitions", "3"],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        raise SystemExit(f"the test broker did not start: {line!r}")
    return process, line.split()[-1]


async def populate(bootstrap: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(TOPIC, json.dumps(step.payload).encode(), key=step.key.encode())
            for step in agent_flaps(count)
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def baseline_run(bootstrap: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=f"base-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=500,
        fetch_max_wait_ms=100, heartbeat_interval_ms=500,
    )
    started = time.perf_counter()
    await consumer.start()
    seen = 0
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    json.loads(record.value)
                    seen += 1
            if batch:
                await consumer.commit()
        ended = time.perf_counter()
    finally:
        await consumer.stop()
    return count / (ended - started)


async def ccbus_run(bootstrap: str, count: int, workdir: Path) -> float:
    rules = workdir / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "count.yaml").write_text(RULES)
    config = {
        "sources": {"gen": {"plugin": "genesys", "options": {
            "bootstrap_servers": [bootstrap], "group_id": f"ccbus-{uuid.uuid4().hex[:8]}",
            "auto_offset_reset": "earliest", "agent_state_topic": TOPIC,
            "call_thread_topic": None, "max_poll_records": 500, "fetch_max_wait": 0.1,
            "heartbeat_interval": 0.5,
        }}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": False},
    }
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    counting = Counting()
    host = PluginHost(autoload=False, extra=[ccbus_genesys, counting])
    bus = Bus(load_config(workdir / "ccbus.yaml"), host, persist_state=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()  # its sources have begun: the consumer is starting
        started = time.perf_counter()
        with anyio.fail_after(600):
            while counting.calls < count:  # noqa: ASYNC110 - polling the action's counter
                await anyio.sleep(0.005)
        ended = counting.last
        source = bus.sources["gen"].source
        assert source.records >= count and source.emitted >= 2 * count, vars(source)
        bus.stop()
    return count / (ended - started)


async def bus_alone_run(count: int, workdir: Path) -> float:
    from datetime import UTC, datetime

    from ccbus_genesys.mapping import Mapper, NativeRecord, parse_key

    mapper = Mapper("gen")
    events = []
    for offset, step in enumerate(agent_flaps(count)):
        doc = json.loads(json.dumps(step.payload))
        where = NativeRecord(TOPIC, "agentstate", 0, offset, None, parse_key(step.key.encode()))
        events += mapper.map(doc["id"], doc, where, datetime.now(UTC)).events
    rules = workdir / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "count.yaml").write_text(RULES)
    config = {"sources": {}, "rules": ["rules"], "state_dir": "state",
              "http": {"enabled": False}, "delivery": {"outbox": False}}
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    counting = Counting()
    host = PluginHost(autoload=False, extra=[ccbus_genesys, counting])
    bus = Bus(load_config(workdir / "ccbus.yaml"), host, persist_state=False)
    return await publish_all(bus, events, counting, count)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    broker, bootstrap = start_broker()
    try:
        t0 = time.perf_counter()
        await populate(bootstrap, args.records)
        print(f"produced {args.records} records to {bootstrap} in "
              f"{time.perf_counter() - t0:.1f}s")
        base: list[float] = []
        ours: list[float] = []
        alone: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                base.append(await baseline_run(bootstrap, args.records))
                ours.append(await ccbus_run(bootstrap, args.records, Path(tmp) / f"run{run}"))
                alone.append(await bus_alone_run(args.records, Path(tmp) / f"alone{run}"))
                print(f"run {run + 1}: baseline {base[-1]:,.0f}/s  ccbus {ours[-1]:,.0f}/s  "
                      f"bus alone {alone[-1]:,.0f}/s")
    finally:
        broker.terminate()
        broker.wait(10)
    median_base = statistics.median(base)
    median_ours = statistics.median(ours)
    return {
        "records": args.records,
        "runs": args.runs,
        "baseline_per_s": base,
        "ccbus_per_s": ours,
        "baseline_median": median_base,
        "ccbus_median": median_ours,
        "bus_alone_per_s": alone,
        "bus_alone_median": statistics.median(alone),
        "ratio": median_ours / median_base,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    result = anyio.run(main_async, args)
    ok = result["ccbus_median"] >= TARGET  # the minimum; the ratio is an aim
    print()
    print(f"{'':24}{'median records/s':>18}")
    print(f"{'baseline (aiokafka)':24}{result['baseline_median']:>18,.0f}")
    print(f"{'ccbus (bus + rule)':24}{result['ccbus_median']:>18,.0f}")
    print(f"{'bus alone (no Kafka)':24}{result['bus_alone_median']:>18,.0f}")
    print("(records/s; each record is 2 bus events: the native one and agent.state_changed)")
    aim = "met" if result["ratio"] >= TARGET_RATIO else "not met"
    print(f"target {TARGET:,.0f} records/s: {'PASS' if ok else 'BELOW TARGET'}; "
          f"ratio ccbus/baseline {result['ratio']:.2f} (aim >= {TARGET_RATIO}: {aim})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
