"""SIGKILL mid-stream loses nothing: an offset is committed only once its actions are recorded.

A real ``ccbus run`` process consumes the agent-state topic (a consumer group
on the Kafka test peer, which runs in this test's process) while records
keep arriving, and forwards each with the ``webhook`` action to a receiver
that is failing (503), so every call waits in the outbox.  The process is
killed with SIGKILL in the middle of the stream.  Then:

1. the invariant, checked on what the dead process left behind: for every
   partition, each offset below the group's committed offset has its call
   in the outbox (the outbox key starts with the event id
   ``<topic>-<partition>-<offset>``): nothing was committed unrecorded;
2. after a restart (the receiver now answers 200), every record's call
   arrives: what was recorded is delivered from the outbox, what was not
   is read again from the committed offset.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from ccbus_genesys.catalogue import AGENT_STATE
from ccbus_genesys.scenarios import agent_step

from ccbus.testing import wait_until

pytestmark = pytest.mark.anyio

CCBUS = str(Path(sys.executable).parent / "ccbus")
TOTAL = 400


class Receiver:
    """A real HTTP server on loopback recording each webhook's ``seq``; 503 until told."""

    def __init__(self) -> None:
        self.status = 503
        self.seqs: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if receiver.status == 200:
                    receiver.seqs.append(int(json.loads(body)["seq"]))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def outbox_offsets(state: Path) -> set[tuple[int, int]]:
    """(partition, offset) of every call in the outbox, from its key ``<event id>:<rule>:<i>``."""
    db = sqlite3.connect(state / "delivery.sqlite3")
    try:
        keys = [row[0] for row in db.execute("SELECT key FROM outbox")]
    finally:
        db.close()
    out = set()
    for key in keys:
        event_id = key.split(":", 1)[0]
        partition, offset = event_id.rsplit("-", 2)[-2:]
        out.add((int(partition), int(offset)))
    return out


async def test_sigkill_mid_stream_skips_nothing(
    test_broker: Any, receiver: Receiver, tmp_path: Path
) -> None:
    broker = test_broker.broker
    assert broker is not None
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "forward.yaml").write_text(textwrap.dedent(f"""\
        rules:
          - name: forward
            on: genesys.EventAgentReady
            do:
              - webhook: {{url: "http://127.0.0.1:{receiver.port}/hook", json: {{seq: "{{seq}}"}}}}
        """))
    (tmp_path / "ccbus.yaml").write_text(textwrap.dedent(f"""\
        sources:
          gen:
            plugin: genesys
            options:
              bootstrap_servers: ["{test_broker.bootstrap}"]
              topic_prefix: "{test_broker.prefix}"
              group_id: crash
              auto_offset_reset: earliest
              session_timeout: 2s
              heartbeat_interval: 0.3s
              fetch_max_wait: 0.1s
              max_poll_records: 15
        rules: [rules]
        state_dir: state
        http: {{enabled: false}}
        delivery: {{backoff_initial: 0.2, backoff_cap: 0.5, attempts: 1000}}
        """))
    log = (tmp_path / "ccbus.log").open("ab")

    async def produce(first: int, last: int) -> None:
        for n in range(first, last):
            step = agent_step(n)
            await test_broker.send(AGENT_STATE, step.key, step.payload)
            if n % 10 == 9:
                await anyio.sleep(0.05)  # a steady stream, not one burst

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([CCBUS, "run", "-c", str(tmp_path / "ccbus.yaml")],
                                stdout=log, stderr=log, env=dict(os.environ))

    def committed() -> dict[int, int]:
        return {tp[1]: off for tp, off in broker.committed("crash").items()}

    first = start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, 0, TOTAL)
            await wait_until(lambda: sum(committed().values()) >= TOTAL // 3, timeout=60)
            first.send_signal(signal.SIGKILL)  # mid-stream: records keep coming
    finally:
        first.kill()
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    at_kill = committed()
    assert 0 < sum(at_kill.values()) < TOTAL, at_kill

    # 1. nothing below a committed offset is missing from the outbox
    recorded = outbox_offsets(tmp_path / "state")
    for partition, offset in at_kill.items():
        missing = [o for o in range(offset) if (partition, o) not in recorded]
        assert missing == [], f"partition {partition}: committed {offset} but not recorded"

    # 2. restarted, with the receiver up: every record's call arrives
    receiver.status = 200
    second = start()
    try:
        await wait_until(lambda: set(receiver.seqs) == set(range(TOTAL)), timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        log.close()
    assert second.returncode == 0, (tmp_path / "ccbus.log").read_text()[-3000:]
    assert sum(committed().values()) == TOTAL


class KeyedReceiver:
    """A real HTTP server on loopback answering 200 and keeping every ``Idempotency-Key`` it got.

    Its handler threads only append (``list.append`` and ``set.add`` are atomic);
    the test reads ``keys`` and ``seqs`` from its own loop.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.seqs: set[int] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.keys.append(self.headers["Idempotency-Key"])
                receiver.seqs.add(int(json.loads(body)["seq"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]  # the kill resets
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered_past(self, committed: dict[int, int]) -> int:
        """Calls received for records at or after their partition's committed offset."""
        past = 0
        for key in list(self.keys):
            event_id = key.split("/", 1)[1].split(":", 1)[0]  # <source>/<event id>:<rule>:<i>
            partition, offset = (int(part) for part in event_id.rsplit("-", 2)[-2:])
            past += offset >= committed.get(partition, 0)
        return past

    def repeated(self) -> set[str]:
        return {key for key, n in Counter(self.keys).items() if n > 1}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def outbox_keys(state: Path) -> set[str]:
    """The idempotency keys of every call the outbox holds (read while no bus runs)."""
    db = sqlite3.connect(state / "delivery.sqlite3")
    try:
        return {row[0] for row in db.execute("SELECT key FROM outbox")}
    finally:
        db.close()


@asynccontextmanager
async def committed_offsets(kafka: Any, group: str) -> AsyncIterator[
    Callable[[], Awaitable[dict[int, int]]]
]:
    """A function reading ``group``'s committed offsets on the agent-state topic (one consumer,
    outside the group: it never subscribes)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(kafka.topic(AGENT_STATE), p) for p in range(3)]

    async def read() -> dict[int, int]:
        return {tp.partition: await consumer.committed(tp) or 0 for tp in tps}

    try:
        yield read
    finally:
        await consumer.stop()


BACKLOG = 1500  # on the topic before the first start: polls come full
STREAM = 2000
#: Calls delivered for records past the committed offsets when the bus is killed:
#: more than the outbox keeps delivered-but-unforgotten, so some are forgotten.
PAST_COMMIT = 150


async def test_sigkill_repeats_only_the_calls_the_outbox_held(
    kafka: Any, tmp_path: Path
) -> None:
    """What the docs promise across ``kill -9``: a record whose calls were recorded is not
    turned into calls again.  The only repeats are calls the outbox still held at the kill
    (running, or delivered and not yet forgotten), with the same ``Idempotency-Key``.

    The bus is killed while the webhooks of records past the group's committed
    offsets have been delivered (and forgotten by the outbox): the source is in the
    middle of a poll it has not committed.  Those records are read again after the
    restart.  Without the source's recorded marks, each becomes a second call.
    """
    receiver = KeyedReceiver()
    group = kafka.group()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "forward.yaml").write_text(textwrap.dedent(f"""\
        rules:
          - name: forward
            on: genesys.EventAgentReady
            do:
              - webhook: {{url: "http://127.0.0.1:{receiver.port}/hook", json: {{seq: "{{seq}}"}}}}
        """))
    (tmp_path / "ccbus.yaml").write_text(textwrap.dedent(f"""\
        sources:
          gen:
            plugin: genesys
            options:
              bootstrap_servers: ["{kafka.bootstrap}"]
              topic_prefix: "{kafka.prefix}"
              group_id: {group}
              auto_offset_reset: earliest
              session_timeout: 3s
              heartbeat_interval: 0.3s
              fetch_max_wait: 0.1s
        rules: [rules]
        state_dir: state
        http: {{enabled: false}}
        delivery: {{backoff_initial: 0.2, backoff_cap: 0.5, attempts: 1000}}
        """))
    log = (tmp_path / "ccbus.log").open("ab")

    async def produce(first: int, last: int) -> None:
        for n in range(first, last):
            step = agent_step(n)
            await kafka.send(AGENT_STATE, step.key, step.payload)
            if n % 100 == 99:
                await anyio.sleep(0.02)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([CCBUS, "run", "-c", str(tmp_path / "ccbus.yaml")],
                                stdout=log, stderr=log, env=dict(os.environ))

    await produce(0, BACKLOG)
    first = start()
    try:
        async with committed_offsets(kafka, group) as committed, anyio.create_task_group() as tg:
            tg.start_soon(produce, BACKLOG, STREAM)  # and more keeps coming
            with anyio.fail_after(120):
                while receiver.delivered_past(await committed()) < PAST_COMMIT:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            first.send_signal(signal.SIGKILL)
        held = outbox_keys(tmp_path / "state")  # what the dead process left to run
        assert len(receiver.seqs) < STREAM, "killed after the stream: nothing is read again"

        second = start()
        try:
            await wait_until(lambda: receiver.seqs == set(range(STREAM)), timeout=180)
            ends = await kafka.end_offsets(AGENT_STATE)
            with anyio.fail_after(60):
                while await kafka.committed(group, AGENT_STATE) != ends:  # noqa: ASYNC110
                    await anyio.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        first.kill()
        first.wait(10)
        log.close()
        receiver.close()
    assert second.returncode == 0, (tmp_path / "ccbus.log").read_text()[-3000:]
    repeated = receiver.repeated()
    not_held = sorted(repeated - held)
    assert not_held == [], (
        f"{len(not_held)} of {len(repeated)} repeated calls were not in the outbox at the "
        f"kill (read again from Kafka and recorded a second time), e.g. {not_held[:3]}"
    )
    assert len(set(receiver.keys)) == STREAM  # one key per record: every call arrived
