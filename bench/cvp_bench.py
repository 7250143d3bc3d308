"""CVP benchmark: events/s from ActiveMQ through the bus and a rule, vs a bare stomp.py consumer.

A private ActiveMQ broker (Debian's package, ``ccbus_peers.activemq``) runs
on loopback.  Two durable subscriptions are registered on CVP's
``cvp/calls/ended`` topic, one per consumer.  Each run, the Java JMS peer
publishes N CallEndedEvent TextMessages (persistent, as CVP publishes) to the
topic while both consumers are away, so each durable subscription holds the
same N-message backlog.  Then, in the same invocation and one after the
other, each consumer drains its backlog:

* **baseline**: a bare stomp.py 9 consumer: STOMP 1.2, the same
  ``client-individual`` acknowledgement and ``activemq.prefetchSize`` (1000);
  ``json.loads`` and ``ack`` in its listener, nothing else;
* **ccbus**: a real ``Bus`` (config file and rules directory in a temporary
  directory, outbox off) with the ``cisco-cvp`` source: every message crosses
  from stomp.py's thread to the loop, is checked against the document's
  schema, mapped to ``cvp.call.ended`` plus the canonical ``call.ended`` (and
  ``call.abandoned`` for one in five), routed, acknowledged after emit
  returned, and this rule runs an in-process counting action for each::

      - name: count
        on: cvp.call.ended
        if: callDuration >= 0
        do: [bench.count: {call: "{callGuid}"}]

* **source alone**: the same ``cisco-cvp`` source (transport, thread hand-off,
  decoding, schema check, mapping, ack after emit) with an ``emit`` that does
  nothing: what the plugin costs without the bus, on its own subscription.

Rate per run = (N - 1) / (last message handled - first message received), on
one clock: CVP messages per second.  The bus routes 2.2 events per message
(the native one, ``call.ended``, and ``call.abandoned`` for one in five), which
the last line reports.  The table gives medians over the runs and the ratio ccbus /
baseline.

    .venv/bin/python bench/cvp_bench.py [--events 20000] [--runs 5] [--json out.json]

A benchmark, not a test: prints PASS or BELOW TARGET and exits 0 either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import stomp
import yaml
from ccbus_peers.activemq import ActiveMQBroker, JmsPeer

from ccbus import ActionSpec, Options, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

TARGET_RATE = 5_000.0
TARGET_RATIO = 0.7
TOPIC = "cvp/calls/ended"
PREFETCH = 1000

RULES = """
rules:
  - name: count
    on: cvp.call.ended
    if: callDuration >= 0
    do: [bench.count: {call: "{callGuid}"}]
"""

#: One CallEndedEvent; ``%d`` is the sequence (the peer fills it in), one in five abandoned.
BODY = json.dumps({
    "eventType": "call.ended", "timestamp": "2026-11-22T09:00:00.000Z",
    "callGuid": "BENCH%d", "callingNumber": "+15550100", "calledNumber": "8005550100",
    "callResult": "completed", "callDuration": 184, "selfServiceDuration": 40,
    "queueDuration": 22, "applicationName": "MainMenu",
    "terminationReason": "normal_clearing", "sipResponseCode": 200,
})
ABANDONED = BODY.replace('"completed"', '"abandoned"')


@dataclass
class Run:
    rate: float
    seconds: float


# ---------------------------------------------------------------------------
# The broker and the publisher


async def publish(broker: ActiveMQBroker, count: int) -> float:
    """N persistent TextMessages from the JMS peer: 4 in 5 completed, 1 in 5 abandoned."""
    url = broker.openwire_url + "?jms.useAsyncSend=true"
    async with JmsPeer.open(url) as peer:
        abandoned = count // 5
        seconds = await peer.bulk(f"topic:{TOPIC}", BODY, count - abandoned, persistent=True)
        seconds += await peer.bulk(f"topic:{TOPIC}", ABANDONED.replace("BENCH%d", "BENCHA%d"),
                                   abandoned, persistent=True)
        # a receipt-like barrier: a synchronous send returns once the broker has all before it
        await peer.send("queue:bench.barrier", "done", persistent=True)
    return seconds


# ---------------------------------------------------------------------------
# Baseline: bare stomp.py


class BareListener(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self, conn: Any, count: int) -> None:
        self.conn = conn
        self.count = count
        self.seen = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()

    def on_message(self, frame: Any) -> None:
        if not self.seen:
            self.first = time.perf_counter()
        json.loads(frame.body)
        self.conn.ack(frame.headers["ack"])
        self.seen += 1
        if self.seen >= self.count:
            self.last = time.perf_counter()
            self.done.set()


def bare_subscribe(broker: ActiveMQBroker, count: int, client_id: str = "bench-baseline",
                   name: str = "baseline") -> tuple[Any, BareListener]:
    conn = stomp.Connection12([("127.0.0.1", broker.stomp_port)])
    listener = BareListener(conn, count)
    conn.set_listener("bench", listener)
    conn.connect(wait=True, headers={"client-id": client_id})
    conn.subscribe(f"/topic/{TOPIC}", "1", ack="client-individual",
                   headers={"activemq.subscriptionName": name,
                            "activemq.prefetchSize": str(PREFETCH), "receipt": "subscribed"})
    return conn, listener


def baseline_run(broker: ActiveMQBroker, count: int) -> Run:
    conn, listener = bare_subscribe(broker, count)
    try:
        if not listener.done.wait(120):
            raise RuntimeError(f"baseline got {listener.seen} of {count}")
    finally:
        conn.disconnect()
    seconds = listener.last - listener.first
    return Run((count - 1) / seconds, seconds)


# ---------------------------------------------------------------------------
# ccbus


class Counter:
    """The rule's action and the bus's observer."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.routed = 0
        self.ran = 0
        self.first = 0.0
        self.last = 0.0
        self.done = anyio.Event()

    def observe(self, event: Any, firings: list[Any], calls: list[Any]) -> None:
        if event.type == "cvp.call.ended":
            if not self.routed:
                self.first = time.perf_counter()
            self.routed += 1
            self._check()

    def _check(self) -> None:
        if self.routed >= self.count and self.ran >= self.count and not self.done.is_set():
            self.last = time.perf_counter()
            self.done.set()

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        counter = self

        class Params(Options):
            call: str

        async def run(params: Params, ctx: Any) -> None:
            counter.ran += 1
            counter._check()

        return [ActionSpec(name="bench.count", params=Params, run=run, side_effects=False)]


async def source_run(broker: ActiveMQBroker, count: int, workdir: Path) -> Run:
    """The source with a no-op emit: the plugin's own cost, without the bus."""
    from ccbus_cisco_cvp.options import CvpOptions
    from ccbus_cisco_cvp.source import CvpSource

    from ccbus import SourceContext

    seen = [0]
    first = last = 0.0
    done = anyio.Event()

    async def emit(event: Any) -> None:
        nonlocal first, last
        if event.type == "cvp.call.ended":
            if not seen[0]:
                first = time.perf_counter()
            seen[0] += 1
            if seen[0] == count:
                last = time.perf_counter()
                done.set()

    options = source_options(broker)
    options["broker"]["client_id"] = "bench-source"
    ctx = SourceContext(name="cvp", options=CvpOptions.model_validate(options), emit=emit,
                        log=logging.getLogger("bench.source"), state_dir=workdir)
    source = CvpSource(ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        with anyio.fail_after(120):
            await done.wait()
        assert source.rejected == {}, source.rejected
        assert source.connection is not None
        await source.connection.flush_acks()
        tg.cancel_scope.cancel()
    return Run((count - 1) / (last - first), last - first)


def source_options(broker: ActiveMQBroker) -> dict[str, Any]:
    topics: dict[str, Any] = {key: None for key in (
        "calls_started", "calls_transferred", "calls_queued", "calls_application_invoked",
        "calls_error", "device_status_changed", "threshold_exceeded", "service_state_changed",
        "config_deployed")}
    topics["calls_ended"] = TOPIC
    return {"broker": {"url": broker.stomp_url, "client_id": "bench-ccbus",
                       "prefetch": PREFETCH},
            "topics": topics}


async def ccbus_run(broker: ActiveMQBroker, count: int, workdir: Path) -> Run:
    import ccbus_cisco_cvp

    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    (workdir / "rules" / "count.yaml").write_text(RULES)
    config = {
        "sources": {"cvp": {"plugin": "cisco-cvp", "options": source_options(broker)}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": False},
        "log_level": "warning",
    }
    (workdir / "ccbus.yaml").write_text(yaml.safe_dump(config))
    counter = Counter(count)
    host = PluginHost(autoload=False, extra=[ccbus_cisco_cvp, counter])
    bus = Bus(load_config(workdir / "ccbus.yaml"), host, persist_state=False,
              observer=counter.observe)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        with anyio.fail_after(120):
            await counter.done.wait()
        source: Any = bus.sources["cvp"].source
        assert source.rejected == {}, source.rejected
        await source.connection.flush_acks()
        bus.stop()
    seconds = counter.last - counter.first
    return Run((count - 1) / seconds, seconds)


# ---------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {"baseline": [], "ccbus": [], "source": []}
    with tempfile.TemporaryDirectory(prefix="ccbus-cvp-bench-") as tmp:
        work = Path(tmp)
        broker = ActiveMQBroker(work / "broker", tls=False)
        print("starting ActiveMQ ...", flush=True)
        await anyio.to_thread.run_sync(broker.start)
        try:
            # register both durable subscriptions (the source's is <prefix><channel key>),
            # then warm up with a small backlog
            for client_id, name in (("bench-baseline", "baseline"),
                                    ("bench-ccbus", "ccbus-calls_ended"),
                                    ("bench-source", "ccbus-calls_ended")):
                conn, _ = await anyio.to_thread.run_sync(bare_subscribe, broker, 1, client_id,
                                                         name)
                await anyio.to_thread.run_sync(conn.disconnect, "bye")
            await publish(broker, 2000)
            await anyio.to_thread.run_sync(baseline_run, broker, 2000)
            await ccbus_run(broker, 2000, work / "warmup")
            await source_run(broker, 2000, work / "warmup-source")
            for n in range(args.runs):
                published = await publish(broker, args.events)
                runs["baseline"].append(
                    await anyio.to_thread.run_sync(baseline_run, broker, args.events))
                runs["ccbus"].append(await ccbus_run(broker, args.events, work / f"run{n}"))
                runs["source"].append(await source_run(broker, args.events, work / f"src{n}"))
                print(f"run {n + 1}: published in {published:.1f}s   "
                      f"baseline {runs['baseline'][-1].rate:>8,.0f}/s   "
                      f"ccbus {runs['ccbus'][-1].rate:>8,.0f}/s   "
                      f"source alone {runs['source'][-1].rate:>8,.0f}/s", flush=True)
        finally:
            broker.stop()
    return {"runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    info = machine()
    print(f"CVP benchmark: {args.events:,} CallEndedEvents per run, {args.runs} runs; "
          f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"load {info['load_average_1m']}", flush=True)
    result = anyio.run(main_async, args)
    base = statistics.median(r.rate for r in result["runs"]["baseline"])
    ours = statistics.median(r.rate for r in result["runs"]["ccbus"])
    alone = statistics.median(r.rate for r in result["runs"]["source"])
    ratio = ours / base
    print()
    print(f"{'consumer':<44} {'median events/s':>16}")
    print(f"{'bare stomp.py consumer (baseline)':<44} {base:>16,.0f}")
    print(f"{'ccbus: cisco-cvp source, bus, rule, action':<44} {ours:>16,.0f}")
    print(f"{'ratio ccbus / baseline':<44} {ratio:>16.2f}")
    print(f"{'cisco-cvp source alone (no-op emit)':<44} {alone:>16,.0f}")
    print(f"{'ratio source alone / baseline':<44} {alone / base:>16.2f}")
    # each message is one native event plus call.ended, and call.abandoned for 1 in 5
    print(f"{'ccbus: events routed by the bus per second':<44} {ours * 2.2:>16,.0f}")
    verdict = "PASS" if ours >= TARGET_RATE else "BELOW TARGET"
    print(f"\ntarget >= {TARGET_RATE:,.0f} events/s: {verdict}; "
          f"ratio {ratio:.2f} (aim >= {TARGET_RATIO})")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": info, "events": args.events, "runs": args.runs,
            "baseline": [r.__dict__ for r in result["runs"]["baseline"]],
            "ccbus": [r.__dict__ for r in result["runs"]["ccbus"]],
            "source": [r.__dict__ for r in result["runs"]["source"]],
            "median_source": alone,
            "median_baseline": base, "median_ccbus": ours, "ratio": ratio,
            "verdict": verdict,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
