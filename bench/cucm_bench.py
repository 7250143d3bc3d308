"""CUCM command round trip: a ``cucm.*`` action's command to its correlated answer.

Setup, all on this machine: a private ActiveMQ broker (Debian's package,
started through ``ccbus_peers.activemq.ActiveMQBroker`` in a temporary
directory), the CUCM Connector emulator (``ccbus simulate cucm``'s) consuming
queue ``Connector1``, and a real bus with a ``cucm`` source that completed
the handshake and logged agent 1001 in.

Measured, per command, from the action's call to its return:
``run_command(GetState)``: the ledger row written (SQLite, worker thread),
the command sent as a persistent TextMessage (no receipt: see confirm_sends), the
emulator's correlated AgentState answer received on the client topic,
recorded in the ledger, and the ``cucm.CommandResult`` event routed through
the bus.  Commands are sent one after another (a round trip, not
throughput).

Baseline in the same run: a bare request/reply over the same broker with a
plain :class:`ccbus_stomp.StompConnection` (send ``GetState#1001`` with a
correlation id, wait for the emulator's correlated answer), without ledger
or bus: what the transport and emulator alone cost.

    .venv/bin/python bench/cucm_bench.py [--commands 300] [--runs 5] [--json out.json]

A benchmark, not a test: prints the figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import ccbus_cucm
import yaml
from ccbus_cucm.actions import run_command
from ccbus_cucm.options import CommandParams
from ccbus_cucm.protocol import COMMANDS
from ccbus_cucm.simulator import CucmEmulator
from ccbus_peers.activemq import ActiveMQBroker
from ccbus_stomp import StompConnection, StompOptions, queue, topic

from ccbus import ActionContext, Event
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

GET_STATE = next(spec for spec in COMMANDS if spec.command == "GetState")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples, 50),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples),
        "mean_ms": statistics.fmean(samples),
    }


async def ccbus_round_trips(bus: Bus, count: int, run: int) -> list[float]:
    event = Event(type="bench.tick", source="bench")
    log = logging.getLogger("bench")
    params = CommandParams(agent="1001")
    samples = []
    for n in range(count):
        ctx = ActionContext(rule="bench", event=event, log=log,
                            idempotency_key=f"bench:{run}:{n}:{uuid.uuid4().hex[:6]}")
        started = time.perf_counter()
        result = await run_command(GET_STATE, params, ctx)
        samples.append((time.perf_counter() - started) * 1000)
        assert result.outcome == "ok" and not result.replayed
    return samples


async def bare_round_trips(url: str, count: int) -> list[float]:
    reply_topic = f"bench.bare.{uuid.uuid4().hex[:8]}"
    options = StompOptions(url=url)
    samples = []
    async with StompConnection(options, name="bare") as conn:
        await conn.wait_connected(30)
        await conn.subscribe(topic(reply_topic))
        await anyio.sleep(0.2)
        for _ in range(count):
            correlation = uuid.uuid4().hex
            started = time.perf_counter()
            await conn.send(queue("Connector1"), "", type="GetState#1001",
                            correlation_id=correlation, reply_to=topic(reply_topic), ttl=10)
            while True:
                message = await conn.receive()
                await conn.ack(message)
                if message.correlation_id == correlation:
                    break
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cucm-bench-") as tmp:
        base = Path(tmp)
        broker = ActiveMQBroker(base / "activemq", tls=False)
        print("starting ActiveMQ ...", flush=True)
        await anyio.to_thread.run_sync(broker.start)
        try:
            return await measure(args, base, broker)
        finally:
            await anyio.to_thread.run_sync(broker.stop)


async def measure(args: argparse.Namespace, base: Path, broker: ActiveMQBroker
                  ) -> dict[str, Any]:
    config = {
        "sources": {"cucm": {"plugin": "cucm", "options": {
            "broker": {"url": broker.stomp_url}, "client_topic": "ccbus.cucm.bench"}}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
    }
    (base / "rules").mkdir()
    # one rule that never matches: the bus routes CommandResult events through a real rule set
    (base / "rules" / "none.yaml").write_text(
        "rules:\n  - {name: noop, on: bench.none, do: [{log: x}]}\n"
    )
    (base / "ccbus.yaml").write_text(yaml.safe_dump(config))
    host = PluginHost(autoload=False, extra=[ccbus_cucm])
    bus = Bus(load_config(base / "ccbus.yaml"), host, persist_state=False)
    runs: list[dict[str, Any]] = []
    async with CucmEmulator(broker.stomp_url) as emulator, anyio.create_task_group() as tg:
        await emulator.wait_connected(60)
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        with anyio.fail_after(60):
            while bus.sources["cucm"].state != "connected":  # noqa: ASYNC110
                await anyio.sleep(0.05)
        login = next(spec for spec in COMMANDS if spec.command == "Login")
        await run_command(login, CommandParams(agent="1001"), ActionContext(
            rule="bench", event=Event(type="bench", source="bench"), idempotency_key="login",
            log=logging.getLogger("bench")))
        await ccbus_round_trips(bus, 50, -1)  # warm-up
        await bare_round_trips(broker.stomp_url, 50)
        for run in range(args.runs):
            ours = await ccbus_round_trips(bus, args.commands, run)
            bare = await bare_round_trips(broker.stomp_url, args.commands)
            runs.append({"ccbus": summary(ours), "bare": summary(bare)})
            print(f"run {run + 1}: ccbus p50 {runs[-1]['ccbus']['p50_ms']:.2f} ms "
                  f"p99 {runs[-1]['ccbus']['p99_ms']:.2f} ms | bare p50 "
                  f"{runs[-1]['bare']['p50_ms']:.2f} ms p99 {runs[-1]['bare']['p99_ms']:.2f} ms",
                  flush=True)
        bus.stop()
    return {
        "commands_per_run": args.commands,
        "runs": runs,
        "median_of_runs": {
            side: {k: statistics.median(r[side][k] for r in runs) for k in runs[0][side]}
            for side in ("ccbus", "bare")
        },
        "emulator_getstate": emulator.commands("GetState"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "platform": platform.platform()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = anyio.run(main, arguments)
    med = report["median_of_runs"]
    print(f"\nCUCM command round trip, {arguments.runs} runs x {arguments.commands} commands "
          f"(median of runs):")
    for side, label in (("ccbus", "cucm action (ledger, bus)"),
                        ("bare", "bare stomp request/reply")):
        print(f"  {label:38s} p50 {med[side]['p50_ms']:6.2f} ms  p90 "
              f"{med[side]['p90_ms']:6.2f} ms  p99 {med[side]['p99_ms']:6.2f} ms")
    if arguments.json:
        arguments.json.write_text(json.dumps(report, indent=2))
