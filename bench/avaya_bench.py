"""Avaya benchmark: notifications/s from the simulator's WebSocket through the bus and a rule.

The simulator (``ccbus simulate avaya``) runs in its own process, so it has
its own core, and sends N AgentState notifications flat out (its blast mode:
the texts are built before the clock starts).  Two receivers take turns
against it, each on a fresh connection, in the same invocation:

* **baseline**: a bare ``websockets`` client: token and subscription over
  REST, ``authentication``, then ``recv()`` and ``json.loads`` per message,
  nothing else;
* **ccbus**: a real ``Bus`` (config file and rules directory in a temporary
  directory, outbox off) with the ``avaya`` source; every notification is
  validated against the schema, mapped to ``avaya.AgentState`` plus the
  canonical ``agent.state_changed``, routed, and the rule below runs an
  in-process counting action for each native event::

      - name: count
        on: avaya.AgentState
        if: CONDITION
        do: [bench.count: {agent: "{agentId}"}]

Rate per run = N / (last notification handled - first sent), both read on the
same host's wall clock (the simulator reports when it started sending).  The
table gives medians over the runs and the ratio ccbus / baseline.  A paced
phase then sends ``--paced-rate`` notifications/s, each with its own
``sentAt`` (microseconds), and reports send-to-handled latency p50/p99 for
both receivers: at saturation latency only measures the queue, so it is
measured below capacity.

    .venv/bin/python bench/avaya_bench.py [--events 20000] [--runs 5]
        [--paced-rate 2000] [--paced-seconds 2] [--json out.json]

A benchmark, not a test: prints PASS or BELOW TARGET and exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from websockets.asyncio.client import connect

from ccbus import ActionSpec, Options, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

TARGET_EVENTS_PER_SECOND = 10_000
TARGET_RATIO = 0.7
CCBUS = Path(sys.executable).parent / "ccbus"

RULES = """
rules:
  - name: count
    on: avaya.AgentState
    if: 'CONDITION'
    do:
      - bench.count: {agent: "{agentId}"}
"""
#: The headline workload: the rule is evaluated for every notification and fires for a
#: quarter of them (the blast cycles READY, NOT_READY, READY, LOGGED_IN), like the
#: shipped agent rules.  EVERY fires the action for every notification: the worst case.
FILTER = 'state == "NOT_READY"'
EVERY = 'state != ""'


# ---------------------------------------------------------------------------
# The simulator, in its own process


class Simulator:
    """``ccbus simulate avaya`` as a subprocess, driven through its control API."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(CCBUS), "simulate", "avaya", "--scenario", "none"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("Avaya simulator listening on "):
            self.process.kill()
            raise SystemExit(f"the simulator did not start: {first!r}")
        self.url = first.split()[-1]
        self.options = {
            "base_url": self.url,
            "account_id": "KXBQTZ",
            "client_id": "ccbus-demo",
            "client_secret": "simulator-secret",
        }

    async def sessions(self, http: httpx.AsyncClient) -> int:
        return int((await http.get(f"{self.url}/_sim/status")).json()["sessions"])

    async def blast(
        self, http: httpx.AsyncClient, count: int, rate: float | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"count": count}
        if rate:
            params["rate"] = rate
        response = await http.post(f"{self.url}/_sim/blast", json=params, timeout=300)
        return dict(response.json())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---------------------------------------------------------------------------
# Receivers


@dataclass
class Run:
    rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)


def sent_at(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(doc["sentAt"].replace("Z", "+00:00")).timestamp()


async def baseline_run(sim: Simulator, count: int, rate: float | None) -> Run:
    """A bare websockets client: REST subscription, authenticate, recv + json.loads."""
    async with httpx.AsyncClient(trust_env=False) as http:
        token = (
            await http.post(
                f"{sim.url}/auth/realms/KXBQTZ/protocol/openid-connect/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": sim.options["client_id"],
                    "client_secret": sim.options["client_secret"],
                },
            )
        ).json()["access_token"]
        subscription = (
            await http.post(
                f"{sim.url}/api/notification/v1/accounts/KXBQTZ/subscriptions",
                json={
                    "family": "AGENT_ENGAGEMENT",
                    "events": ["ALL"],
                    "transport": {"type": "WEBSOCKET"},
                },
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()
        async with connect(
            subscription["transport"]["endpoint"], proxy=None, ping_interval=None
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "event": "authentication",
                        "subscriptionId": subscription["subscriptionId"],
                        "token": token,
                    }
                )
            )
            assert json.loads(await ws.recv())["status"] == "CONNECTION_CONFIRMED"
            result: dict[str, Any] = {}
            latencies: list[float] = []

            async def blast() -> None:
                result.update(await sim.blast(http, count, rate))

            last = 0.0
            async with anyio.create_task_group() as tg:
                tg.start_soon(blast)
                for _ in range(count):
                    doc = json.loads(await ws.recv())
                    last = time.time()
                    if rate:
                        latencies.append((last - sent_at(doc)) * 1000)
    seconds = last - result["started_at"]
    return Run(count / seconds, seconds, latencies)


class Counter:
    """The rule's action and the bus's observer: when was the last notification handled."""

    def __init__(self, notifications: int, fires: int, latencies: bool) -> None:
        self.notifications = notifications
        self.fires = fires
        self.routed = 0
        self.ran = 0
        self.last = 0.0
        self.latencies: list[float] | None = [] if latencies else None
        self.done = anyio.Event()

    def observe(self, event: Any, firings: list[Any], calls: list[Any]) -> None:
        """Called by the pipeline for every event routed."""
        if event.type == "avaya.AgentState":
            self.routed += 1
            self._check()

    def _check(self) -> None:
        if self.routed >= self.notifications and self.ran >= self.fires:
            self.last = time.time()
            self.done.set()

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        counter = self

        class Params(Options):
            agent: str

        async def run(params: Params, ctx: Any) -> None:
            counter.ran += 1
            if counter.latencies is not None:
                counter.latencies.append((time.time() - sent_at(ctx.event.data)) * 1000)
            counter._check()

        return [ActionSpec(name="bench.count", params=Params, run=run, side_effects=False)]


async def poll(value: Any) -> Any:
    """Wait until ``value()`` is truthy and return it."""
    while not (found := value()):  # noqa: ASYNC110 - no event to wait on
        await anyio.sleep(0.01)
    return found


async def ccbus_run(
    sim: Simulator, count: int, rate: float | None, workdir: Path, condition: str
) -> Run:
    """A real bus with the avaya source and one rule; the clock stops when the last
    notification was routed and the last action ran."""
    import ccbus_avaya

    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    (workdir / "rules" / "count.yaml").write_text(RULES.replace("CONDITION", condition))
    config = {
        "sources": {"avaya": {"plugin": "avaya", "options": sim.options}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": False},
        "log_level": "warning",
    }
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    fires = count // 4 if condition == FILTER else count  # blast states: 1 in 4 NOT_READY
    counter = Counter(count, fires, latencies=bool(rate))
    host = PluginHost(autoload=False, extra=[ccbus_avaya, counter])
    bus = Bus(
        load_config(workdir / "ccbus.yaml"), host, persist_state=False, observer=counter.observe
    )
    async with anyio.create_task_group() as tg, httpx.AsyncClient(trust_env=False) as http:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        with anyio.fail_after(10):
            # polled: the state lives in the bus and in the simulator's process
            runtime = await poll(lambda: bus.sources.get("avaya"))
            await poll(lambda: runtime.state == "connected")
            while await sim.sessions(http) != 1:  # noqa: ASYNC110 - another process
                await anyio.sleep(0.01)
        result = await sim.blast(http, count, rate)
        with anyio.fail_after(120):
            await counter.done.wait()
        source: Any = bus.sources["avaya"].source
        assert source.intake.rejected == {}, source.intake.rejected
        assert counter.ran == fires, (counter.ran, fires)
        bus.stop()
    seconds = counter.last - result["started_at"]
    return Run(count / seconds, seconds, counter.latencies or [])


# ---------------------------------------------------------------------------
# Report


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sim = Simulator()
    runs: dict[str, list[Run]] = {"baseline": [], "filter": [], "every": []}
    try:
        with tempfile.TemporaryDirectory(prefix="ccbus-avaya-bench-") as tmp:
            work = Path(tmp)
            # warm-up: imports, first connections, caches
            await baseline_run(sim, 2000, None)
            await ccbus_run(sim, 2000, None, work / "warmup", FILTER)
            for n in range(args.runs):
                runs["baseline"].append(await baseline_run(sim, args.events, None))
                for name, condition in (("filter", FILTER), ("every", EVERY)):
                    runs[name].append(
                        await ccbus_run(sim, args.events, None, work / f"{name}{n}", condition)
                    )
                print(
                    f"run {n + 1}: baseline {runs['baseline'][-1].rate:>8,.0f}/s   "
                    f"ccbus {runs['filter'][-1].rate:>8,.0f}/s   "
                    f"ccbus, action every time {runs['every'][-1].rate:>8,.0f}/s",
                    flush=True,
                )
            paced_count = int(args.paced_rate * args.paced_seconds)
            paced = {
                "baseline": await baseline_run(sim, paced_count, args.paced_rate),
                "filter": await ccbus_run(sim, paced_count, args.paced_rate, work / "p1", FILTER),
                "every": await ccbus_run(sim, paced_count, args.paced_rate, work / "p2", EVERY),
            }
    finally:
        sim.stop()
    return {"runs": runs, "paced": paced}


LABELS = {
    "baseline": "bare websockets client (baseline)",
    "filter": "ccbus: rule fires on 1 in 4",
    "every": "ccbus: rule fires on every one",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="notifications per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--paced-rate", type=float, default=2_000.0)
    parser.add_argument("--paced-seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    debug = bool(os.environ.get("BENCH_DEBUG"))
    logging.basicConfig(level=logging.INFO if debug else logging.ERROR)
    load_before = os.getloadavg()[0]
    results = anyio.run(main_async, args)
    runs, paced = results["runs"], results["paced"]
    medians = {name: statistics.median(r.rate for r in rs) for name, rs in runs.items()}
    ratios = {name: medians[name] / medians["baseline"] for name in ("filter", "every")}
    info = machine()
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; load "
        f"average {load_before:.2f} before, {info['load_average_1m']:.2f} after"
    )
    print(f"workload: {args.events:,} AgentState notifications per run, {args.runs} runs each\n")
    header = f"{'':<36}{'notifications/s':>16}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    for name, label in LABELS.items():
        latencies = paced[name].latencies_ms
        ratio = f"{ratios[name]:.2f}" if name in ratios else "1"
        print(
            f"{label:<36}{medians[name]:>16,.0f}{ratio:>7}"
            f"{percentile(latencies, 0.5):>9.2f}{percentile(latencies, 0.99):>9.2f}"
        )
    print("-" * len(header))
    print(
        f"medians of {args.runs} runs; latency: sentAt -> handled (the action ran, or the "
        f"notification was received), paced at {args.paced_rate:,.0f}/s for "
        f"{args.paced_seconds:g} s, same host clock"
    )
    print(
        "each notification is two bus events (avaya.AgentState + agent.state_changed): "
        f"{2 * medians['filter']:,.0f} bus events/s at the headline rate"
    )
    verdicts = {}
    for name in ("filter", "every"):
        rate_ok = medians[name] >= TARGET_EVENTS_PER_SECOND
        verdicts[name] = "PASS" if rate_ok and ratios[name] >= TARGET_RATIO else "BELOW TARGET"
        print(
            f"{LABELS[name]}: >= {TARGET_EVENTS_PER_SECOND:,}/s "
            f"{'yes' if rate_ok else 'no'}, ratio >= {TARGET_RATIO} "
            f"{'yes' if ratios[name] >= TARGET_RATIO else 'no'}: {verdicts[name]}"
        )
    if args.json:
        doc = {
            "benchmark": "avaya",
            "machine": info,
            "events_per_run": args.events,
            "results": {
                name: {
                    "rates": [round(r.rate) for r in runs[name]],
                    "median": round(medians[name]),
                    "ratio": round(ratios.get(name, 1.0), 3),
                    "p50_ms": round(percentile(paced[name].latencies_ms, 0.5), 3),
                    "p99_ms": round(percentile(paced[name].latencies_ms, 0.99), 3),
                }
                for name in LABELS
            },
            "verdicts": verdicts,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
