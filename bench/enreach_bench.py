"""Enreach benchmark: RTE events/s from the simulator's SignalR hub through the bus and a rule.

The simulator (``ccbus simulate enreach``) runs in its own process, so it has
its own core, and sends N ``UserStatus`` MessageReceived invocations flat out
(its blast mode: the frames are built before the clock starts; one in four
has ``talking`` true).  Two receivers take turns against it, each on a fresh
connection with a fresh token, in the same invocation:

* **baseline**: a bare signalrcore client: REST token, HubConnectionBuilder
  with the access-token factory (WebSockets), ``Subscribe``, then a
  ``MessageReceived`` handler that counts, on signalrcore's receive thread;
* **ccbus**: a real ``Bus`` (config file and rules directory in a temporary
  directory, outbox off) with the ``enreach`` source; every message crosses
  from signalrcore's thread into the event loop, is checked (duplicate,
  TTL), mapped to ``enreach.UserStatus`` plus the canonical
  ``agent.state_changed``, routed, and the rule below runs an in-process
  counting action::

      - name: count
        on: enreach.UserStatus
        if: CONDITION
        do: [bench.count: {agent: "{userId}"}]

Rate per run = N / (last message handled - first sent), both read on the
same host's wall clock (the simulator reports when it started sending).  The
table gives medians over the runs and the ratio ccbus / baseline.  A paced
phase then sends ``--paced-rate`` events/s, each with its own ``sentAt``, and
reports send-to-handled latency p50/p99 for both receivers (at saturation
latency only measures the queue, so it is measured below capacity).  A third
line, **bus alone**, routes the same events (mapped before the clock starts)
through the same bus, rule and action with no hub and no thread: the bus's
own ceiling, which explains the ratio.

    .venv/bin/python bench/enreach_bench.py [--events 20000] [--runs 5]
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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from ccbus_enreach.scenarios import ANNA
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.types import HttpTransportType

from ccbus import ActionSpec, Options, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

TARGET_EVENTS_PER_SECOND = 5_000
TARGET_RATIO = 0.7
CCBUS = Path(sys.executable).parent / "ccbus"

RULES = """
rules:
  - name: count
    on: enreach.UserStatus
    if: 'CONDITION'
    do:
      - bench.count: {agent: "{userId}"}
"""
#: The headline workload: the rule is evaluated for every event and fires for a quarter
#: of them (agents on a call).  EVERY fires the action for every event: the worst case.
FILTER = "talking"
EVERY = 'userId != ""'
SUBSCRIPTIONS = {"users": {ANNA: ["UserStatus"]}}


# ---------------------------------------------------------------------------
# The simulator, in its own process


class Simulator:
    """``ccbus simulate enreach`` as a subprocess, driven through its control API."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(CCBUS), "simulate", "enreach", "--scenario", "none"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("Enreach RTE simulator listening on "):
            self.process.kill()
            raise SystemExit(f"the simulator did not start: {first!r}")
        self.url = first.split()[-1]
        self.options = {"api_url": self.url, "username": "ccbus-demo", "secret": "simulator-secret"}

    def clients(self) -> int:
        return len(httpx.get(f"{self.url}/_sim/status", trust_env=False).json()["clients"])

    def subscriptions(self) -> int:
        status = httpx.get(f"{self.url}/_sim/status", trust_env=False).json()
        return sum(len(c["subscriptions"]) for c in status["clients"])

    def blast(self, count: int, rate: float | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"count": count}
        if rate:
            params["rate"] = rate
        response = httpx.post(f"{self.url}/_sim/blast", json=params, timeout=300, trust_env=False)
        return dict(response.json())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class Run:
    rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Receivers


def baseline_run(sim: Simulator, count: int, rate: float | None) -> Run:
    """A bare signalrcore client: token, start, Subscribe, count MessageReceived."""
    token = httpx.get(
        f"{sim.url}/token/me/rte/", auth=("ccbus-demo", "simulator-secret"), trust_env=False
    ).json()
    done, opened, subscribed = threading.Event(), threading.Event(), threading.Event()
    received = 0
    last = 0.0
    latencies: list[float] = []

    def on_message(arguments: list[Any]) -> None:
        nonlocal received, last
        received += 1
        if rate:
            latencies.append((time.time() - arguments[0]["data"]["sentAt"]) * 1000)
        if received == count:
            last = time.time()
            done.set()

    hub = (
        HubConnectionBuilder()
        .with_url(
            token["WssEndpoint"],
            options={
                "access_token_factory": lambda: token["Token"],
                "transport": HttpTransportType.web_sockets,
            },
        )
        .build()
    )
    hub.on("MessageReceived", on_message)
    hub.on_open(opened.set)
    hub.start()
    assert opened.wait(10), "no handshake"
    hub.invoke(
        "Subscribe",
        [[{"EntityId": ANNA, "EventName": "UserStatus"}]],
        on_invocation=lambda message: subscribed.set(),
    )
    assert subscribed.wait(10), "no Subscribe completion"
    result = sim.blast(count, rate)
    assert done.wait(120), f"baseline received {received} of {count}"
    hub.stop()
    seconds = last - result["started_at"]
    return Run(count / seconds, seconds, latencies)


class Counter:
    """The rule's action and the bus's observer: when was the last event handled."""

    def __init__(self, events: int, fires: int, latencies: bool) -> None:
        self.events = events
        self.fires = fires
        self.routed = 0
        self.ran = 0
        self.last = 0.0
        self.latencies: list[float] | None = [] if latencies else None
        self.done = anyio.Event()

    def observe(self, event: Any, firings: list[Any], calls: list[Any]) -> None:
        """Called by the pipeline for every event routed."""
        if event.type == "enreach.UserStatus":
            self.routed += 1
            self._check()

    def _check(self) -> None:
        if self.routed >= self.events and self.ran >= self.fires:
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
                counter.latencies.append((time.time() - ctx.event.data["sentAt"]) * 1000)
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
    """A real bus with the enreach source and one rule; the clock stops when the last
    event was routed and the last action ran."""
    import ccbus_enreach

    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    (workdir / "rules" / "count.yaml").write_text(RULES.replace("CONDITION", condition))
    config = {
        "sources": {
            "enreach": {
                "plugin": "enreach",
                "options": {**sim.options, "subscriptions": SUBSCRIPTIONS},
            }
        },
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": False},
        "log_level": "warning",
    }
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    fires = (count + 3) // 4 if condition == FILTER else count  # talking: i % 4 == 0
    counter = Counter(count, fires, latencies=bool(rate))
    host = PluginHost(autoload=False, extra=[ccbus_enreach, counter])
    bus = Bus(
        load_config(workdir / "ccbus.yaml"), host, persist_state=False, observer=counter.observe
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        with anyio.fail_after(20):
            runtime = await poll(lambda: bus.sources.get("enreach"))
            await poll(lambda: runtime.state == "connected")
            while await anyio.to_thread.run_sync(sim.subscriptions) != 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        result = await anyio.to_thread.run_sync(sim.blast, count, rate)
        with anyio.fail_after(120):
            await counter.done.wait()
        source: Any = bus.sources["enreach"].source
        assert dict(source.intake.dropped) == {}, source.intake.dropped
        assert counter.ran == fires, (counter.ran, fires)
        bus.stop()
    seconds = counter.last - result["started_at"]
    return Run(count / seconds, seconds, counter.latencies or [])


async def bus_only_run(count: int, workdir: Path, condition: str) -> Run:
    """The same bus, rule and action with the events already built: no hub, no thread.

    Not a target, an explanation: it is the most the bus itself routes per
    second with this rule, so it bounds what any source can deliver, and the
    gap between it and the ccbus run is what the plugin and signalrcore cost.
    """
    import ccbus_enreach
    from ccbus_enreach.intake import Intake
    from ccbus_enreach.simulator import RteSimulator

    from ccbus import Event, SourceContext

    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    (workdir / "rules" / "count.yaml").write_text(RULES.replace("CONDITION", condition))
    config = {
        "sources": {},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": False},
        "log_level": "warning",
    }
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    fires = (count + 3) // 4 if condition == FILTER else count
    counter = Counter(count, fires, latencies=False)
    host = PluginHost(autoload=False, extra=[ccbus_enreach, counter])
    bus = Bus(
        load_config(workdir / "ccbus.yaml"), host, persist_state=False, observer=counter.observe
    )
    base = RteSimulator().event_data("UserStatus", ANNA)

    async def unused(event: Event) -> None:  # pragma: no cover - events() only maps
        raise AssertionError

    intake = Intake(
        SourceContext(
            name="enreach", options=None, emit=unused,
            log=logging.getLogger("bench"), state_dir=workdir,
        )
    )
    batches = []
    for i in range(count):
        data = {**base, "id": f"bus-only-{i}", "talking": i % 4 == 0}
        batches.append(intake.events([{"subscription": {}, "data": data}]))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        started = time.time()
        publish = bus.publish
        for events in batches:
            for event in events:
                await publish(event)
        with anyio.fail_after(120):
            await counter.done.wait()
        bus.stop()
    seconds = counter.last - started
    return Run(count / seconds, seconds)


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


async def baseline(sim: Simulator, count: int, rate: float | None) -> Run:
    return await anyio.to_thread.run_sync(baseline_run, sim, count, rate)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sim = Simulator()
    runs: dict[str, list[Run]] = {"baseline": [], "filter": [], "every": [], "bus": []}
    try:
        with tempfile.TemporaryDirectory(prefix="ccbus-enreach-bench-") as tmp:
            work = Path(tmp)
            # warm-up: imports, first connections, caches
            await baseline(sim, 2000, None)
            await ccbus_run(sim, 2000, None, work / "warmup", FILTER)
            for n in range(args.runs):
                runs["baseline"].append(await baseline(sim, args.events, None))
                for name, condition in (("filter", FILTER), ("every", EVERY)):
                    runs[name].append(
                        await ccbus_run(sim, args.events, None, work / f"{name}{n}", condition)
                    )
                runs["bus"].append(await bus_only_run(args.events, work / f"bus{n}", FILTER))
                print(
                    f"run {n + 1}: baseline {runs['baseline'][-1].rate:>8,.0f}/s   "
                    f"ccbus {runs['filter'][-1].rate:>8,.0f}/s   "
                    f"ccbus, action every time {runs['every'][-1].rate:>8,.0f}/s   "
                    f"bus alone {runs['bus'][-1].rate:>8,.0f}/s",
                    flush=True,
                )
            paced_count = int(args.paced_rate * args.paced_seconds)
            paced = {
                "baseline": await baseline(sim, paced_count, args.paced_rate),
                "filter": await ccbus_run(sim, paced_count, args.paced_rate, work / "p1", FILTER),
                "every": await ccbus_run(sim, paced_count, args.paced_rate, work / "p2", EVERY),
            }
    finally:
        sim.stop()
    return {"runs": runs, "paced": paced}


LABELS = {
    "baseline": "bare signalrcore client (baseline)",
    "filter": "ccbus: rule fires on 1 in 4",
    "every": "ccbus: rule fires on every one",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
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
    print(f"workload: {args.events:,} UserStatus events per run, {args.runs} runs each\n")
    header = f"{'':<36}{'events/s':>12}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    for name, label in LABELS.items():
        latencies = paced[name].latencies_ms
        ratio = f"{ratios[name]:.2f}" if name in ratios else "1"
        print(
            f"{label:<36}{medians[name]:>12,.0f}{ratio:>7}"
            f"{percentile(latencies, 0.5):>9.2f}{percentile(latencies, 0.99):>9.2f}"
        )
    print(f"{'bus alone, events prebuilt (1 in 4)':<36}{medians['bus']:>12,.0f}"
          f"{medians['bus'] / medians['baseline']:>7.2f}{'':>18}")
    print("-" * len(header))
    print(
        "bus alone: the same rule and action, events mapped before the clock starts, no hub "
        f"and no thread: the bus's own ceiling ({medians['filter'] / medians['bus']:.2f} of it "
        "reached by the ccbus run)"
    )
    print(
        f"medians of {args.runs} runs; latency: sentAt -> handled (the action ran, or the "
        f"message was received), paced at {args.paced_rate:,.0f}/s for "
        f"{args.paced_seconds:g} s, same host clock"
    )
    print(
        "each RTE event is two bus events (enreach.UserStatus + agent.state_changed): "
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
            "benchmark": "enreach",
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
            }
            | {"bus_alone": {"rates": [round(r.rate) for r in runs["bus"]],
                             "median": round(medians["bus"])}},
            "verdicts": verdicts,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
