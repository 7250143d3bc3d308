"""Attack benchmark: a real ``ccbus run`` under the attacks of issue #18, section 3.

Two parts, each against a ``ccbus run`` process started here (built-in plugins
only, two webhook sources ``attack`` and ``calm``, the rules of
:func:`attack_rules`):

* **slow viewers**: the seconds 500 ``calm`` events take (one POST each, one
  after the other), first with nobody watching the live view, then with 300
  ``/live/stream`` clients connected that never read a byte (small receive
  buffers, so their sockets fill at once).  The bus must not notice them:
  their records are dropped (``ccbus_live_dropped_total``).
* **attack rules**: for ``--seconds``, one thread POSTs ``attack`` events (a
  JSON list of 20 per request) whose data makes every attack rule as costly
  as it can be; meanwhile one thread asks ``/healthz`` every 100 ms, one POSTs
  a ``calm`` event every 50 ms, and the process's RSS is sampled.  Targets:
  ``/healthz`` always answers within 250 ms, calm events keep flowing, RSS
  stays under 200 MB.

    .venv/bin/python bench/attack_bench.py [--seconds 20] [--viewers 300] [--json out.json]

A benchmark, not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx

CCBUS = str(Path(sys.executable).parent / "ccbus")
TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
#: Attack events per request (the webhook source takes a JSON list).
BATCH = 5

#: What the attack events carry: each field feeds one attack rule.
ATTACK_DATA: dict[str, Any] = {
    # a backtracking pattern that runs just under the per-call regex timeout
    "slow": r"^(\w+\s?)*$",
    "s": "a" * 3000 + "!",
    # patterns from event data that used to stall the loop or blow up memory
    "patterns": ["(?:x{65535}){65535}", "x{4294967294}", "(a{1000}|b{1000}){1000}"],
    # upper() three times: some characters become three
    "big": "\u0390" * 40_000,
    # split() into more items than the list limit
    "commas": "," * 20_000,
}


def attack_rules() -> str:
    """The rules of the attack: sixty regex calls in a condition, a hundred in a
    template, patterns from the event, ``sub()`` and methods that outgrow their input."""
    condition = " or ".join(["matches(slow, s) == 7"] * 60)
    holes = "".join(["{matches(slow, s)}"] * 100)
    return textwrap.dedent(f"""\
        rules:
          - name: attack-condition
            on: attack.*
            if: {condition}
            do: [log: "never"]
          - name: attack-template
            on: attack.*
            do:
              - log: "{holes}"
          - name: attack-pattern-0
            on: attack.*
            if: matches(patterns[0], "xx")
            do: [log: "never"]
          - name: attack-pattern-1
            on: attack.*
            if: matches(patterns[1], "xx")
            do: [log: "never"]
          - name: attack-pattern-2
            on: attack.*
            if: matches(patterns[2], "xx")
            do: [log: "never"]
          - name: attack-sub
            on: attack.*
            do:
              - log: "{{len(sub('(?=(.*))', '\\\\1', s))}}"
          - name: attack-methods
            on: attack.*
            do:
              - log: "{{len(big.upper().upper().upper())}}"
              - log: "{{len(commas.split(','))}}"
          - name: calm
            on: calm.*
            do: [log: "calm {{n}}"]
        """)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Ccbus:
    """A ``ccbus run`` in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (root / "rules").mkdir()
        (root / "rules" / "attack.yaml").write_text(attack_rules())
        (root / "ccbus.yaml").write_text(textwrap.dedent(f"""\
            sources:
              attack: {{plugin: webhook, options: {{token: {TOKEN}}}}}
              calm: {{plugin: webhook, options: {{token: {TOKEN}}}}}
            rules: [rules]
            state_dir: state
            http: {{listen: 127.0.0.1:{self.port}}}
            log_level: warning
            """))
        self.log = root / "ccbus.log"
        env = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1"}
        self.process = subprocess.Popen(
            [CCBUS, "run", "-c", str(root / "ccbus.yaml")],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"ccbus did not start:\n{self.log.read_text()[-3000:]}")

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.base}/metrics", timeout=30).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def post_calm(client: httpx.Client, base: str, count: int, start: int = 0) -> float:
    began = time.perf_counter()
    for n in range(start, start + count):
        response = client.post(f"{base}/events/calm", headers=HEADERS,
                               json={"type": "calm.tick", "id": f"c{n}", "data": {"n": n}})
        response.raise_for_status()
    return time.perf_counter() - began


def never_reading_viewers(port: int, count: int) -> list[socket.socket]:
    """``count`` ``/live/stream`` requests whose clients never read the answer."""
    viewers = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /live/stream HTTP/1.1\r\nHost: bench\r\n\r\n")
        viewers.append(sock)
    return viewers


def slow_viewers(bus: Ccbus, viewers: int, events: int) -> dict[str, Any]:
    with httpx.Client(timeout=120) as client:
        post_calm(client, bus.base, 50, start=10_000_000)  # warm up
        alone = post_calm(client, bus.base, events, start=0)
        sockets = never_reading_viewers(bus.port, viewers)
        time.sleep(2.0)  # let them connect and fill their buffers with the backlog
        watched = post_calm(client, bus.base, events, start=events)
        subscribers = bus.metric("ccbus_live_subscribers")
        # enough records to fill the viewers' sockets and the feed's ring: now they lose some
        post_calm(client, bus.base, 4 * events, start=2 * events)
        dropped = bus.metric("ccbus_live_dropped_total")
    for sock in sockets:
        sock.close()
    return {"events": events, "viewers": viewers, "seconds_alone": round(alone, 2),
            "seconds_with_viewers": round(watched, 2), "ratio": round(watched / alone, 2),
            "subscribers_seen": int(subscribers), "live_dropped": int(dropped)}


def attack(bus: Ccbus, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    health: list[float] = []
    health_failures: list[str] = []
    calm: list[float] = []
    attacks = [0]
    attack_failures: list[str] = []
    rss: list[float] = []

    def attacker() -> None:
        batch = [{"type": "attack.probe", "data": ATTACK_DATA} for _ in range(BATCH)]
        body = json.dumps(batch, ensure_ascii=False).encode()
        with httpx.Client(timeout=300) as client:
            while not stop.is_set():
                response = client.post(f"{bus.base}/events/attack", content=body,
                                       headers={**HEADERS, "Content-Type": "application/json"})
                if response.status_code != 202:
                    attack_failures.append(f"{response.status_code} {response.text[:200]}")
                    stop.wait(1.0)
                    continue
                attacks[0] += len(batch)

    def prober() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    client.get(f"{bus.base}/healthz").raise_for_status()
                    health.append(time.perf_counter() - began)
                except httpx.HTTPError as err:
                    health_failures.append(repr(err))
                stop.wait(0.1)

    def calm_source() -> None:
        with httpx.Client(timeout=30) as client:
            n = 20_000_000
            while not stop.is_set():
                n += 1
                began = time.perf_counter()
                post_calm(client, bus.base, 1, start=n)
                calm.append(time.perf_counter() - began)
                stop.wait(0.05)

    threads = [threading.Thread(target=t, daemon=True) for t in (attacker, prober, calm_source)]
    rss_before = rss_mb(bus.process.pid)
    for thread in threads:
        thread.start()
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        rss.append(rss_mb(bus.process.pid))
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(60)
    over_budget = 0.0
    text = httpx.get(f"{bus.base}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("ccbus_rule_errors_total") and 'kind="over_budget"' in line:
            over_budget += float(line.rsplit(" ", 1)[1])
    health.sort()
    calm.sort()
    return {
        "seconds": seconds,
        "attack_events": attacks[0],
        "attack_refused": attack_failures[:3],
        "healthz_answers": len(health),
        "healthz_failures": len(health_failures),
        "healthz_p50_ms": round(statistics.median(health) * 1000, 1) if health else None,
        "healthz_max_ms": round(health[-1] * 1000, 1) if health else None,
        "calm_events": len(calm),
        "calm_p50_ms": round(statistics.median(calm) * 1000, 1) if calm else None,
        "calm_max_ms": round(calm[-1] * 1000, 1) if calm else None,
        "rss_before_mb": round(rss_before, 1),
        "rss_max_mb": round(max(rss), 1),
        "over_budget": int(over_budget),
        "alive": bus.process.poll() is None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the attack runs")
    parser.add_argument("--viewers", type=int, default=300, help="live viewers that never read")
    parser.add_argument("--events", type=int, default=500, help="calm events timed per run")
    parser.add_argument("--only", choices=("viewers", "attack"), help="run one part")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"host": platform.node(), "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "viewers"):
            (Path(tmp) / "viewers").mkdir()
            bus = Ccbus(Path(tmp) / "viewers")
            try:
                results["slow_viewers"] = slow_viewers(bus, args.viewers, args.events)
            finally:
                bus.stop()
        if args.only in (None, "attack"):
            (Path(tmp) / "attack").mkdir()
            bus = Ccbus(Path(tmp) / "attack")
            try:
                results["attack"] = attack(bus, args.seconds)
            finally:
                bus.stop()
    print(f"load average {results['load']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ok = True
    if "slow_viewers" in results:
        ok &= report_viewers(results["slow_viewers"])
    if "attack" in results:
        ok &= report_attack(results["attack"])
    print("\nPASS" if ok else "\nBELOW TARGET")
    return 0


def report_viewers(viewers: dict[str, Any]) -> bool:
    print(f"\nslow viewers: {viewers['events']} calm events, one POST each")
    print(f"  nobody watching            {viewers['seconds_alone']:8.2f} s")
    print(f"  {viewers['viewers']} never-reading viewers  {viewers['seconds_with_viewers']:8.2f} s"
          f"  (x{viewers['ratio']}; {viewers['subscribers_seen']} connected)")
    print(f"  live records dropped for them after {5 * viewers['events']} more events:"
          f" {viewers['live_dropped']}")
    return bool(viewers["ratio"] <= 2.0)


def report_attack(attacked: dict[str, Any]) -> bool:
    a = attacked
    print(f"\nattack rules for {a['seconds']:g} s: {a['attack_events']} attack events")
    print(f"  /healthz   {a['healthz_answers']} answers, p50 {a['healthz_p50_ms']} ms,"
          f" max {a['healthz_max_ms']} ms, {a['healthz_failures']} failures")
    print(f"  calm       {attacked['calm_events']} events, p50 {attacked['calm_p50_ms']} ms,"
          f" max {attacked['calm_max_ms']} ms")
    print(f"  RSS        {attacked['rss_before_mb']} MB before, {attacked['rss_max_mb']} MB max")
    print(f"  over budget (rule evaluations/renders cut short): {attacked['over_budget']}")
    if a["attack_refused"]:
        print(f"  attack requests refused: {a['attack_refused']}")
    return bool(
        attacked["alive"]
        and attacked["healthz_failures"] == 0
        and not attacked["attack_refused"]
        and attacked["healthz_max_ms"] is not None and attacked["healthz_max_ms"] < 250
        and attacked["calm_events"] > 0
        and attacked["rss_max_mb"] < 200
    )


if __name__ == "__main__":
    raise SystemExit(main())
