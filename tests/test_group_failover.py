"""Failover of a group of three real ``ccbus run`` processes on a real PostgreSQL.

A feeder posts numbered events to the webhook source of whichever member
answers 202 (a standby answers 503 and the feeder tries the next), as a
sender that retries until accepted does.  Every event makes one webhook call
to a local receiver that counts ``Idempotency-Key``s.  The leader is killed
(SIGKILL), and later frozen (SIGSTOP) for longer than the lease: nothing
accepted may be lost, and a call is made twice only with the same key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import postgres
import pytest
from http_receiver import HttpReceiver
from support import free_port

pg_dsn = postgres.pg_dsn  # the fixture: a private database per test

TTL = 3.0


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as r:
        yield r


FORWARD = """\
rules:
  - name: forward
    on: test.ping
    do:
      - webhook: {url: "HOOK", json: {n: "{n}"}}
"""


def member(tmp_path: Path, dsn: str, name: str, hook: str,
           rules: str = FORWARD) -> tuple[subprocess.Popen[bytes], int]:
    home = tmp_path / name
    (home / "rules").mkdir(parents=True)
    port = free_port()
    (home / "rules" / "rules.yaml").write_text(rules.replace("HOOK", hook))
    (home / "ccbus.yaml").write_text(f"""\
sources:
  hook: {{plugin: webhook, options: {{allow_unauthenticated: true}}}}
http: {{listen: "127.0.0.1:{port}"}}
cluster:
  dsn: "{dsn}"
  group: site-a
  instance: {name}
  lease_ttl: {TTL}s
  renew_every: 1s
""")
    log = (home / "stderr.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "ccbus", "run", "-c", str(home / "ccbus.yaml")],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def ready(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, {}


def post(port: int, n: int, kind: str = "test.ping", **data: object) -> bool:
    body = json.dumps({"id": f"ev-{n}", "type": kind, "source": "x",
                       "data": {"n": n, **data}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events/hook", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status == 202
    except (urllib.error.URLError, OSError):
        return False


def leader_of(ports: dict[str, int], timeout: float) -> tuple[str, float]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for name, port in ports.items():
            if ready(port)[0] == 200:
                return name, time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError("no leader")


@pytest.mark.slow
def test_kill_and_freeze_the_leader_nothing_lost(tmp_path: Path, pg_dsn: str,
                                                 receiver: HttpReceiver) -> None:
    hook = receiver.url_for("/hook")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    for name in ("a", "b", "c"):
        procs[name], ports[name] = member(tmp_path, pg_dsn, name, hook)
    try:
        leader, _ = leader_of(ports, 60)
        standby = next(n for n in ports if n != leader)
        for _ in range(300):  # it may still be starting, or in its first lease round
            code, doc = ready(ports[standby])
            if code == 503 and "nobody" not in str(doc.get("reason")):
                break
            time.sleep(0.1)
        assert code == 503 and doc["reason"] == f"standby of group site-a, leader is {leader}"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[standby]}/healthz") as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[leader]}/metrics") as r:
            text = r.read().decode()
        assert f'ccbus_cluster_leader{{group="site-a",instance="{leader}"}} 1' in text

        accepted: list[int] = []
        n = 0
        failovers: list[float] = []
        kills: list[float] = []  # wall-clock times of the SIGKILL and SIGSTOP
        woke = 0.0  # when the frozen leader was woken up

        def feed(count: int) -> None:
            nonlocal n
            for _ in range(count):
                n += 1
                deadline = time.monotonic() + 60
                while not any(post(ports[m], n) for m in ports if procs[m].poll() is None):
                    assert time.monotonic() < deadline, f"event {n} never accepted"
                    time.sleep(0.05)
                accepted.append(n)

        feed(30)
        for how in (signal.SIGKILL, signal.SIGSTOP):
            old = leader
            os.kill(procs[old].pid, how)
            killed_at = time.monotonic()
            kills.append(time.time())
            alive = {m: p for m, p in ports.items() if m != old}
            leader, _ = leader_of(alive, 60)
            failovers.append(time.monotonic() - killed_at)
            feed(30)
            if how == signal.SIGSTOP:
                time.sleep(TTL)
                os.kill(procs[old].pid, signal.SIGCONT)  # wakes up fenced, must not lead
                woke = time.time()
                time.sleep(3)
                assert ready(ports[old])[0] == 503
                feed(10)
        receiver.wait_for(len(accepted), timeout=60)
        time.sleep(2)
        requests = receiver.requests
        keys = Counter(r.headers["idempotency-key"] for r in requests)
        numbers = {int(r.json()["n"]) for r in requests}
        assert set(accepted) - numbers == set()  # nothing accepted was lost
        assert len(keys) == len(numbers)  # a call made twice carries the same key
        twice = {k for k, c in keys.items() if c > 1}
        # in flight at a kill: an attempt reached the receiver just before the kill, or
        # the frozen leader finished a call it had started as soon as it woke up
        def attempts(key: str) -> list[float]:
            return [r.time for r in requests if r.headers["idempotency-key"] == key]

        in_flight = {k for k in twice
                     if any(kill - 1.0 <= t <= kill + 0.05 for t in attempts(k) for kill in kills)
                     or any(woke <= t <= woke + 1.5 for t in attempts(k))}
        detail = {k: ([round(r.time - kills[-1], 2) for r in requests
                       if r.headers["idempotency-key"] == k]) for k in twice - in_flight}
        assert twice - in_flight == set(), (detail, [round(k - kills[-1], 2) for k in kills],
                                            round(woke - kills[-1], 2))
        assert all(f <= TTL + 3 for f in failovers), failovers  # within the lease (+ a poll)
        print(f"events {len(accepted)}, failover seconds {[round(f, 2) for f in failovers]}, "
              f"duplicates in flight at a kill {len(in_flight)}, others {len(twice - in_flight)}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(10)


STATEFUL = """\
rules:
  - name: stuck
    on: agent.state
    if: state == "NOT_READY"
    for: {per: agent, duration: 4s}
    do:
      - webhook: {url: "HOOK", json: {rule: stuck, agent: "{agent}"}}
  - name: surge
    on: call.abandoned
    count: {per: queue, at_least: 2, within: 10m}
    do:
      - webhook: {url: "HOOK", json: {rule: surge, queue: "{queue}"}}
  - name: once
    on: system.alert
    throttle: {per: host, at_most: 1, every: 10m}
    do:
      - webhook: {url: "HOOK", json: {rule: once, host: "{host}"}}
"""


@pytest.mark.slow
def test_rule_state_and_timers_survive_a_killed_leader(tmp_path: Path, pg_dsn: str,
                                                        receiver: HttpReceiver) -> None:
    """count, throttle and a for: timer that falls due while the leader is down."""
    hook = receiver.url_for("/hook")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    for name in ("a", "b"):
        procs[name], ports[name] = member(tmp_path, pg_dsn, name, hook, STATEFUL)
    try:
        leader, _ = leader_of(ports, 60)
        assert post(ports[leader], 1, "agent.state", agent="1001", state="NOT_READY")
        assert post(ports[leader], 2, "call.abandoned", queue="sales")
        assert post(ports[leader], 3, "system.alert", host="cvp1")
        receiver.wait_for(1, timeout=20)  # the throttled rule's first firing
        time.sleep(2.5)  # rule state is written behind, about once a second
        os.kill(procs[leader].pid, signal.SIGKILL)
        killed = time.time()
        other = next(n for n in ports if n != leader)
        leader_of({other: ports[other]}, 60)  # the timer fell due during the gap
        assert post(ports[other], 4, "call.abandoned", queue="sales")  # 2nd of the window
        assert post(ports[other], 5, "system.alert", host="cvp1")  # still throttled
        receiver.wait_for(3, timeout=30)
        time.sleep(2)
        calls = [(r.json()["rule"], r.headers["idempotency-key"], r.time) for r in receiver.requests]
        rules = sorted(c[0] for c in calls)
        assert rules == ["once", "stuck", "surge"], calls
        stuck = next(c for c in calls if c[0] == "stuck")
        assert stuck[1] == "hook/ev-1:stuck:0", stuck  # the key the old leader would have used
        assert stuck[2] - killed <= TTL + 4, "the overdue timer fired at once on takeover"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_the_database_goes_away_and_comes_back(tmp_path: Path, receiver: HttpReceiver) -> None:
    """Stop PostgreSQL under the leader (immediate: a crash), then start it again."""
    server = postgres.PrivateServer(free_port())
    server.start()
    hook = receiver.url_for("/hook")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    try:
        for name in ("a", "b"):
            procs[name], ports[name] = member(tmp_path, server.dsn, name, hook)
        leader_of(ports, 60)
        accepted: list[int] = []

        def feed(first: int, count: int) -> None:
            for n in range(first, first + count):
                deadline = time.monotonic() + 90
                while not any(post(port, n) for port in ports.values()):
                    assert time.monotonic() < deadline, f"event {n} never accepted"
                    time.sleep(0.1)
                accepted.append(n)

        feed(1, 20)
        server.stop("immediate")
        stopped = time.monotonic()
        while any(ready(port)[0] == 200 for port in ports.values()):
            assert time.monotonic() - stopped <= TTL + 1, "a leader kept leading without its lease"
            time.sleep(0.1)
        for _ in range(100):  # the next lease round finds the database gone and says so
            reasons = [str(ready(port)[1].get("reason")) for port in ports.values()]
            if all("unreachable" in r for r in reasons):
                break
            time.sleep(0.1)
        assert all(f"database postgresql://postgres@127.0.0.1:{server.port}/postgres unreachable"
                   in r for r in reasons), reasons
        server.start()
        leader_of(ports, 60)
        feed(21, 20)
        deadline = time.monotonic() + 60
        while True:  # every accepted event's call arrives (duplicates aside)
            numbers = {int(r.json()["n"]) for r in receiver.requests}
            if not set(accepted) - numbers or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(accepted) - numbers == set()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        server.remove()
