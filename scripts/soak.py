#!/usr/bin/env python3
"""Soak and fault test: events at a steady rate through a real ``ccbus run`` while things break.

Three feeds push events at a steady rate; two rules forward every event to a
local HTTP receiver with the ``webhook`` action, each call carrying the
event's unique id in its JSON body.  The feeds:

* ``webhook``: a client POSTing to the inbound ``webhook`` source (re-posting
  while ccbus is down; 202 means recorded);
* ``replay``: the ``replay`` source pacing a JSON Lines recording in real time;
* ``cvp``: CVP call flows (the plugin's scenario code) published by the CVP
  simulator to a private ActiveMQ broker as persistent JMS messages, each
  confirmed by a broker receipt, and read by the ``cisco-cvp`` source over
  durable topic subscriptions.

Meanwhile the script, at fixed fractions of the duration, one fault at a time:

1. stops the receiver for 15 % of the run (calls retry, then arrive),
2. restarts the ActiveMQ broker while ccbus is connected (the source and the
   simulator reconnect; the script measures how long ccbus takes),
3. sends SIGHUP with a broken rule file (the old rules must keep running),
   then with a good one,
4. SIGKILLs ccbus, lets CVP events pile up in the broker for its offline
   durable subscriptions, restarts the broker (the pile must survive: only
   persistent messages do), and starts ccbus again (its outbox must deliver
   what was pending, the broker what ccbus had not acknowledged).

At the end it reports, per feed: deliveries expected (events accepted),
delivered (distinct), **lost** (expected and never delivered: must be 0) and
duplicates (delivered more than once: allowed, counted), plus ccbus's RSS
sampled every 2 s and the broker restarts' figures.  Exit status 1 when
anything was lost.

Run::

    .venv/bin/python scripts/soak.py --duration 180 --rate 20 --json /tmp/soak.json
    .venv/bin/python scripts/soak.py --duration 30

The CVP feed needs Debian's ``activemq`` package and a JRE (``.ci/run``
installs them); the broker runs from a temporary directory on free loopback
ports and never touches ``/etc/activemq``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil
from anyio.from_thread import start_blocking_portal
from ccbus_cisco_cvp.scenarios import Item, contact_center
from ccbus_cisco_cvp.simulator import CvpSimulator
from ccbus_peers.activemq import ActiveMQBroker
from ccbus_stomp import NotConnectedError, StompOptions

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from http_receiver import HttpReceiver, RecordedRequest  # noqa: E402
from support import answers, free_port, start_ccbus, wait_until, write  # noqa: E402

TOKEN = "soak-test-token"
#: The rules: each call's JSON body carries the id the feed recorded as expected.
GOOD_RULES = """
rules:
  - name: forward
    on: soak.*
    do:
      - webhook: {{url: "http://127.0.0.1:{port}/in", json: {{id: "{{event.id}}"}}}}
  - name: forward-cvp
    on: cvp.call.*
    do:
      - webhook: {{url: "http://127.0.0.1:{port}/in", json: {{id: "{{eventType}}/{{callGuid}}"}}}}
"""
GOOD_RULE_COUNT = 2
BROKEN_RULES = "rules:\n  - name: forward\n    on: soak.*\n    do: [webhook: {url: 42}]\n"
#: A feed whose event was refused tries it again after this long (seconds).
RETRY_PAUSE = 0.2
#: The plugin the CVP feed needs; the other installed plugins stay unloaded.
CVP_PLUGIN = "cisco-cvp"


class Feed:
    """A source of events for the soak: its config, its producer, what must arrive."""

    name = "feed"

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.expected: set[str] = set()
        #: event id -> time.monotonic() when the feed saw it accepted
        self.accepted_at: dict[str, float] = {}

    def config(self, workdir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, stop: threading.Event, port: int) -> None:
        """Produce events until ``stop`` (in a thread)."""

    def accept(self, event_id: str) -> None:
        self.expected.add(event_id)
        self.accepted_at[event_id] = time.monotonic()

    def pace(self, stop: threading.Event, send: Callable[[int], str | None]) -> None:
        """Call ``send(n)`` for n = 0, 1, ... at :attr:`rate` per second until ``stop``.

        ``send`` returns the id of event ``n`` once its receiver accepted it, or
        None when it was refused (ccbus or the broker is down): the same ``n``
        is tried again after :data:`RETRY_PAUSE`, without a burst to catch up.
        """
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            event_id = send(n)
            if event_id is not None:
                self.accept(event_id)
                n += 1
                next_at += 1 / self.rate
            else:
                next_at = time.monotonic() + RETRY_PAUSE
            stop.wait(max(0.0, next_at - time.monotonic()))


class WebhookFeed(Feed):
    """POSTs events to the inbound webhook source; 202 means recorded, so it then counts."""

    name = "webhook"

    def config(self, workdir: Path) -> dict[str, Any]:
        return {"plugin": "webhook", "options": {"token": TOKEN}}

    def run(self, stop: threading.Event, port: int) -> None:
        url = f"http://127.0.0.1:{port}/events/{self.name}"
        with httpx.Client(timeout=5) as client:

            def send(n: int) -> str | None:
                try:
                    answer = client.post(url, headers={"Authorization": f"Bearer {TOKEN}"},
                                         json={"type": "soak.webhook", "id": f"w{n}"})
                except httpx.HTTPError:
                    return None  # ccbus is down (killed): send it again later
                return f"w{n}" if answer.status_code == 202 else None

            self.pace(stop, send)


class ReplayFeed(Feed):
    """A JSON Lines recording replayed in real time by the ``replay`` source.

    The ``replay`` source keeps no cursor: after a restart it plays its file
    from the start, so events replayed before the SIGKILL arrive twice and
    show up as duplicates; every event of the file must arrive at least once.
    """

    name = "replay"

    def __init__(self, rate: float, duration: float) -> None:
        super().__init__(rate)
        self.count = int(rate * duration)

    def config(self, workdir: Path) -> dict[str, Any]:
        path = workdir / "recording.jsonl"
        start = time.time()
        with path.open("w") as out:
            for n in range(self.count):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + n / self.rate))
                frac = f"{(start + n / self.rate) % 1:.3f}"[1:]
                out.write(json.dumps({"type": "soak.replay", "id": f"r{n}",
                                      "time": f"{stamp}{frac}Z"}) + "\n")
                self.expected.add(f"r{n}")
        return {"plugin": "replay", "options": {"path": str(path), "speed": 1}}


class CvpStompFeed(Feed):
    """CVP call flows published to ActiveMQ by the CVP simulator, read by ``cisco-cvp``.

    Items come from the plugin's own scenario (overlapping calls: answered,
    abandoned, self-service, failed); only call events are sent, because each
    has a unique id (``eventType/callGuid``) that the ``forward-cvp`` rule
    puts in the call's body.  An event counts as expected once the broker's
    RECEIPT for it arrived: a persistent message is then in the broker's
    store.  Without a receipt (broker restarting) it is sent again, so if the
    first copy did arrive it shows up as a duplicate, never as a loss.
    """

    name = "cvp"

    def __init__(self, rate: float, broker: ActiveMQBroker) -> None:
        super().__init__(rate)
        self.broker = broker
        self._items: list[Item] = []
        self._batches = itertools.count()

    def config(self, workdir: Path) -> dict[str, Any]:
        return {"plugin": CVP_PLUGIN, "options": {"broker": {
            "url": self.broker.stomp_url, "client_id": "ccbus-soak",
            "backoff_initial": 0.2, "backoff_cap": 2,
        }}}

    def item(self, n: int) -> Item:
        """The n-th call event: batches of 20 calls, each batch with its own seed."""
        while n >= len(self._items):
            batch = contact_center(20, seed=next(self._batches))
            self._items.extend((key, p) for key, p in batch if "callGuid" in p)
        return self._items[n]

    def run(self, stop: threading.Event, port: int) -> None:
        options = StompOptions(url=self.broker.stomp_url, backoff_initial=0.2, backoff_cap=1)
        with start_blocking_portal() as portal, \
                portal.wrap_async_context_manager(CvpSimulator(options)) as simulator:

            def send(n: int) -> str | None:
                key, payload = self.item(n)
                try:  # counted as expected only once the broker has it
                    portal.call(partial(simulator.publish, key, payload, receipt=True,
                                        wait_connected=1.0))
                except NotConnectedError:
                    return None
                return f"{payload['eventType']}/{payload['callGuid']}"

            self.pace(stop, send)


class BrokerFaults:
    """The two broker restarts, and how ccbus came through them.

    ``while_connected``: a restart while ccbus is connected and consuming (run
    it in a thread: RSS sampling and the schedule go on).  Figures:
    ``down_s`` (stop until the broker listens again), ``reconnected_s`` (from
    then until ``/readyz`` shows the CVP source connected, its reconnect count
    one higher), ``first_new_accepted_s`` (until the simulator had a receipt
    for its first event after the restart) and ``first_new_delivery_s`` (until
    the receiver got the call for an event accepted after the restart: the
    whole path works again).  None: not within :attr:`WITHIN` seconds.

    ``while_ccbus_down``: a restart while ccbus is SIGKILLed, with the CVP
    events accepted since the kill (``backlog``) waiting in the broker for the
    offline durable subscriptions: they reach ccbus only if the broker kept
    them as persistent messages across its restart.
    """

    WITHIN = 60.0

    def __init__(self, broker: ActiveMQBroker, feed: CvpStompFeed, receiver: HttpReceiver,
                 port: int) -> None:
        self.broker, self.feed, self.receiver = broker, feed, receiver
        self.readyz = f"http://127.0.0.1:{port}/readyz"
        self.figures: dict[str, dict[str, float | None]] = {}
        self.thread = threading.Thread(target=self.while_connected, daemon=True)

    def while_connected(self) -> None:
        before = self._source().get("reconnects", 0)
        figures = self.figures["while_connected"] = {}
        up = self._restart(figures)
        figures["reconnected_s"] = self._until(up, lambda: (
            (s := self._source()).get("state") == "connected" and s["reconnects"] > before))
        figures["first_new_delivery_s"] = self._until(up, lambda: self._new_delivery(up))
        accepted = [t for t in list(self.feed.accepted_at.values()) if t > up]
        figures["first_new_accepted_s"] = round(min(accepted) - up, 2) if accepted else None

    def while_ccbus_down(self, killed_at: float) -> None:
        backlog = sum(1 for t in list(self.feed.accepted_at.values()) if t > killed_at)
        self._restart(self.figures.setdefault("while_ccbus_down", {"backlog": backlog}))

    def _restart(self, figures: dict[str, float | None]) -> float:
        """Stop and start the broker (same ports, same store); when it listened again."""
        began = time.monotonic()
        self.broker.restart()
        up = time.monotonic()
        figures["down_s"] = round(up - began, 2)
        return up

    def _source(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = httpx.get(self.readyz, timeout=1.0).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return dict(doc.get("sources", {}).get(self.feed.name, {}))

    def _new_delivery(self, up: float) -> bool:
        """Whether a call arrived for a CVP event accepted after ``up``."""
        for request in reversed(list(self.receiver.requests)):
            if request.monotonic < up:
                return False
            if self.feed.accepted_at.get(delivered_id(request), 0.0) > up:
                return True
        return False

    def _until(self, since: float, done: Callable[[], bool]) -> float | None:
        while time.monotonic() - since < self.WITHIN:
            if done():
                return round(time.monotonic() - since, 2)
            time.sleep(0.1)
        return None


def delivered_id(request: RecordedRequest) -> str:
    """The event id a forwarded call carries in its body ("" if it has none)."""
    try:
        return str(request.json()["id"])
    except (ValueError, KeyError, TypeError):
        return ""


def plugin_env() -> dict[str, str]:
    """Environment for ``ccbus run``: built-ins plus ``cisco-cvp``, no other entry point."""
    others = [ep.name for ep in metadata.entry_points(group="ccbus") if ep.name != CVP_PLUGIN]
    return {"CCBUS_DISABLE_PLUGIN_AUTOLOAD": "0", "CCBUS_DISABLE_PLUGINS": ",".join(others)}


class CcbusRun:
    """The ``ccbus run`` under test (a new process after the SIGKILL), its RSS and fault log."""

    def __init__(self, config: Path, log: Path, duration: float, port: int) -> None:
        self.config, self.log, self.duration = config, log, duration
        self.url = f"http://127.0.0.1:{port}"
        self.env = plugin_env()
        self.proc = start_ccbus(config, log, self.env)
        self.began = time.monotonic()
        #: (seconds since the start, RSS in MiB), every 2 s
        self.rss: list[tuple[float, float]] = []
        self.faults: list[str] = []

    def at(self, fraction: float, done: Callable[[], bool] | None = None) -> None:
        """Sleep until ``fraction`` of the duration (or until ``done()``, if given, is true
        before that), sampling RSS on the way."""
        while (elapsed := time.monotonic() - self.began) < fraction * self.duration:
            if done is not None and done():
                return
            if not self.rss or elapsed - self.rss[-1][0] >= 2.0:
                try:
                    self.rss.append((elapsed, psutil.Process(self.proc.pid).memory_info().rss
                                     / 2**20))
                except psutil.Error:
                    pass
            time.sleep(0.2)

    def note(self, text: str) -> None:
        self.faults.append(f"{time.monotonic() - self.began:6.1f}s {text}")

    def kill(self) -> float:
        """SIGKILL, and wait for the process to be gone; when."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.note("SIGKILL")
        return time.monotonic()

    def wait_ready(self) -> None:
        """Wait until every source is ready (the CVP source's durable subscriptions exist, so
        nothing published from now on can miss them); the schedule's clock starts here."""
        wait_until(lambda: answers(f"{self.url}/readyz"), 60, "ccbus ready", self.log)
        self.began = time.monotonic()

    def start(self) -> None:
        """Start ccbus again and wait until it answers (RSS samples of a process still
        importing its modules would say nothing)."""
        self.proc = start_ccbus(self.config, self.log, self.env)
        wait_until(lambda: answers(f"{self.url}/healthz"), 60, "ccbus to restart", self.log)
        self.note("ccbus restarted (answering)")

    def terminate(self) -> int:
        """SIGTERM (the service manager's stop); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return int(self.proc.wait(60))

    def close(self) -> None:
        """Kill the process if the soak ended early (an exception): never leave it behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def soak(duration: float, rate: float, workdir: Path,
         cvp_rate: float | None = None) -> dict[str, Any]:
    """Run the soak, ``duration`` seconds of feeding, then the wait for deliveries; the report.

    Rates: ``rate`` events/s for the webhook feed, half of it for the replay
    feed, ``cvp_rate`` (default: half of ``rate``) for the CVP feed.
    """
    broker = ActiveMQBroker(workdir / "activemq", tls=False).start()
    receiver = HttpReceiver(port=free_port()).start()
    port = free_port()
    cvp = CvpStompFeed(cvp_rate or rate / 2, broker)
    # the recording spans 40 % of the run: replayed whole before the SIGKILL at 65 %; after
    # the restart the source (no cursor) starts it again: duplicates until ccbus stops
    feeds: list[Feed] = [WebhookFeed(rate), ReplayFeed(rate / 2, duration * 0.4), cvp]
    rules = write(workdir / "rules" / "forward.yaml", GOOD_RULES.format(port=receiver.port))
    config = write(workdir / "ccbus.yaml", json.dumps({
        "sources": {feed.name: feed.config(workdir) for feed in feeds},
        "rules": ["rules"], "state_dir": "state", "http": {"listen": f"127.0.0.1:{port}"},
        "delivery": {"backoff_initial": 0.2, "backoff_cap": 2, "attempts": 10_000},
    }))
    run: CcbusRun | None = None
    try:
        run = CcbusRun(config, workdir / "ccbus.log", duration, port)
        run.wait_ready()
        stop = threading.Event()
        threads = [threading.Thread(target=f.run, args=(stop, port), daemon=True) for f in feeds]
        for thread in threads:
            thread.start()
        brokers = BrokerFaults(broker, cvp, receiver, port)
        deliveries = Deliveries(receiver)
        drained = inject_faults(run, receiver, brokers, deliveries, feeds, rules)
        stop.set()
        for thread in threads:
            thread.join(30)
        run.note("feeds stopped")
        settle(run, deliveries, feeds)
        exit_code = run.terminate()
        return {**report(run, feeds, deliveries, brokers, exit_code),
                "receiver_outage_drained_s": drained}
    finally:
        if run is not None:
            run.close()
        receiver.stop()
        broker.stop()


def inject_faults(run: CcbusRun, receiver: HttpReceiver, brokers: BrokerFaults,
                  deliveries: Deliveries, feeds: list[Feed], rules: Path) -> float | None:
    """The faults, at fixed fractions of the duration, one at a time.

    The broker restart waits (until 45 % at most) for the calls held up by the
    receiver's outage to drain, so its recovery figures are its own.  Returns
    how long that drain took after the receiver came back (None: not by 45 %).
    """
    run.at(0.10)
    receiver.stop()
    run.note("receiver down")
    run.at(0.25)
    receiver.start()
    run.note("receiver up")
    back = time.monotonic()
    drained: list[float] = []

    def drained_and_due() -> bool:
        if not drained and deliveries.behind(feeds) == 0:
            drained.append(round(time.monotonic() - back, 1))
            run.note("calls held up by the outage delivered")
        return bool(drained) and time.monotonic() - run.began >= 0.30 * run.duration

    run.at(0.45, drained_and_due)
    run.note("broker restart (ccbus connected)")
    brokers.thread.start()
    run.at(0.50)
    brokers.thread.join(BrokerFaults.WITHIN * 2)  # done long ago, normally
    rules.write_text(BROKEN_RULES)
    run.proc.send_signal(signal.SIGHUP)
    run.note("SIGHUP with a broken rule file")
    run.at(0.55)
    write(rules, GOOD_RULES.format(port=receiver.port))
    run.proc.send_signal(signal.SIGHUP)
    run.note("SIGHUP with the good rule file")
    run.at(0.65)
    killed_at = run.kill()
    time.sleep(min(5.0, run.duration * 0.03))  # CVP events pile up in the broker meanwhile
    run.note("broker restart (ccbus down)")
    brokers.while_ccbus_down(killed_at)
    run.start()
    run.at(0.85)
    return drained[0] if drained else None


class Deliveries:
    """The receiver's calls counted by event id (read incrementally: polled often)."""

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self.counts: Counter[str] = Counter()
        self._read = 0

    def update(self) -> Counter[str]:
        requests = self.receiver.requests
        self.counts.update(delivered_id(r) for r in requests[self._read:])
        self._read = len(requests)
        return self.counts

    def behind(self, feeds: list[Feed], older_than: float = 2.0) -> int:
        """Events accepted more than ``older_than`` seconds ago and not delivered yet."""
        counts, now = self.update(), time.monotonic()
        return sum(1 for feed in feeds for eid, at in list(feed.accepted_at.items())
                   if now - at > older_than and not counts[eid])

    def missing(self, feeds: list[Feed]) -> int:
        counts = self.update()
        return sum(1 for feed in feeds for eid in feed.expected if not counts[eid])


def settle(run: CcbusRun, deliveries: Deliveries, feeds: list[Feed]) -> None:
    """Wait (bounded) until every expected delivery arrived."""
    deadline = time.monotonic() + max(60.0, run.duration * 0.5)
    while time.monotonic() < deadline and deliveries.missing(feeds):
        time.sleep(0.5)
    run.note("deliveries settled" if not deliveries.missing(feeds) else "gave up waiting")


def report(run: CcbusRun, feeds: list[Feed], deliveries: Deliveries, brokers: BrokerFaults,
           exit_code: int) -> dict[str, Any]:
    """Per feed: expected, delivered (distinct), lost, duplicates; RSS; broker recovery."""
    counts = deliveries.update()
    out: dict[str, Any] = {
        "duration_s": run.duration, "rates_per_s": {f.name: f.rate for f in feeds},
        "faults": run.faults, "ccbus_exit_code_after_sigterm": exit_code, "feeds": {},
    }
    for feed in feeds:
        out["feeds"][feed.name] = {
            "expected": len(feed.expected),
            "delivered_unique": sum(1 for k in feed.expected if counts[k]),
            "lost": sum(1 for k in feed.expected if not counts[k]),
            "duplicates": sum(counts[k] - 1 for k in feed.expected if counts[k] > 1),
        }
    out["lost"] = sum(f["lost"] for f in out["feeds"].values())
    out["duplicates"] = sum(f["duplicates"] for f in out["feeds"].values())
    mib = [m for _, m in run.rss]
    out["rss_mib"] = {"samples": len(mib), "first": round(mib[0], 1) if mib else None,
                      "min": round(min(mib), 1) if mib else None,
                      "max": round(max(mib), 1) if mib else None,
                      "last": round(mib[-1], 1) if mib else None}
    out["broker_restarts"] = brokers.figures
    out["broken_reload_kept_old_rules"] = (
        f"keeping its previous {GOOD_RULE_COUNT} rule(s)" in run.log.read_text())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="webhook events/s (default 20; the replay feed runs at half)")
    parser.add_argument("--cvp-rate", type=float, help="CVP events/s (default: half of --rate)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s soak %(name)s: %(message)s")
    # stomp.py repeats each refused connection of the simulator's; its own line says enough
    logging.getLogger("stomp.py").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="ccbus-soak-"))
    os.environ.setdefault("CCBUS_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = soak(args.duration, args.rate, workdir, args.cvp_rate)
    text = json.dumps(result, indent=2)
    print(text)
    print(f"work directory: {workdir}" + ("" if args.keep else " (removed)"))
    if args.json:
        args.json.write_text(text)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    sys.exit(1 if result["lost"] else 0)


if __name__ == "__main__":
    main()
