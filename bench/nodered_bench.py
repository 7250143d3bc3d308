"""Side by side with Node-RED: the same HTTP-in, filter, HTTP-out job, the same load.

The job (issue #21): receive JSON events over HTTP POST, test a condition that
holds for a quarter of them, and POST a rendered JSON body to a local receiver
for each match.

* **ccbus**: a real ``ccbus run`` process (built-in plugins only) with the
  built-in ``webhook`` source on its listener (``/events``, unauthenticated,
  loopback) and one rule::

      - name: forward
        on: bench.call
        if: kind == "abandoned"
        do:
          - webhook: {url: "http://127.0.0.1:PORT/in",
                      json: {n: "{n}", sent: "{sent}", queue: "{queue}"}}

  twice: ``ccbus`` (outbox on, the default) and ``ccbus-mem``
  (``delivery: {outbox: false}``).  Everything else is ccbus's default
  (``delivery.concurrency`` 4 calls in flight).
* **Node-RED** (npm ``node-red@4``, installed into ``$CCBUS_NPM_CACHE/node-red``,
  default ``~/.cache/ccbus/npm/node-red``, on the first run, as the Enreach
  tests install ``@microsoft/signalr``) run by the machine's ``node`` with a
  settings file that turns the editor and admin API off
  (``httpAdminRoot: false``), binds to 127.0.0.1 and needs no credentials,
  and the equivalent flow: ``http in`` (POST ``/events``) wired to an
  ``http response`` (202) and to a ``switch`` (``payload.data.kind ==
  "abandoned"``), then a ``function`` that builds the same body, then an
  ``http request`` (POST; everything else Node-RED's default, keep-alive off
  included: with it on, Node-RED accepted fewer events at saturation here;
  ``--node-red-keepalive`` turns it on).

The load generator and the receiver are separate processes (this script with
``--role generator`` / ``--role receiver``), so neither shares CPU accounting
with the system under test.  The generator (aiohttp) sends for ``--duration``
seconds at a fixed rate (500 and 2,000 events/s, at most ``--concurrency``
requests in flight) or at saturation (``--concurrency`` requests in flight,
each sent as soon as the previous one was answered).  Every event carries its
send time (``time.time()``); the receiver (aiohttp server) notes when each
matched body arrives, so end-to-end latency = arrival - send.  A throttled
variant repeats the saturation load with a receiver that answers each request
50 ms late (``--delay``): back-pressure versus queueing.

Each measurement starts a fresh process of the system under test (fresh state
directory), warms it up with a few events that do not match, then measures:

* **accepted/s**: 2xx answers / the generator's sending time;
* **delivered/s**: distinct matched bodies received / (last arrival - first send);
* **p50 / p99**: end-to-end latency of the delivered matches;
* **CPU s per 1,000 events**: user + system CPU seconds of the system's process
  and its children (psutil), from the first event to the end of the drain,
  per 1,000 accepted events;
* **peak RSS**: the highest resident set (process and children), sampled every
  0.1 s while measuring;
* **lost**: matches that were accepted (2xx) but never arrived, after waiting
  for the deliveries to drain (until none has arrived for 5 s, at most
  ``--drain-timeout``).

Rounds alternate the systems at every load (ccbus, ccbus-mem, Node-RED,
ccbus, ...); the table gives medians over ``--rounds``.  ``ratio`` in the JSON
is ccbus's (outbox on) accepted events/s over Node-RED's at saturation.

    .venv/bin/python bench/nodered_bench.py [--rounds 3] [--duration 10]
        [--systems ccbus,ccbus-mem,node-red] [--quick] [--json out.json]

Issue #21's targets for ccbus (outbox on): accepted/s at saturation >= 1.0 x
Node-RED's, p99 <= 50 ms below saturation (at the fixed rates ccbus kept up
with: accepted >= 95 % of the rate), peak RSS <= 150 MB; each is
printed with PASS or BELOW TARGET.  A benchmark, not a test: it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web

NODE_RED_PACKAGE = "node-red@4"
SYSTEMS = ("ccbus", "ccbus-mem", "node-red")
LABELS = {"ccbus": "ccbus, outbox on", "ccbus-mem": "ccbus, outbox off", "node-red": "Node-RED"}
#: The condition holds for one event in four: kinds cycle through this list.
KINDS = ("abandoned", "ended", "ended", "queued")
MATCH = "abandoned"
WARMUP_EVENTS = 200
QUIET_FOR = 5.0
#: Issue #21's targets for ccbus (outbox on).
TARGET_RATIO = 1.0
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 150.0  # the drain ends once no delivery has arrived for this long


# -- the receiver (its own process) --------------------------------------------------


class Receiver:
    """Notes each matched body's arrival; answers after ``delay`` seconds."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.arrivals: list[tuple[int, float, float]] = []

    async def deliver(self, request: web.Request) -> web.Response:
        arrived = time.time()
        doc = await request.json()
        self.arrivals.append((int(float(doc["n"])), float(doc["sent"]), arrived))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(text="ok")

    async def reset(self, request: web.Request) -> web.Response:
        self.delay = float((await request.json()).get("delay", 0.0))
        self.arrivals = []
        return web.json_response({"ok": True})

    async def count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.arrivals)})

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response({"arrivals": self.arrivals})


async def run_receiver(port: int) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/in", receiver.deliver)
    app.router.add_post("/control/reset", receiver.reset)
    app.router.add_get("/control/count", receiver.count)
    app.router.add_get("/control/dump", receiver.dump)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the load generator (its own process) --------------------------------------------


def event_body(prefix: str, n: int) -> bytes:
    """One event as the sender would post it; ``sent`` is the send time, to the µs."""
    kind = KINDS[n % len(KINDS)] if n >= 0 else "warmup"
    return (
        f'{{"type":"bench.call","id":"{prefix}-{n}","subject":"c{n}",'
        f'"data":{{"n":{n},"kind":"{kind}","queue":"q{n % 7}","sent":{time.time():.6f}}}}}'
    ).encode()


async def generate(url: str, rate: float, duration: float, concurrency: int,
                   prefix: str, first: int) -> dict[str, Any]:
    """Send events for ``duration`` s; ``rate`` 0 means as fast as they are answered."""
    statuses: dict[str, int] = {}
    matched: list[int] = []
    sent = accepted = 0
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(n: int) -> None:
            nonlocal sent, accepted
            sent += 1
            try:
                async with session.post(url, data=event_body(prefix, n), headers=headers) as r:
                    await r.read()
                    key = str(r.status)
                    if 200 <= r.status < 300:
                        accepted += 1
                        if n >= 0 and KINDS[n % len(KINDS)] == MATCH:
                            matched.append(n)
            except (aiohttp.ClientError, TimeoutError) as err:
                key = type(err).__name__
            statuses[key] = statuses.get(key, 0) + 1

        cpu0, started = time.process_time(), time.time()
        deadline = started + duration
        if rate > 0:
            slots = asyncio.Semaphore(concurrency)
            tasks: set[asyncio.Task[None]] = set()

            async def paced(n: int) -> None:
                try:
                    await send(n)
                finally:
                    slots.release()

            n = first
            while True:
                due = started + (n - first) / rate
                now = time.time()
                if due >= deadline or now >= deadline:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                await slots.acquire()
                task = asyncio.create_task(paced(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(tasks)
        else:
            counter = iter(range(first, sys.maxsize))

            async def worker() -> None:
                while time.time() < deadline:
                    await send(next(counter))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        ended = time.time()
    return {
        "sent": sent,
        "accepted": accepted,
        "statuses": statuses,
        "matched": matched,
        "started": started,
        "ended": ended,
        "cpu": time.process_time() - cpu0,
    }


# -- the systems under test -----------------------------------------------------------


def npm_cache() -> Path:
    return Path(os.environ.get("CCBUS_NPM_CACHE", Path.home() / ".cache" / "ccbus" / "npm"))


def node_red_dir() -> Path:
    """Where ``node_modules/node-red`` is, installing it with npm on the first run."""
    prefix = npm_cache() / "node-red"
    if (prefix / "node_modules" / "node-red" / "red.js").exists():
        return prefix
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to install Node-RED (or leave node-red out of --systems)")
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing {NODE_RED_PACKAGE} into {prefix} ...", flush=True)
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                    NODE_RED_PACKAGE], check=True, timeout=900, capture_output=True)
    return prefix


def node_red_version(prefix: Path) -> str:
    doc = json.loads((prefix / "node_modules" / "node-red" / "package.json").read_text())
    return str(doc["version"])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CCBUS_CONFIG = """\
sources:
  bench:
    plugin: webhook
    options: {{path: /events, allow_unauthenticated: true}}
rules: [rules]
state_dir: state
http: {{listen: "127.0.0.1:{port}"}}
log_level: warning
delivery: {{outbox: {outbox}{concurrency}}}
"""

CCBUS_RULE = """\
rules:
  - name: forward
    on: bench.call
    if: kind == "{match}"
    do:
      - webhook:
          url: "http://127.0.0.1:{receiver}/in"
          json: {{n: "{{n}}", sent: "{{sent}}", queue: "{{queue}}"}}
"""

NODE_RED_SETTINGS = """\
// Written by bench/nodered_bench.py: no editor, no admin API, loopback only.
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    httpAdminRoot: false,
    httpNodeRoot: "/",
    userDir: {user_dir},
    flowFile: "flows.json",
    credentialSecret: false,
    logging: {{console: {{level: "warn", metrics: false, audit: false}}}},
    diagnostics: {{enabled: false, ui: false}},
    runtimeState: {{enabled: false, ui: false}},
    telemetry: {{enabled: false}},
    externalModules: {{autoInstall: false}},
}};
"""

FUNCTION = ("const d = msg.payload.data;\n"
            "return {payload: {n: d.n, sent: d.sent, queue: d.queue}};")


def node_red_flow(receiver: int, persist: bool = False) -> list[dict[str, Any]]:
    """The ccbus rule as a Node-RED flow: http in -> (202, switch -> function -> http request)."""
    return [
        {"id": "t1", "type": "tab", "label": "bench"},
        {"id": "in", "type": "http in", "z": "t1", "name": "", "url": "/events",
         "method": "post", "upload": False, "swaggerDoc": "", "x": 100, "y": 100,
         "wires": [["ok", "if"]]},
        {"id": "ok", "type": "http response", "z": "t1", "name": "", "statusCode": "202",
         "headers": {}, "x": 300, "y": 60, "wires": []},
        {"id": "if", "type": "switch", "z": "t1", "name": "", "property": "payload.data.kind",
         "propertyType": "msg", "rules": [{"t": "eq", "v": MATCH, "vt": "str"}],
         "checkall": "true", "repair": False, "outputs": 1, "x": 300, "y": 140,
         "wires": [["render"]]},
        {"id": "render", "type": "function", "z": "t1", "name": "", "func": FUNCTION,
         "outputs": 1, "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [],
         "x": 500, "y": 140, "wires": [["out"]]},
        {"id": "out", "type": "http request", "z": "t1", "name": "", "method": "POST",
         "ret": "txt", "paytoqs": "ignore", "url": f"http://127.0.0.1:{receiver}/in",
         "tls": "", "persist": persist, "proxy": "", "insecureHTTPParser": False,
         "authType": "", "senderr": False, "headers": [], "x": 700, "y": 140,
         "wires": [[]]},
    ]


@dataclass
class Running:
    """A started system under test: its process, the URL events go to, its log."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path


def start_system(system: str, work: Path, receiver: int, args: argparse.Namespace) -> Running:
    work.mkdir(parents=True)
    port = free_port()
    log = work / "process.log"
    handle = log.open("ab")
    if system == "node-red":
        prefix = node_red_dir()
        flow = node_red_flow(receiver, args.node_red_keepalive)
        (work / "flows.json").write_text(json.dumps(flow))
        settings = work / "settings.js"
        settings.write_text(NODE_RED_SETTINGS.format(port=port, user_dir=json.dumps(str(work))))
        node = shutil.which("node") or "node"
        command = [node, str(prefix / "node_modules" / "node-red" / "red.js"),
                   "--settings", str(settings), "--userDir", str(work)]
        env = dict(os.environ)
    else:
        outbox = "true" if system == "ccbus" else "false"
        concurrency = f", concurrency: {args.ccbus_concurrency}" if args.ccbus_concurrency else ""
        config = work / "ccbus.yaml"
        config.write_text(CCBUS_CONFIG.format(port=port, outbox=outbox, concurrency=concurrency))
        (work / "rules").mkdir()
        (work / "rules" / "forward.yaml").write_text(
            CCBUS_RULE.format(match=MATCH, receiver=receiver))
        command = [str(Path(sys.executable).parent / "ccbus"), "run", "-c", str(config)]
        env = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    process = subprocess.Popen(command, stdout=handle, stderr=handle, env=env, cwd=work)
    return Running(process, f"http://127.0.0.1:{port}/events", log)


def stop_system(running: Running) -> None:
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss(pid: int) -> int:
    total = 0
    for proc in tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakRss:
    """Samples the system's resident set every 0.1 s in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))
        return self.peak


# -- one measurement ------------------------------------------------------------------


@dataclass
class Load:
    name: str
    rate: float  # events/s; 0: saturation
    delay: float = 0.0  # the receiver's answer delay


@dataclass
class Figures:
    system: str
    load: str
    round: int
    sent: int = 0
    accepted: int = 0
    accepted_per_s: float = 0.0
    delivered: int = 0
    delivered_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s_per_1000: float = 0.0
    peak_rss_mb: float = 0.0
    lost: int = 0
    duplicates: int = 0
    drain_s: float = 0.0
    generator_cpu: float = 0.0  # the generator's CPU seconds / its sending time
    statuses: dict[str, int] = field(default_factory=dict)


def http_json(method: str, url: str, body: Any = None, timeout: float = 30.0) -> Any:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def wait_ready(running: Running, timeout: float = 60.0) -> None:
    """Until the system answers an event with 2xx (a non-matching warm-up event)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            break
        request = urllib.request.Request(running.url, data=event_body("ready", -1),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if 200 <= answer.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    tail = running.log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"{running.url} did not come up within {timeout:.0f}s; its log:\n{tail}")


def run_generator(url: str, rate: float, duration: float, concurrency: int, prefix: str,
                  first: int, out: Path) -> dict[str, Any]:
    subprocess.run([sys.executable, __file__, "--role", "generator", "--url", url,
                    "--rate", str(rate), "--duration", str(duration), "--concurrency",
                    str(concurrency), "--prefix", prefix, "--first", str(first),
                    "--out", str(out)], check=True, timeout=duration + 600)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(system: str, load: Load, round_no: int, receiver: int, work: Path,
            args: argparse.Namespace) -> Figures:
    control = f"http://127.0.0.1:{receiver}/control"
    running = start_system(system, work, receiver, args)
    try:
        wait_ready(running)
        prefix = f"{system}-{load.name}-{round_no}"
        run_generator(running.url, 500, WARMUP_EVENTS / 500, 16, prefix + "-warm",
                      -10 * WARMUP_EVENTS, work / "warmup.json")  # negative n: no match
        http_json("POST", f"{control}/reset", {"delay": load.delay})
        pid = running.process.pid
        cpu0 = cpu_seconds(pid)
        sampler = PeakRss(pid)
        gen = run_generator(running.url, load.rate, args.duration, args.concurrency, prefix, 0,
                            work / "generator.json")
        drain_started = time.monotonic()
        expected = len(gen["matched"])
        last_count, last_change = -1, time.monotonic()
        while True:
            count = int(http_json("GET", f"{control}/count")["count"])
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            if count >= expected or now - last_change > QUIET_FOR \
                    or now - drain_started > args.drain_timeout:
                break
            time.sleep(0.2)
        drain = time.monotonic() - drain_started
        cpu = cpu_seconds(pid) - cpu0
        peak = sampler.stop()
        arrivals = http_json("GET", f"{control}/dump", timeout=120)["arrivals"]
    finally:
        stop_system(running)
    first_arrival: dict[int, tuple[float, float]] = {}
    duplicates = 0
    for n, sent, arrived in arrivals:
        if n in first_arrival:
            duplicates += 1
        else:
            first_arrival[n] = (sent, arrived)
    latencies = [(arrived - sent) * 1000 for sent, arrived in first_arrival.values()]
    sending = max(gen["ended"] - gen["started"], 1e-9)
    last = max((arrived for _, arrived in first_arrival.values()), default=gen["started"])
    accepted = int(gen["accepted"])
    return Figures(
        system=system, load=load.name, round=round_no, sent=int(gen["sent"]),
        accepted=accepted, accepted_per_s=accepted / sending,
        delivered=len(first_arrival),
        delivered_per_s=len(first_arrival) / max(last - gen["started"], 1e-9),
        p50_ms=percentile(latencies, 0.50), p99_ms=percentile(latencies, 0.99),
        cpu_s_per_1000=cpu / accepted * 1000 if accepted else 0.0,
        peak_rss_mb=peak / 1e6, lost=len(set(gen["matched"]) - set(first_arrival)),
        duplicates=duplicates, drain_s=drain, generator_cpu=gen["cpu"] / sending,
        statuses=gen["statuses"],
    )


# -- rounds, medians, the table ---------------------------------------------------------


METRICS: list[tuple[str, str, Callable[[float], str]]] = [
    ("accepted_per_s", "accepted events/s", lambda v: f"{v:,.0f}"),
    ("delivered_per_s", "delivered/s", lambda v: f"{v:,.0f}"),
    ("p50_ms", "p50 end-to-end, ms", lambda v: f"{v:,.1f}"),
    ("p99_ms", "p99 end-to-end, ms", lambda v: f"{v:,.1f}"),
    ("cpu_s_per_1000", "CPU s per 1,000 events", lambda v: f"{v:.3f}"),
    ("peak_rss_mb", "peak RSS, MB", lambda v: f"{v:,.0f}"),
    ("lost", "lost (accepted, not delivered)", lambda v: f"{v:,.0f}"),
]


def medians(results: list[Figures]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for fig in results:
        out.setdefault(fig.system, {}).setdefault(fig.load, {})
    for system, loads in out.items():
        for load in loads:
            runs = [f for f in results if f.system == system and f.load == load]
            loads[load] = {
                name: statistics.median(float(getattr(f, name)) for f in runs)
                for name in (*(m[0] for m in METRICS), "generator_cpu", "drain_s", "sent",
                             "accepted", "delivered", "duplicates")
            }
            loads[load]["lost_max"] = float(max(f.lost for f in runs))
    return out


def table(med: dict[str, dict[str, dict[str, float]]], loads: list[Load],
          systems: list[str]) -> str:
    lines = ["| load | measured | " + " | ".join(LABELS[s] for s in systems) + " |",
             "|---|---|" + "---:|" * len(systems)]
    for load in loads:
        for key, label, fmt in METRICS:
            cells = [fmt(med[s][load.name][key]) if load.name in med.get(s, {}) else "-"
                     for s in systems]
            lines.append(f"| {load.name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(med: dict[str, dict[str, dict[str, float]]], loads: list[Load],
            ratio: float | None) -> list[str]:
    """Issue #21's targets for ccbus (outbox on), each with PASS or BELOW TARGET."""
    if "ccbus" not in med:
        return []
    mine = med["ccbus"]
    # below saturation: the fixed rates ccbus kept up with (accepted >= 95 % of the rate)
    fixed = [load.name for load in loads
             if load.rate > 0 and mine[load.name]["accepted_per_s"] >= 0.95 * load.rate]
    worst_p99 = max((mine[name]["p99_ms"] for name in fixed), default=0.0)
    worst_rss = max(fig["peak_rss_mb"] for fig in mine.values())
    checks = [
        (f"p99 <= {TARGET_P99_MS:g} ms below saturation ({', '.join(fixed)}): "
         f"{worst_p99:,.1f} ms", worst_p99 <= TARGET_P99_MS),
        (f"peak RSS <= {TARGET_RSS_MB:g} MB: {worst_rss:,.0f} MB", worst_rss <= TARGET_RSS_MB),
    ]
    if ratio is not None:
        checks.insert(0, (f"accepted/s at saturation >= {TARGET_RATIO:g} x Node-RED's: "
                          f"{ratio:.2f}", ratio >= TARGET_RATIO))
    return [f"target {text}: {'PASS' if ok else 'BELOW TARGET'}" for text, ok in checks]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def main_bench(args: argparse.Namespace) -> None:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown system(s) {sorted(unknown)}; choose from {SYSTEMS}")
    loads = [Load(f"{int(rate)}/s", float(rate)) for rate in args.rates]
    loads.append(Load("saturation", 0.0))
    if args.delay > 0:
        loads.append(Load(f"saturation, receiver +{args.delay * 1000:.0f} ms", 0.0, args.delay))
    versions: dict[str, str] = {"node": ""}
    if "node-red" in systems:
        versions["node-red"] = node_red_version(node_red_dir())
        versions["node"] = subprocess.run([shutil.which("node") or "node", "--version"],
                                          capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()
    started = datetime.now(UTC)
    print(f"{started:%Y-%m-%d %H:%M} UTC; {args.rounds} round(s) of {args.duration:g} s per "
          f"measurement; systems {', '.join(systems)}; load average {load_before[0]:.2f}",
          flush=True)
    results: list[Figures] = []
    receiver_port = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--role", "receiver", "--port",
                                 str(receiver_port)], stdout=subprocess.PIPE)
    try:
        assert receiver.stdout is not None
        receiver.stdout.readline()  # "ready"
        with tempfile.TemporaryDirectory(prefix="nodered-bench-") as tmp:
            for round_no in range(1, args.rounds + 1):
                for load in loads:
                    for system in systems:
                        work = Path(tmp) / f"{round_no}-{load.name.replace('/', '')}-{system}"
                        fig = measure(system, load, round_no, receiver_port, work, args)
                        results.append(fig)
                        print(f"round {round_no} {load.name:<28} {system:<10} "
                              f"accepted {fig.accepted_per_s:8,.0f}/s delivered "
                              f"{fig.delivered_per_s:8,.0f}/s p50 {fig.p50_ms:9,.1f} ms "
                              f"p99 {fig.p99_ms:9,.1f} ms cpu/1k {fig.cpu_s_per_1000:.3f} s "
                              f"rss {fig.peak_rss_mb:6,.0f} MB lost {fig.lost} "
                              f"(generator cpu {fig.generator_cpu:.0%})", flush=True)
    finally:
        receiver.terminate()
        receiver.wait()
    med = medians(results)
    ratio = ratio_mem = None
    if "node-red" in med:
        red = max(med["node-red"]["saturation"]["accepted_per_s"], 1e-9)
        if "ccbus" in med:
            ratio = med["ccbus"]["saturation"]["accepted_per_s"] / red
        if "ccbus-mem" in med:
            ratio_mem = med["ccbus-mem"]["saturation"]["accepted_per_s"] / red
    print()
    print(f"medians of {args.rounds} round(s), {args.duration:g} s per measurement, "
          f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(table(med, loads, systems))
    if ratio is not None:
        print(f"\nratio (ccbus, outbox on / Node-RED, accepted events/s at saturation): "
              f"{ratio:.2f}")
    if ratio_mem is not None:
        print(f"the same with ccbus's outbox off: {ratio_mem:.2f}")
    verdicts = targets(med, loads, ratio)
    for line in verdicts:
        print(line)
    if args.json:
        doc = {
            "date": started.isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": machine(), "versions": versions,
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "settings": {"rounds": args.rounds, "duration": args.duration,
                         "rates": args.rates, "concurrency": args.concurrency,
                         "delay": args.delay, "systems": systems,
                         "node_red_keepalive": args.node_red_keepalive,
                         "ccbus_concurrency": args.ccbus_concurrency},
            "medians": med, "ratio": ratio, "ratio_outbox_off": ratio_mem,
            "runs": [asdict(f) for f in results], "targets": verdicts,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("bench", "generator", "receiver"), default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of load per measurement (default 10; --quick: 2)")
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[500.0, 2000.0], help="fixed rates, events/s (default 500,2000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="most requests in flight from the generator (default 64)")
    parser.add_argument("--delay", type=float, default=0.05,
                        help="the throttled receiver's delay, s (default 0.05; 0 skips)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--ccbus-concurrency", type=int, default=None,
                        help="delivery.concurrency for ccbus (default: ccbus's own)")
    parser.add_argument("--node-red-keepalive", action="store_true",
                        help="Node-RED's http request with keep-alive on (default: off, "
                             "Node-RED's own default)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round of 2 s per measurement")
    parser.add_argument("--json", metavar="PATH")
    # the generator's and the receiver's own arguments
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="e", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        asyncio.run(run_receiver(args.port))
        return
    if args.role == "generator":
        doc = asyncio.run(generate(args.url, args.rate, args.duration, args.concurrency,
                                   args.prefix, args.first))
        Path(args.out).write_text(json.dumps(doc))
        return
    if args.quick:
        args.rounds = 1 if args.rounds is None else args.rounds
        args.duration = 2.0 if args.duration is None else args.duration
        args.drain_timeout = min(args.drain_timeout, 30.0)
    args.rounds = 3 if args.rounds is None else args.rounds
    args.duration = 10.0 if args.duration is None else args.duration
    main_bench(args)


if __name__ == "__main__":
    main()
