"""``ccbus tail`` against a real running bus: a ``ccbus run`` process fed over its webhook
source, and ``ccbus tail`` processes reading its ``/live/stream`` as an admin would.

The backlog first (the last ``-n`` events), then each new event as it arrives, one
line each; ``--type`` and ``--source`` filter; ``--json`` prints each whole envelope
as a JSON line; a configured secret never shows; when the bus restarts, tail
reconnects and goes on.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import answers, free_port, start_ccbus, wait_until, write

pytestmark = pytest.mark.slow

CCBUS = str(Path(sys.executable).parent / "ccbus")
TOKEN = "tail-test-token-0123456789"
SECRET = "tail-test-secret-9876543210"  # a rule secret: the bus redacts it wherever it shows


class Tail:
    """A ``ccbus tail`` process; its stdout lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "CCBUS_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen([CCBUS, "tail", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8").rstrip("\n"))

    def take(self, n: int, timeout: float = 30.0) -> list[str]:
        return [self.lines.get(timeout=timeout) for _ in range(n)]

    def nothing_more(self, wait: float = 1.0) -> bool:
        try:
            line = self.lines.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected line: {line}")

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err.decode("utf-8", "replace")


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    log = tmp_path / "ccbus.log"
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: call.*, do: [log: '{event.type}']}]\n")
    config = write(tmp_path / "ccbus.yaml", f"""
        sources:
          pbx: {{plugin: webhook, options: {{token: {TOKEN}}}}}
          crm: {{plugin: webhook, options: {{token: {TOKEN}}}}}
        secrets: {{crm-key: {SECRET}}}
        rules: [rules]
        state_dir: state
        http: {{listen: "127.0.0.1:{port}"}}
    """)
    proc = start_ccbus(config, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/readyz"), 60, "the listener", log)
        yield config, base, proc, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def send(base: str, source: str, *events: dict[str, object]) -> None:
    answer = httpx.post(f"{base}/events/{source}", json=list(events), timeout=10,
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 202, answer.text


def test_tail_follows_a_running_bus(
        bus: tuple[Path, str, subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    config, base, proc, log = bus
    for n in range(4):  # before tail starts: the backlog
        send(base, "pbx", {"type": "call.started", "id": f"early{n}", "subject": f"c{n}",
                           "data": {"caller": f"+3120555000{n}"}})

    plain = Tail("-c", str(config), "-n", "2")
    typed = Tail("-c", str(config), "--type", "agent.*", "--source", "crm", "--json", "-n", "0")
    try:
        first = plain.take(2)
        assert [line.split()[1:4] for line in first] == [
            ["pbx", "call.started", "c2"], ["pbx", "call.started", "c3"]], first
        assert first[1].endswith('{"caller":"+31205550003"}'), first
        plain.nothing_more()

        send(base, "crm", {"type": "agent.state_changed", "id": "a1", "subject": "agent-7",
                           "data": {"agentId": "7", "state": "break", "key": SECRET}})
        send(base, "pbx", {"type": "agent.state_changed", "id": "a2", "subject": "agent-8",
                           "data": {"agentId": "8", "state": "available"}})
        send(base, "crm", {"type": "call.ended", "id": "e1", "data": {"duration": 3}})
        lines = plain.take(3)
        assert [line.split()[1:3] for line in lines] == [
            ["crm", "agent.state_changed"], ["pbx", "agent.state_changed"], ["crm", "call.ended"]]
        assert lines[2].split()[3] == "-"  # no subject
        # a secret the bus knows is redacted in what it serves
        assert SECRET not in lines[0] and "agent-7" in lines[0]

        [doc] = [json.loads(line) for line in typed.take(1)]
        assert doc["type"] == "agent.state_changed" and doc["source"] == "crm"
        assert doc["id"] == "a1" and doc["subject"] == "agent-7"
        assert doc["data"]["agentId"] == "7" and SECRET not in doc["data"]["key"]
        assert doc["specversion"] == "1.0" and "receivedat" in doc
        typed.nothing_more()

        # the bus restarts: tail says so and follows the new one
        proc.terminate()
        assert proc.wait(30) == 0
        restarted = start_ccbus(config, log)
        try:
            wait_until(lambda: answers(f"{base}/readyz"), 60, "the restarted listener", log)
            wait_until(lambda: restarted.poll() is None and _sent_and_seen(base, plain), 60,
                       "tail to follow the restarted bus", log)
        finally:
            restarted.terminate()
            restarted.wait(30)
    finally:
        errors = plain.stop()
        typed.stop()
    assert "retrying" in errors, errors


def _sent_and_seen(base: str, tail: Tail) -> bool:
    """Send one event; True once tail printed it (tail may still be reconnecting)."""
    send(base, "pbx", {"type": "call.started", "id": "after-restart", "subject": "again"})
    try:
        while "again" not in tail.lines.get(timeout=2):
            pass
    except queue.Empty:
        return False
    return True


def test_tail_says_when_no_bus_answers(tmp_path: Path) -> None:
    port = free_port()
    config = write(tmp_path / "ccbus.yaml", f'http: {{listen: "127.0.0.1:{port}"}}\n')
    tail = Tail("-c", str(config))
    try:
        time.sleep(3)
        assert tail.proc.poll() is None  # still trying, like tail -f
    finally:
        errors = tail.stop()
    assert f"http://127.0.0.1:{port}/live/stream" in errors and "retrying" in errors, errors
