"""No single event, rule or viewer may stall the event loop (issue #18, section 3).

Against a real ``ccbus run`` over loopback:

* attack rules (sixty near-limit regular expressions in a condition, a hundred
  in a template, patterns and texts from the event that used to compile for
  seconds or grow without bound) and a stream of attack events: ``/healthz``
  keeps answering, another source's events keep flowing, the refusals are
  counted in ``/metrics`` and the process's memory stays bounded;
* live-view clients that connect and never read a byte: the bus routes as
  fast as with nobody watching, and the records they miss are counted.

``bench/attack_bench.py`` measures the same with figures (bench/README.md).
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from support import answers, free_port, start_ccbus, wait_until, write

TOKEN = "attack-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

RULES = f"""
rules:
  - name: attack-condition
    on: attack.*
    if: {" or ".join(["matches(slow, s) == 7"] * 60)}
    do: [log: "never"]
  - name: attack-template
    on: attack.*
    do:
      - log: "{"".join(["{matches(slow, s)}"] * 100)}"
  - name: attack-pattern
    on: attack.*
    if: matches(patterns[0], "xx") or matches(patterns[1], "xx") or matches(patterns[2], "xx")
    do: [log: "never"]
  - name: attack-growth
    on: attack.*
    do:
      - log: "{{len(sub('(?=(.*))', '\\\\1', s))}}"
      - log: "{{len(big.upper().upper().upper())}} {{len(commas.split(','))}}"
  - name: calm
    on: calm.*
    do: [log: "calm {{n}}"]
"""

ATTACK = {
    "slow": r"^(\w+\s?)*$",
    "s": "a" * 3000 + "!",
    "patterns": ["(?:x{65535}){65535}", "x{4294967294}", "(a{1000}|b{1000}){1000}"],
    "big": "\u0390" * 40_000,
    "commas": "," * 20_000,
}


def start(tmp_path: Path) -> tuple[str, int, Path, object]:
    port = free_port()
    log = tmp_path / "ccbus.log"
    write(tmp_path / "rules" / "attack.yaml", RULES)
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          attack: {{plugin: webhook, options: {{token: {TOKEN}}}}}
          calm: {{plugin: webhook, options: {{token: {TOKEN}}}}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}"}}
    """)
    proc = start_ccbus(config, log)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{base}/readyz"), 60, "ccbus to be ready", log)
    return base, port, log, proc


def metric(base: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", timeout=60).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.slow
def test_attack_rules_and_events_are_bounded_and_other_events_keep_flowing(
    tmp_path: Path,
) -> None:
    base, _, log, proc = start(tmp_path)
    stop = threading.Event()
    health: list[float] = []
    sent = [0]
    refused: list[str] = []

    def attacker() -> None:
        body = json.dumps([{"type": "attack.probe", "data": ATTACK}] * 5,
                          ensure_ascii=False).encode()
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                answer = client.post(f"{base}/events/attack", content=body,
                                     headers={**AUTH, "Content-Type": "application/json"})
                if answer.status_code != 202:
                    refused.append(answer.text)
                    return
                sent[0] += 5

    def prober() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                began = time.perf_counter()
                client.get(f"{base}/healthz").raise_for_status()
                health.append(time.perf_counter() - began)
                stop.wait(0.1)

    threads = [threading.Thread(target=attacker), threading.Thread(target=prober)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: sent[0] >= 10 or refused, 60, "the attack to be under way", log)
        calm = []
        rss = []
        with httpx.Client(timeout=60) as client:
            for n in range(40):
                began = time.perf_counter()
                answer = client.post(f"{base}/events/calm", headers=AUTH,
                                     json={"type": "calm.tick", "data": {"n": n}})
                assert answer.status_code == 202, answer.text
                calm.append(time.perf_counter() - began)
                rss.append(rss_mb(proc.pid))  # type: ignore[attr-defined]
                time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    try:
        assert not refused, refused
        assert sent[0] >= 20, sent  # the attack ran all along
        # the loop answered all along: before the budget, one attack event held it for
        # seconds.  The median is the claim (within 250 ms); the maximum is generous,
        # because this machine's other work can delay any one answer.
        assert len(health) >= 10
        assert statistics.median(health) < 0.25, sorted(health)[-5:]
        assert max(health) < 2.0, sorted(health)[-5:]
        assert statistics.median(calm) < 0.5 and max(calm) < 5.0, sorted(calm)[-5:]
        assert max(rss) < 200, max(rss)
        # calm events routed as ever; the attack rules refused, each counted
        assert metric(base, "ccbus_rule_matches_total", rule="calm") == 40
        assert metric(base, "ccbus_rule_errors_total", rule="attack-condition",
                      kind="over_budget") > 0
        assert metric(base, "ccbus_rule_errors_total", kind="over_budget") >= sent[0]
        assert metric(base, "ccbus_rule_matches_total", rule="attack-condition") == 0
        assert proc.poll() is None  # type: ignore[attr-defined]
        text = log.read_text()
        assert "used up its budget of 50 ms" in text and "attack.probe" in text
        assert text.count("rule attack-condition") == 1  # once a minute, not per event
    finally:
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait(30)  # type: ignore[attr-defined]


def never_reading(port: int, count: int) -> list[socket.socket]:
    viewers = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /live/stream HTTP/1.1\r\nHost: test\r\n\r\n")
        viewers.append(sock)
    return viewers


def post_calm(base: str, first: int, count: int) -> float:
    began = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for n in range(first, first + count):
            answer = client.post(f"{base}/events/calm", headers=AUTH,
                                 json={"type": "calm.tick", "data": {"n": n}})
            assert answer.status_code == 202, answer.text
    return time.perf_counter() - began


@pytest.mark.slow
def test_live_viewers_that_never_read_do_not_slow_the_bus(tmp_path: Path) -> None:
    base, port, log, proc = start(tmp_path)
    viewers: list[socket.socket] = []
    try:
        post_calm(base, 0, 50)  # warm up
        alone = post_calm(base, 100, 300)
        viewers = never_reading(port, 200)
        wait_until(lambda: metric(base, "ccbus_live_subscribers") == 200, 60,
                   "the viewers to connect", log)
        watched = post_calm(base, 1000, 300)
        # before: every record woke every viewer's task, and 300 events took ~10x as long
        assert watched < 3 * alone + 2.0, (alone, watched)
        post_calm(base, 2000, 1500)  # their sockets are full by now: records are dropped
        assert metric(base, "ccbus_live_dropped_total") > 0
        assert metric(base, "ccbus_live_subscribers") == 200
        assert answers(f"{base}/healthz")
    finally:
        for sock in viewers:
            sock.close()
        proc.terminate()  # type: ignore[attr-defined]
        proc.wait(30)  # type: ignore[attr-defined]
