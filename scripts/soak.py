#!/usr/bin/env python3
"""Soak and fault test: events at a steady rate through a real ``ccbus run`` while things break.

Feeds push events at a steady rate; one rule forwards every event to a local
HTTP receiver with the ``webhook`` action.  Meanwhile the script:

1. stops the receiver for a while (calls retry, then arrive),
2. sends SIGHUP with a broken rule file (the old rules must keep running),
   then with a good one,
3. SIGKILLs ccbus and starts it again (the outbox must deliver what was pending).

At the end it reports, per feed: events accepted, deliveries expected and
received, **lost** (expected and never delivered: must be 0) and duplicates
(delivered more than once: allowed, counted), plus ccbus's RSS sampled every
few seconds.  Exit status 1 when anything was lost.

Feeds are small classes with one job (``config()`` names the source,
``run()`` produces events, ``expected`` lists what must arrive), so a feed
over another transport drops in next to these two::

    class CvpStompFeed(Feed):          # when ccbus-cisco-cvp lands: publish CVP
        name = "cvp"                   # events to ActiveMQ over STOMP, restart the
        ...                            # broker as one more fault

Run::

    .venv/bin/python scripts/soak.py --duration 300 --rate 50
    .venv/bin/python scripts/soak.py --duration 30 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from http_receiver import HttpReceiver  # noqa: E402
from support import answers, free_port, start_ccbus, wait_until, write  # noqa: E402

TOKEN = "soak-test-token"
GOOD_RULES = """
rules:
  - name: forward
    on: soak.*
    do:
      - webhook: {{url: "http://127.0.0.1:{port}/in", json: {{id: "{{event.id}}"}}}}
"""
BROKEN_RULES = "rules:\n  - name: forward\n    on: soak.*\n    do: [webhook: {url: 42}]\n"


class Feed:
    """A source of events for the soak: its config, its producer, what must arrive."""

    name = "feed"

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.expected: set[str] = set()

    def config(self, workdir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, stop: threading.Event, port: int) -> None:
        """Produce events until ``stop`` (in a thread)."""


class WebhookFeed(Feed):
    """POSTs events to the inbound webhook source; 202 means recorded, so it then counts."""

    name = "webhook"

    def config(self, workdir: Path) -> dict[str, Any]:
        return {"plugin": "webhook", "options": {"token": TOKEN}}

    def run(self, stop: threading.Event, port: int) -> None:
        n = 0
        url = f"http://127.0.0.1:{port}/events/{self.name}"
        with httpx.Client(timeout=5) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                event_id = f"w{n}"
                try:
                    answer = client.post(url, headers={"Authorization": f"Bearer {TOKEN}"},
                                         json={"type": "soak.webhook", "id": event_id})
                    accepted = answer.status_code == 202
                except httpx.HTTPError:
                    accepted = False  # ccbus is down (killed): send it again later
                if accepted:
                    self.expected.add(event_id)
                    n += 1
                    next_at += 1 / self.rate
                else:
                    next_at = time.monotonic() + 0.2
                stop.wait(max(0.0, next_at - time.monotonic()))


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


def soak(duration: float, rate: float, workdir: Path) -> dict[str, Any]:
    receiver_port, port = free_port(), free_port()
    # the recording spans 40 % of the run: replayed once before the SIGKILL at 65 %,
    # and once more, whole, after the restart (well before the wait for deliveries ends)
    feeds: list[Feed] = [WebhookFeed(rate), ReplayFeed(rate / 2, duration * 0.4)]
    rules = workdir / "rules" / "forward.yaml"
    write(rules, GOOD_RULES.format(port=receiver_port))
    sources = {feed.name: feed.config(workdir) for feed in feeds}
    config = write(workdir / "ccbus.yaml", json.dumps({
        "sources": sources, "rules": ["rules"], "state_dir": "state",
        "http": {"listen": f"127.0.0.1:{port}"},
        "delivery": {"backoff_initial": 0.2, "backoff_cap": 2, "attempts": 10_000},
    }))
    log = workdir / "ccbus.log"
    receiver = HttpReceiver(port=receiver_port).start()
    proc = start_ccbus(config, log)
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 60, "ccbus to start", log)
    stop = threading.Event()
    threads = [threading.Thread(target=f.run, args=(stop, port), daemon=True) for f in feeds]
    for thread in threads:
        thread.start()

    rss: list[tuple[float, float]] = []
    faults: list[str] = []
    began = time.monotonic()

    def at(fraction: float) -> None:
        """Sleep until ``fraction`` of the duration, sampling RSS on the way."""
        while (elapsed := time.monotonic() - began) < fraction * duration:
            if not rss or elapsed - rss[-1][0] >= 2.0:
                try:
                    rss.append((elapsed, psutil.Process(proc.pid).memory_info().rss / 2**20))
                except psutil.Error:
                    pass
            time.sleep(0.2)

    def note(text: str) -> None:
        faults.append(f"{time.monotonic() - began:6.1f}s {text}")

    at(0.15)
    receiver.stop()
    note("receiver down")
    at(0.30)
    receiver.start()
    note("receiver up")
    at(0.40)
    rules.write_text(BROKEN_RULES)
    proc.send_signal(signal.SIGHUP)
    note("SIGHUP with a broken rule file")
    at(0.45)
    write(rules, GOOD_RULES.format(port=receiver_port))
    proc.send_signal(signal.SIGHUP)
    note("SIGHUP with the good rule file")
    at(0.65)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    note("SIGKILL")
    time.sleep(min(5.0, duration * 0.03))
    proc = start_ccbus(config, log)
    note("restarted")
    at(0.85)
    stop.set()
    for thread in threads:
        thread.join(30)
    note("feeds stopped")
    expected = {f"{eid}:forward:0" for feed in feeds for eid in feed.expected}

    def delivered() -> Counter[str]:
        return Counter(r.headers.get("idempotency-key", "") for r in receiver.requests)

    deadline = time.monotonic() + max(60.0, duration * 0.5)
    while time.monotonic() < deadline and not expected <= set(delivered()):
        time.sleep(0.5)
    note("deliveries settled" if expected <= set(delivered()) else "gave up waiting")
    proc.send_signal(signal.SIGTERM)
    exit_code = proc.wait(60)
    receiver.stop()

    counts = delivered()
    report: dict[str, Any] = {"duration_s": duration, "rate_per_s": rate, "faults": faults,
                              "ccbus_exit_code_after_sigterm": exit_code, "feeds": {}}
    for feed in feeds:
        keys = {f"{eid}:forward:0" for eid in feed.expected}
        report["feeds"][feed.name] = {
            "accepted": len(feed.expected),
            "delivered_unique": len(keys & set(counts)),
            "lost": len(keys - set(counts)),
            "duplicates": sum(counts[k] - 1 for k in keys if counts[k] > 1),
        }
    report["lost"] = sum(f["lost"] for f in report["feeds"].values())
    report["duplicates"] = sum(f["duplicates"] for f in report["feeds"].values())
    mib = [m for _, m in rss]
    report["rss_mib"] = {"samples": len(mib), "first": round(mib[0], 1) if mib else None,
                         "max": round(max(mib), 1) if mib else None,
                         "last": round(mib[-1], 1) if mib else None}
    report["broken_reload_kept_old_rules"] = "keeping its previous 1 rule(s)" in log.read_text()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--rate", type=float, default=20.0, help="webhook events/s (default 20)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ccbus-soak-"))
    os.environ.setdefault("CCBUS_DISABLE_PLUGIN_AUTOLOAD", "1")
    report = soak(args.duration, args.rate, workdir)
    text = json.dumps(report, indent=2)
    print(text)
    print(f"work directory: {workdir}" + ("" if args.keep else " (removed)"))
    if args.json:
        args.json.write_text(text)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    sys.exit(1 if report["lost"] else 0)


if __name__ == "__main__":
    main()
