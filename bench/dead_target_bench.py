"""A dead webhook target must not slow what is routed to live ones (issue #18).

A real ``Bus`` (outbox on, SQLite, HTTP listener on a free loopback port) with
two rules on the same events::

    - name: live     do: [webhook: {url: "http://127.0.0.1:LIVE/in", ...}]
    - name: dead     do: [webhook: {url: "http://127.0.0.1:DEAD/in", ...}]   ("live + dead")

and a third mode, "live + live", where the second rule's target is the live
receiver too: the same two calls per event, both answered, so the cost of a
second call per event is told apart from the cost of its target being dead.

The live target is ``delivery_bench.py``'s receiver process (answers 200 at
once); the dead one is a loopback port nothing listens on (connection refused
at once, so every call is retried with backoff and piles up in the outbox).
Per run, N events are published at full speed, one ``await bus.publish`` each:

* intake: events/s over the publishing;
* live deliveries/s: until the live receiver has every one of its N calls;
* ``GET /metrics``: wall time of each scrape, taken every 0.2 s from a
  thread while the run goes on (a client of the real listener, so the time
  includes the event loop's turn as well as the outbox counts);
* the outbox depth at the end (the dead target's calls wait there).

Runs rotate "live only" / "live + live" / "live + dead", each with a fresh
bus and state directory; the table gives medians.

    .venv/bin/python bench/dead_target_bench.py [--events 5000] [--runs 3]

A benchmark, not a test: prints the table and PASS or BELOW TARGET, exits 0.
"""

from __future__ import annotations

import argparse
import functools
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from delivery_bench import Receiver  # noqa: E402
from route_bench import machine  # noqa: E402

from ccbus.config.file import load_config  # noqa: E402
from ccbus.events.envelope import Event  # noqa: E402
from ccbus.plugins import PluginHost  # noqa: E402
from ccbus.runtime.bus import Bus  # noqa: E402

#: intake with a dead second target at least this share of intake with a live one
TARGET_RATIO = 0.5
#: /metrics scrapes (p99) within this many seconds
TARGET_METRICS_SECONDS = 0.25

CONFIG = """\
http: {listen: "127.0.0.1:0"}
state_dir: state
rules: [rules]
log_level: error
delivery:
  outbox: true
"""

RULES = """\
rules:
  - name: live
    on: bench.*
    do:
      - webhook: {url: "http://127.0.0.1:LIVE/in", json: {n: "{n}"}}
"""

DEAD_RULE = """\
  - name: dead
    on: bench.*
    do:
      - webhook: {url: "http://127.0.0.1:DEAD/in", json: {n: "{n}"}}
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_bus(root: Path, live: int, second: int | None) -> Bus:
    (root / "rules").mkdir(parents=True)
    rules = RULES.replace("LIVE", str(live))
    if second is not None:
        rules += DEAD_RULE.replace("DEAD", str(second))
    (root / "rules" / "bench.yaml").write_text(rules)
    (root / "ccbus.yaml").write_text(CONFIG)
    return Bus(load_config(root / "ccbus.yaml"), PluginHost(autoload=False),
               persist_state=False)


MODES = ("live only", "live + live", "live + dead")


class Scraper(threading.Thread):
    """GET /metrics every ``every`` seconds until stopped, timing each answer."""

    def __init__(self, port: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.times: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(trust_env=False, timeout=60) as client:
            while not self.halt.is_set():
                started = time.perf_counter()
                client.get(self.url).raise_for_status()
                self.times.append(time.perf_counter() - started)
                self.halt.wait(self.every)


async def one_run(receiver: Receiver, events: int, mode: str) -> dict[str, Any]:
    receiver.reset()
    second = {"live only": None, "live + live": receiver.port,
              "live + dead": closed_port()}[mode]
    live_calls = events * (2 if mode == "live + live" else 1)
    with tempfile.TemporaryDirectory(prefix="ccbus-dead-target-") as tmp:
        bus = make_bus(Path(tmp), receiver.port, second)
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(bus.run, watch_rules=False))
            await bus.started.wait()
            scraper = Scraper(bus.http_port)
            scraper.start()
            start = time.perf_counter()
            for i in range(events):
                await bus.publish(Event(type="bench.e", source="bench", id=f"e{i}",
                                        data={"n": i}))
            intake = events / (time.perf_counter() - start)
            while bus.counters.get("actions", action="webhook", outcome="ok") < live_calls:  # noqa: ASYNC110 - polling the bus's counters
                await anyio.sleep(0.01)
            delivered = events / (time.perf_counter() - start)
            await anyio.sleep(1.0)  # scrapes with the dead target's backlog in place
            scraper.halt.set()
            await anyio.to_thread.run_sync(scraper.join)
            depth, _ = await bus.outbox_counts()
            bus.stop()
        times = sorted(scraper.times)
        return {"intake": intake, "delivered": delivered, "depth": depth,
                "scrapes": len(times), "metrics_p50": statistics.median(times),
                "metrics_p99": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
                "metrics_max": times[-1]}


async def main_async(args: argparse.Namespace) -> None:
    receiver = Receiver()
    try:
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                result = await one_run(receiver, args.events, mode)
                results[mode].append(result)
                print(f"{mode:12}", {k: round(v, 4) if isinstance(v, float) else v
                                     for k, v in result.items()}, flush=True)
    finally:
        receiver.close()

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    ratio = med("live + dead", "intake") / med("live + live", "intake")
    worst = max(med(mode, "metrics_p99") for mode in MODES)
    print()
    print(f"machine: {machine()}")
    print(f"{args.events:,} events per run, {args.runs} run(s) each, medians")
    print()
    print("| | " + " | ".join(MODES) + " |")
    print("|---|" + "---:|" * len(MODES))
    print("| intake, events/s | " + " | ".join(f"{med(m, 'intake'):,.0f}" for m in MODES) + " |")
    print("| live deliveries done, events/s | "
          + " | ".join(f"{med(m, 'delivered'):,.0f}" for m in MODES) + " |")
    for key, label in (("metrics_p50", "p50"), ("metrics_p99", "p99"),
                       ("metrics_max", "max")):
        print(f"| `GET /metrics` {label} | "
              + " | ".join(f"{med(m, key) * 1000:.1f} ms" for m in MODES) + " |")
    print("| outbox depth at the end | "
          + " | ".join(f"{med(m, 'depth'):,.0f}" for m in MODES) + " |")
    print()
    verdict = ratio >= TARGET_RATIO and worst <= TARGET_METRICS_SECONDS
    print(f"intake live+dead / live+live: {ratio:.2f} (target >= {TARGET_RATIO}); "
          f"/metrics p99 (median of runs), worst mode: {worst * 1000:.0f} ms (target <= "
          f"{TARGET_METRICS_SECONDS * 1000:.0f} ms): {'PASS' if verdict else 'BELOW TARGET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    anyio.run(main_async, args)


if __name__ == "__main__":
    main()
