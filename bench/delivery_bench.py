"""Delivery benchmark: durable webhook deliveries/s, outbox on vs off, event-to-delivery latency.

A real ``Bus`` (config file, rules directory, state directory in a temporary
directory, HTTP listener off) with one rule::

    - name: deliver
      on: bench.*
      do: [webhook: {url: "http://127.0.0.1:PORT/in", json: {n: "{n}"}}]

A producer task publishes N events at full speed, one ``await bus.publish``
each (with the outbox on, that returns once the call is committed to SQLite).
A receiver in a separate process (a minimal HTTP/1.1 keep-alive server on
asyncio streams) answers 200 at once and records the arrival time
(``time.time()``) of every ``Idempotency-Key``.  Per run:

* deliveries/s = N / (last first-arrival - first publish);
* latency per event = its arrival - its publish time (same host clock);
* every key must arrive exactly once: distinct keys, missing and duplicates
  are counted and reported.

Runs alternate outbox on / off (``delivery: {outbox: false}``), each with a
fresh bus and state directory; the table gives medians over runs and the
ratio on/off.  Before that the receiver's own capacity is measured with a
bare asyncio client (and ccbus's own aiohttp session, and httpx for comparison),
so the figures are ccbus's, not the receiver's.  A paced phase then sends
below capacity so that latency shows the path, not a queue, and a last phase
sends the same load to an in-process action (no HTTP), which leaves ccbus's
own cost: routing, outbox and dispatch.  ``--profile`` adds a durable run with
the SQLite calls timed and one under cProfile.

    .venv/bin/python bench/delivery_bench.py [--events 5000] [--runs 5]
        [--concurrency 8] [--sweep 4,8,16,32,64] [--profile] [--json out.json]

A benchmark, not a test: prints PASS or BELOW TARGET and exits 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx

from ccbus.actions.http_sessions import HttpClients

sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_bench import machine  # noqa: E402  (the same machine line as the other benchmarks)

from ccbus import ActionContext, ActionSpec, Options, hookimpl  # noqa: E402
from ccbus.actions.api import idempotency_key  # noqa: E402
from ccbus.config.file import load_config  # noqa: E402
from ccbus.delivery.store import SqliteDeliveryStore  # noqa: E402
from ccbus.events.envelope import Event  # noqa: E402
from ccbus.plugins import PluginHost  # noqa: E402
from ccbus.runtime.bus import Bus  # noqa: E402

TARGET_DELIVERIES_PER_SECOND = 1_000
TARGET_RATIO = 0.5  # durable path at >= 50 % of the in-memory one (an aim, not the target)

CONFIG = """\
http: {enabled: false}
state_dir: state
rules: [rules]
log_level: warning
delivery:
  outbox: OUTBOX
  concurrency: CONCURRENCY
"""

RULE = """\
rules:
  - name: deliver
    on: bench.*
    do:
      - webhook: {url: "http://127.0.0.1:PORT/in", json: {n: "{n}"}}
"""

#: The same rule with an in-process action instead of HTTP: ccbus's own cost per call.
NOOP_RULE = """\
rules:
  - name: deliver
    on: bench.*
    do:
      - bench_noop: {n: "{n}"}
"""


class NoopSink:
    """Plugin with action ``bench_noop``: records when each idempotency key ran, nothing else."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        arrivals = self.arrivals

        class Params(Options):
            n: Any = None

        async def run(params: Params, ctx: ActionContext) -> None:
            arrivals.setdefault(ctx.idempotency_key, []).append(time.time())

        return [
            ActionSpec(
                name="bench_noop",
                params=Params,
                run=run,
                target=lambda _: "bench_noop",
                description="benchmark sink",
            )
        ]


# ---------------------------------------------------------------------------
# The receiver: a separate process, HTTP/1.1 keep-alive on asyncio streams.


async def _receiver_main() -> None:
    arrivals: dict[str, list[float]] = {}
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ", 2)[1]
                length, key = 0, ""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"idempotency-key":
                        key = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                body = b""
                if target == b"/in":
                    served += 1
                    arrivals.setdefault(key, []).append(now)
                elif target == b"/stats":
                    usage = os.times()
                    body = json.dumps(
                        {
                            "arrivals": arrivals,
                            "served": served,
                            "cpu": usage.user + usage.system,
                        }
                    ).encode()
                elif target == b"/reset":
                    arrivals.clear()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                if body:
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            return  # shutting down with a client's connection still open
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed: asyncio.Future[None] = loop.create_future()

    def parent_gone() -> None:
        if not stdin_closed.done():
            stdin_closed.set_result(None)

    # the parent keeps our stdin open; when it closes (or dies), we stop
    loop.add_reader(sys.stdin.fileno(), parent_gone)
    async with server:
        await stdin_closed


class Receiver:
    """The receiver process, started and stopped by the benchmark."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--receiver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(trust_env=False, timeout=30)

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.client.get(f"{self.base}/stats").json()
        return doc

    def reset(self) -> None:
        self.client.post(f"{self.base}/reset")

    def close(self) -> None:
        self.client.close()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def raw_capacity(port: int, connections: int, requests: int) -> float:
    """Requests/s a bare asyncio keep-alive client gets from the receiver."""
    per = requests // connections

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(per):
            body = b'{"n":%d}' % i
            writer.write(
                b"POST /in HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: cap-%d-%d\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (w, i, len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if length:
                await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(connections)))
    return per * connections / (time.perf_counter() - started)


async def aiohttp_capacity(port: int, concurrency: int, requests: int) -> float:
    """Requests/s ccbus's own HTTP session (aiohttp, ccbus's pool limits) gets from the receiver."""
    url = f"http://127.0.0.1:{port}/in"
    clients = HttpClients()
    session = clients.get()
    queue = list(range(requests))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            async with session.post(
                url, json={"n": i}, headers={"Idempotency-Key": f"ah-{i}"}
            ) as response:
                response.raise_for_status()
                await response.read()

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)
    finally:
        await clients.aclose()


async def httpx_capacity(port: int, concurrency: int, requests: int) -> float:
    """Requests/s an httpx AsyncClient (ccbus's pool limits) gets from the receiver."""
    url = f"http://127.0.0.1:{port}/in"
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as client:
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                response = await client.post(
                    url, json={"n": i}, headers={"Idempotency-Key": f"hx-{i}"}
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


# ---------------------------------------------------------------------------
# One run of the bus


@dataclass
class Run:
    outbox: bool
    concurrency: int
    events: int
    paced_rate: float = 0.0  # 0: full speed
    deliveries_per_s: float = 0.0
    publish_per_s: float = 0.0  # how fast the producer got its publishes through
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    delivered: int = 0  # distinct keys the receiver saw
    missing: int = 0
    duplicates: int = 0  # arrivals beyond the first per key
    retries: int = 0
    dead_letters: int = 0
    cpu_us_per_delivery: float = 0.0  # this process (event loop + SQLite threads)
    receiver_busy: float = 0.0  # receiver CPU-seconds / run wall seconds
    timed_out: bool = False
    http: bool = True  # False: the in-process bench_noop action, no HTTP
    store_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return ("outbox on" if self.outbox else "outbox off") + ("" if self.http else ", no HTTP")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def make_bus(
    root: Path, port: int, outbox: bool, concurrency: int, sink: NoopSink | None = None
) -> Bus:
    (root / "rules").mkdir(parents=True)
    rule = NOOP_RULE if sink is not None else RULE.replace("PORT", str(port))
    (root / "rules" / "bench.yaml").write_text(rule)
    config = CONFIG.replace("OUTBOX", "true" if outbox else "false")
    config = config.replace("CONCURRENCY", str(concurrency))
    path = root / "ccbus.yaml"
    path.write_text(config)
    extra = [sink] if sink is not None else []
    return Bus(load_config(path), PluginHost(autoload=False, extra=extra), persist_state=False)


class StoreTimer:
    """Wraps the SQLite store's methods and ``anyio.to_thread.run_sync`` to see where time goes."""

    def __init__(self, store: Any) -> None:
        self.inside: dict[str, list[float]] = {}
        self.awaited: list[float] = []
        self.store = store
        for name in ("add", "done", "due"):
            setattr(store, name, self._timed(name, getattr(store, name)))
        self._original = anyio.to_thread.run_sync
        timer = self

        async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await timer._original(func, *args, **kwargs)
            finally:
                timer.awaited.append(time.perf_counter() - started)

        anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        bucket = self.inside.setdefault(name, [])

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                bucket.append(time.perf_counter() - started)

        return timed

    def restore(self) -> None:
        anyio.to_thread.run_sync = self._original

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, times in self.inside.items():
            if times:
                out[name] = {
                    "calls": len(times),
                    "total_s": round(sum(times), 3),
                    "mean_us": round(sum(times) / len(times) * 1e6, 1),
                }
        if self.awaited:
            out["to_thread_awaited"] = {
                "calls": len(self.awaited),
                "total_s": round(sum(self.awaited), 3),
                "mean_us": round(sum(self.awaited) / len(self.awaited) * 1e6, 1),
            }
        return out


async def run_bus(
    receiver: Receiver,
    *,
    outbox: bool,
    concurrency: int,
    events: int,
    tag: str,
    paced_rate: float = 0.0,
    wait_limit: float = 120.0,
    profiler: cProfile.Profile | None = None,
    time_store: bool = False,
    http: bool = True,
) -> Run:
    """One fresh bus: publish ``events``, wait until every call is settled, measure.

    ``http=False`` sends the calls to the in-process ``bench_noop`` action instead
    of the receiver, which leaves ccbus's own cost (routing, outbox, dispatch).
    """
    result = Run(
        outbox=outbox, concurrency=concurrency, events=events, paced_rate=paced_rate, http=http
    )
    sink = None if http else NoopSink()
    action = "webhook" if http else "bench_noop"
    await anyio.to_thread.run_sync(receiver.reset)
    stats_before = await anyio.to_thread.run_sync(receiver.stats)
    batch = [
        Event(type="bench.tick", source="bench", id=f"{tag}-{i:06d}", data={"n": i})
        for i in range(events)
    ]
    published = [0.0] * events
    with tempfile.TemporaryDirectory(prefix="ccbus-delivery-bench-") as tmp:
        bus = make_bus(Path(tmp), receiver.port, outbox, concurrency, sink)
        timer = StoreTimer(bus.delivery_store) if time_store and outbox else None
        counters = bus.counters

        def settled() -> float:
            return counters.get("actions", action=action, outcome="ok") + counters.get(
                "actions", action=action, outcome="dead_letter"
            )

        store = bus.delivery_store

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(bus.run, watch_rules=False))
                await bus.started.wait()
                publish = bus.publish
                clock = time.time
                cpu0 = time.process_time()
                if profiler is not None:
                    profiler.enable()
                start = clock()
                for i, event in enumerate(batch):
                    if paced_rate:
                        delay = start + i / paced_rate - clock()
                        if delay > 0:
                            await anyio.sleep(delay)
                    now = clock()
                    event.data["t"] = now  # the event carries its publish time
                    published[i] = now
                    await publish(event)
                publish_seconds = clock() - start
                with anyio.move_on_after(wait_limit) as scope:
                    while True:  # the counters have no event to wait on: poll them
                        # a call run twice counts twice: also wait for an empty outbox
                        if (
                            settled() >= events
                            and await anyio.to_thread.run_sync(store.pending_count) == 0
                        ):
                            break
                        await anyio.sleep(0.005)
                if profiler is not None:
                    profiler.disable()
                cpu = time.process_time() - cpu0
                result.timed_out = scope.cancelled_caught
                bus.stop()
        finally:
            if timer is not None:
                timer.restore()
                result.store_stats = timer.summary()
            if isinstance(bus.delivery_store, SqliteDeliveryStore):
                bus.delivery_store.close()
    stats = await anyio.to_thread.run_sync(receiver.stats)
    arrivals: dict[str, list[float]] = stats["arrivals"] if sink is None else sink.arrivals
    latencies = []
    last = 0.0
    for i, event in enumerate(batch):
        times = arrivals.get(idempotency_key(event, "deliver", 0))
        if not times:
            result.missing += 1
            continue
        result.delivered += 1
        result.duplicates += len(times) - 1
        first = min(times)
        last = max(last, first)
        latencies.append(first - published[i])
    latencies.sort()
    wall = (last - published[0]) if last else float("nan")
    result.deliveries_per_s = result.delivered / wall if last else 0.0
    result.publish_per_s = events / publish_seconds if publish_seconds else float("inf")
    result.p50_ms = percentile(latencies, 0.50) * 1000
    result.p99_ms = percentile(latencies, 0.99) * 1000
    result.max_ms = (latencies[-1] if latencies else float("nan")) * 1000
    result.retries = int(counters.get("actions", action=action, outcome="retry"))
    result.dead_letters = int(counters.get("actions", action=action, outcome="dead_letter"))
    result.cpu_us_per_delivery = cpu / max(result.delivered, 1) * 1e6
    if sink is None and last:
        result.receiver_busy = (stats["cpu"] - stats_before["cpu"]) / wall
    return result


# ---------------------------------------------------------------------------
# Reporting


@dataclass
class Summary:
    mode: str
    runs: int
    deliveries_per_s: float
    deliveries_per_s_runs: list[float]
    publish_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_delivery: float
    receiver_busy: float
    delivered_exactly_once: bool
    missing: int
    duplicates: int
    retries: int


def summarize(runs: list[Run]) -> Summary:
    return Summary(
        mode=runs[0].mode,
        runs=len(runs),
        deliveries_per_s=statistics.median(r.deliveries_per_s for r in runs),
        deliveries_per_s_runs=[round(r.deliveries_per_s) for r in runs],
        publish_per_s=statistics.median(r.publish_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        cpu_us_per_delivery=statistics.median(r.cpu_us_per_delivery for r in runs),
        receiver_busy=statistics.median(r.receiver_busy for r in runs),
        delivered_exactly_once=all(
            r.missing == 0 and r.duplicates == 0 and not r.timed_out for r in runs
        ),
        missing=sum(r.missing for r in runs),
        duplicates=sum(r.duplicates for r in runs),
        retries=sum(r.retries for r in runs),
    )


def print_table(title: str, summaries: list[Summary]) -> None:
    print(title)
    header = (
        f"{'':<20}{'deliveries/s':>13}{'publish/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU µs/dl':>11}{'recv busy':>10}{'exactly once':>14}{'runs':>6}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s.mode:<20}{s.deliveries_per_s:>13,.0f}{s.publish_per_s:>11,.0f}"
            f"{s.p50_ms:>9.1f}{s.p99_ms:>9.1f}{s.cpu_us_per_delivery:>11,.0f}"
            f"{s.receiver_busy:>10.0%}"
            f"{'yes' if s.delivered_exactly_once else 'NO':>14}{s.runs:>6}"
        )
    print("-" * len(header))
    for s in summaries:
        if not s.delivered_exactly_once or s.retries:
            print(
                f"  {s.mode}: missing {s.missing}, duplicates {s.duplicates}, "
                f"retries {s.retries} (over all runs)"
            )


def print_profile(profiler: cProfile.Profile, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    text = out.getvalue()
    print((text[text.find("   ncalls") :] if "   ncalls" in text else text).rstrip())
    return text


#: (file suffix, function) pairs whose cumulative event-loop time the profile reports
KEY_FUNCTIONS = [
    ("ccbus/runtime/bus.py", "publish"),
    ("ccbus/pipeline.py", "process"),
    ("ccbus/delivery/dispatcher.py", "submit"),
    ("ccbus/delivery/dispatcher.py", "_attempt"),
    ("ccbus/delivery/dispatcher.py", "_settle"),
    ("ccbus/delivery/dispatcher.py", "_poll"),
    ("ccbus/actions/webhook.py", "run"),
    ("aiohttp/client.py", "_request"),
    ("anyio/_backends/_asyncio.py", "run_sync_in_worker_thread"),
]


async def profile(receiver: Receiver, args: argparse.Namespace) -> dict[str, Any]:
    """One durable run with the store timed, then one under cProfile."""
    timed = await run_bus(
        receiver,
        outbox=True,
        concurrency=args.concurrency,
        events=args.events,
        tag="timed",
        wait_limit=args.timeout,
        time_store=True,
    )
    print(
        f"\ndurable run with the store timed ({timed.deliveries_per_s:,.0f} deliveries/s): "
        "SQLite calls, time inside the worker thread (lock and GIL waits included), "
        "and the event loop's round trip through anyio.to_thread:"
    )
    for name, s in timed.store_stats.items():
        print(
            f"  {name:<18} {s['calls']:>6} calls  {s['total_s']:>7.3f} s  "
            f"{s['mean_us']:>8.1f} µs each"
        )
    profiler = cProfile.Profile()
    r = await run_bus(
        receiver,
        outbox=True,
        concurrency=args.concurrency,
        events=args.events,
        tag="profile",
        wait_limit=args.timeout,
        profiler=profiler,
    )
    stats = pstats.Stats(profiler)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values())
    print(
        f"\ncProfile of one durable run ({r.deliveries_per_s:,.0f} deliveries/s under the "
        f"profiler; event-loop thread only, {total:.2f} s of own time in all):"
    )
    key_times = {}
    for suffix, name in KEY_FUNCTIONS:
        cum = sum(
            entry[3]
            for (path, _, func), entry in table.items()
            if func == name and path.endswith(suffix)
        )
        calls = sum(
            entry[1]
            for (path, _, func), entry in table.items()
            if func == name and path.endswith(suffix)
        )
        key_times[f"{suffix}:{name}"] = round(cum, 3)
        print(
            f"  {suffix + ':' + name:<68} cumulative {cum:>6.2f} s  "
            f"({cum / max(r.delivered, 1) * 1e6:>6.0f} µs per delivery, {calls} calls)"
        )
    print("top functions by own time:")
    print_profile(profiler, 15)
    return {
        "timed_deliveries_per_s": round(timed.deliveries_per_s),
        "store": timed.store_stats,
        "profiled_deliveries_per_s": round(r.deliveries_per_s),
        "cumulative_s": key_times,
        "own_time_total_s": round(total, 3),
    }


# ---------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    doc: dict[str, Any] = {"benchmark": "delivery"}
    try:
        # 1. the receiver on its own
        before = receiver.stats()["cpu"]
        started = time.perf_counter()
        raw = await raw_capacity(receiver.port, 4, args.capacity_requests)
        raw_busy = (receiver.stats()["cpu"] - before) / (time.perf_counter() - started)
        ah = await aiohttp_capacity(receiver.port, args.concurrency, args.capacity_requests // 4)
        hx = await httpx_capacity(receiver.port, args.concurrency, args.capacity_requests // 4)
        receiver.reset()
        print(
            f"receiver (separate process, asyncio streams, keep-alive) on 127.0.0.1:"
            f"{receiver.port}: {raw:,.0f} requests/s from a bare asyncio client with 4 "
            f"connections (receiver CPU {raw_busy:.0%} busy);\n"
            f"  ccbus's aiohttp session alone ({args.concurrency} concurrent) gets {ah:,.0f} "
            f"requests/s: the ceiling for the webhook action here;\n"
            f"  an httpx AsyncClient (same limits), which ccbus used before, gets {hx:,.0f}"
        )
        doc["receiver"] = {
            "raw_requests_per_second": round(raw),
            "raw_receiver_cpu_busy": round(raw_busy, 2),
            "aiohttp_requests_per_second": round(ah),
            "httpx_requests_per_second": round(hx),
        }

        # 2. optional concurrency sweep
        if args.sweep:
            print(
                f"\nconcurrency sweep ({args.sweep_events:,} events, median of "
                f"{args.sweep_runs} run(s) per mode and value):"
            )
            sweep = []
            for value in args.sweep:
                row: dict[str, Any] = {"concurrency": value}
                for outbox in (True, False):
                    label = "on" if outbox else "off"
                    tried = [
                        await run_bus(
                            receiver,
                            outbox=outbox,
                            concurrency=value,
                            events=args.sweep_events,
                            tag=f"sweep{value}-{int(outbox)}-{k}",
                            wait_limit=args.timeout,
                        )
                        for k in range(args.sweep_runs)
                    ]
                    row[label] = round(statistics.median(r.deliveries_per_s for r in tried))
                    row[f"p50_ms_{label}"] = round(statistics.median(r.p50_ms for r in tried), 1)
                    row[f"p99_ms_{label}"] = round(statistics.median(r.p99_ms for r in tried), 1)
                    row[f"cpu_us_{label}"] = round(
                        statistics.median(r.cpu_us_per_delivery for r in tried)
                    )
                print(
                    f"  concurrency {value:>3}: outbox on {row['on']:>6,}/s "
                    f"(p50 {row['p50_ms_on']:>6.1f} ms, {row['cpu_us_on']:>5,} CPU µs/dl), "
                    f"off {row['off']:>6,}/s "
                    f"(p50 {row['p50_ms_off']:>6.1f} ms, {row['cpu_us_off']:>5,} CPU µs/dl)"
                )
                sweep.append(row)
            doc["sweep"] = sweep

        # 3. full speed, interleaved on/off
        for w in range(args.warmup):
            for outbox in (True, False):
                await run_bus(
                    receiver,
                    outbox=outbox,
                    concurrency=args.concurrency,
                    events=min(args.events, 1000),
                    tag=f"warm{w}{int(outbox)}",
                    wait_limit=args.timeout,
                )
        runs: dict[bool, list[Run]] = {True: [], False: []}
        for k in range(args.runs):
            order = (True, False) if k % 2 == 0 else (False, True)
            for outbox in order:
                r = await run_bus(
                    receiver,
                    outbox=outbox,
                    concurrency=args.concurrency,
                    events=args.events,
                    tag=f"run{k}{int(outbox)}",
                    wait_limit=args.timeout,
                )
                runs[outbox].append(r)
        on, off = summarize(runs[True]), summarize(runs[False])
        print()
        print_table(
            f"full speed: {args.events:,} events per run, one `await bus.publish` each, "
            f"webhook concurrency {args.concurrency}, runs interleaved on/off (medians)",
            [on, off],
        )
        ratio = on.deliveries_per_s / off.deliveries_per_s if off.deliveries_per_s else 0.0
        print(
            f"runs (deliveries/s): on {', '.join(f'{x:,}' for x in on.deliveries_per_s_runs)}; "
            f"off {', '.join(f'{x:,}' for x in off.deliveries_per_s_runs)}"
        )
        print(
            "latency includes any wait behind earlier events; publish/s close to deliveries/s "
            "means the producer was held to the delivery rate (it shares the event loop and "
            "waits for each record), so calls did not pile up"
        )
        doc["full_speed"] = {
            "events": args.events,
            "concurrency": args.concurrency,
            "on": asdict(on),
            "off": asdict(off),
            "ratio": round(ratio, 3),
            "runs": [asdict(r) for r in runs[True] + runs[False]],
        }

        # 4. paced: below capacity, latency of the path itself
        if args.paced_rate:
            paced = []
            for outbox in (True, False):
                r = await run_bus(
                    receiver,
                    outbox=outbox,
                    concurrency=args.concurrency,
                    events=args.paced_events,
                    paced_rate=args.paced_rate,
                    tag=f"paced{int(outbox)}",
                    wait_limit=args.timeout,
                )
                paced.append(summarize([r]))
            print()
            print_table(
                f"paced: {args.paced_events:,} events at {args.paced_rate:,.0f}/s "
                "(below capacity: latency of the path, not of a queue)",
                paced,
            )
            doc["paced"] = {
                "rate": args.paced_rate,
                "on": asdict(paced[0]),
                "off": asdict(paced[1]),
            }

        # 5. the same load to an in-process action: what ccbus costs without HTTP
        if args.noop_runs:
            noop: dict[bool, list[Run]] = {True: [], False: []}
            for k in range(args.noop_runs):
                for outbox in (True, False) if k % 2 == 0 else (False, True):
                    noop[outbox].append(
                        await run_bus(
                            receiver,
                            outbox=outbox,
                            concurrency=args.concurrency,
                            events=args.events,
                            tag=f"noop{k}{int(outbox)}",
                            wait_limit=args.timeout,
                            http=False,
                        )
                    )
            noop_on, noop_off = summarize(noop[True]), summarize(noop[False])
            print()
            print_table(
                f"without HTTP: the same {args.events:,} events per run to an in-process action "
                "that only notes the time (routing, outbox and dispatch alone; medians)",
                [noop_on, noop_off],
            )
            doc["no_http"] = {"on": asdict(noop_on), "off": asdict(noop_off)}

        # 6. optional: where the time goes in one durable run
        if args.profile:
            doc["profile"] = await profile(receiver, args)
    finally:
        receiver.close()

    verdict = "PASS" if on.deliveries_per_s >= TARGET_DELIVERIES_PER_SECOND else "BELOW TARGET"
    aim = "met" if ratio >= TARGET_RATIO else "not met"
    print(
        f"\ndurable / in-memory: {ratio:.0%} (aim >= {TARGET_RATIO:.0%}: {aim})\n"
        f"target: >= {TARGET_DELIVERIES_PER_SECOND:,} durable deliveries/s: {verdict} "
        f"({on.deliveries_per_s:,.0f}/s with the outbox on)"
    )
    doc["target_deliveries_per_second"] = TARGET_DELIVERIES_PER_SECOND
    doc["verdict"] = verdict
    doc["ratio_aim_met"] = ratio >= TARGET_RATIO
    return doc


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000, help="events per run (5000)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per mode (5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per mode first (1)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="delivery concurrency of the lane (8)"
    )
    parser.add_argument(
        "--sweep", type=_ints, default=[], help="first try these concurrencies, e.g. 8,16,32,64"
    )
    parser.add_argument("--sweep-events", type=int, default=3_000, help="events per sweep run")
    parser.add_argument("--sweep-runs", type=int, default=2, help="runs per sweep value and mode")
    parser.add_argument(
        "--paced-rate", type=float, default=250.0, help="events/s of the paced phase (0: skip)"
    )
    parser.add_argument("--paced-events", type=int, default=1_500, help="events of the paced phase")
    parser.add_argument(
        "--noop-runs", type=int, default=3, help="runs per mode without HTTP (0: skip)"
    )
    parser.add_argument("--capacity-requests", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for one run")
    parser.add_argument("--profile", action="store_true", help="profile one more durable run")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        asyncio.run(_receiver_main())
        return 0
    logging.getLogger("ccbus").setLevel(logging.WARNING)
    load_before = os.getloadavg()[0]
    doc = asyncio.run(bench(args))
    info = machine()
    info["load_average_1m_before"] = round(load_before, 2)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; "
        f"load average {load_before:.2f} before, {info['load_average_1m']:.2f} after "
        "(bench process, its SQLite threads and the receiver share these cores)"
    )
    if args.json:
        doc["machine"] = info
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
