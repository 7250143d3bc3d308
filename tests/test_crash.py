"""kill -9 with calls pending loses nothing: the outbox delivers them after a restart.

A real ``ccbus run`` process receives events over HTTP (the ``webhook``
source) and forwards each to a receiver with the ``webhook`` action.  The
receiver is down; ccbus is killed with SIGKILL while every call waits;
ccbus starts again, still against the dead receiver; the receiver comes up
1.5 s later (the order the issue gives); every call arrives.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from http_receiver import HttpReceiver
from support import answers, free_port, start_ccbus, wait_until, write

EVENTS = 40


def healthy(port: int) -> bool:
    return answers(f"http://127.0.0.1:{port}/healthz")


def pending(state: Path) -> int:
    return outbox(state)[0]


def outbox(state: Path) -> tuple[int, int]:
    """Calls in the outbox, and the attempts made on them so far."""
    path = state / "delivery.sqlite3"
    if not path.exists():
        return 0, 0
    with sqlite3.connect(path) as db:
        count, attempts = db.execute("SELECT count(*), total(attempts) FROM outbox").fetchone()
        return int(count), int(attempts)


@pytest.mark.slow
def test_sigkill_with_pending_calls_loses_nothing(tmp_path: Path) -> None:
    inbound, outbound = free_port(), free_port()
    state = tmp_path / "state"
    log = tmp_path / "ccbus.log"
    write(tmp_path / "rules" / "forward.yaml", f"""
        rules:
          - name: forward
            on: crash.*
            do:
              - webhook: {{url: "http://127.0.0.1:{outbound}/in", json: {{n: "{{n}}"}}}}
    """)
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          in: {{plugin: webhook, options: {{token: crash-test-token}}}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{inbound}"}}
        delivery: {{backoff_initial: 0.2, backoff_cap: 0.5, attempts: 1000}}
    """)

    first = start_ccbus(config, log)
    try:
        wait_until(lambda: healthy(inbound), 20, "ccbus to listen", log)
        with httpx.Client() as client:
            for n in range(EVENTS):
                answer = client.post(
                    f"http://127.0.0.1:{inbound}/events/in",
                    headers={"Authorization": "Bearer crash-test-token"},
                    json={"type": "crash.Test", "id": f"e{n}", "data": {"n": n}},
                )
                assert answer.status_code == 202, answer.text
        # accepted means recorded: the source answers after the calls are in the outbox
        assert pending(state) == EVENTS
        time.sleep(1.0)  # let a few retries fail against the dead receiver
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    assert pending(state) == EVENTS, "the killed process must leave every call recorded"
    _, attempts_before = outbox(state)

    second = start_ccbus(config, log)
    receiver = HttpReceiver(port=outbound)
    try:
        wait_until(lambda: healthy(inbound), 20, "ccbus to listen again", log)
        time.sleep(1.5)  # the restarted ccbus retries against the dead receiver a while
        count, attempts = outbox(state)
        assert count == EVENTS and attempts > attempts_before  # it did retry, and failed
        receiver.start()
        wait_until(lambda: len({r.headers.get("idempotency-key")
                                for r in receiver.requests}) >= EVENTS,
                   30, "every call to arrive", log)
        wait_until(lambda: pending(state) == 0, 10, "the outbox to empty", log)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
        receiver.stop()
    keys = {r.headers["idempotency-key"] for r in receiver.requests}
    numbers = sorted(r.json()["n"] for r in receiver.requests)
    expected = {f"in/e{n}:forward:0" for n in range(EVENTS)}
    lost = expected - keys
    assert lost == set(), f"lost {len(lost)} deliveries: {sorted(lost)[:5]}"
    assert set(numbers) == set(range(EVENTS))
    assert second.returncode == 0
