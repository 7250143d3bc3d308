"""Genesys's side: produce Voice Microservices records to Kafka, as the platform would.

:class:`GenesysSimulator` is a real ``AIOKafkaProducer`` writing JSON
payloads with ``{tenant_id}:{id}`` keys to the two topics (prefix applied),
so the ``genesys`` source reads exactly what it would read in production.
It works against any Kafka broker; without one (``bootstrap=None``) it
starts a :class:`~ccbus_peers.kafka.KafkaTestBroker` on loopback and
owns it.  Used by ``ccbus simulate genesys``, ``ccbus demo``, the tests and
the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import click
from aiokafka import AIOKafkaProducer

from .catalogue import DEFAULT_TOPICS
from .scenarios import Step, stamp

if TYPE_CHECKING:
    from ccbus_peers.kafka import KafkaTestBroker

__all__ = ["GenesysSimulator"]


def _test_broker() -> type[KafkaTestBroker]:
    """The Kafka test broker, a test peer in ``ccbus-peers``, imported only when one is started."""
    try:
        from ccbus_peers.kafka import KafkaTestBroker
    except ModuleNotFoundError as err:
        if err.name not in ("ccbus_peers", "ccbus_peers.kafka"):
            raise
        raise click.ClickException(
            "the Kafka test broker is in ccbus-peers: pip install ccbus-peers "
            "(or give a Kafka broker with --bootstrap)"
        ) from None
    return KafkaTestBroker

#: Partitions of each topic when the simulator brings its own broker.
PARTITIONS = 3


class GenesysSimulator:
    """Produce scenario records; ``async with`` it.

    :param bootstrap: ``host:port`` of a broker; None starts a test broker.
    :param topic_prefix: put in front of ``voice-agentstate`` / ``voice-callthread``.
    :param producer_options: more ``AIOKafkaProducer`` arguments (TLS, SASL).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topic_prefix: str = "",
        port: int = 0,
        partitions: int = PARTITIONS,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        self.broker: KafkaTestBroker | None = None
        if bootstrap is None:
            self.broker = _test_broker()(port=port, auto_create_partitions=partitions)
            for name in DEFAULT_TOPICS.values():
                self.broker.create_topic(topic_prefix + name, partitions)
        self._bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.producer_options = producer_options or {}
        self.producer: AIOKafkaProducer | None = None
        self.sent = 0

    @property
    def bootstrap(self) -> str:
        if self.broker is not None:
            return self.broker.bootstrap
        assert self._bootstrap is not None
        return self._bootstrap

    def topic(self, kind: str) -> str:
        return self.topic_prefix + DEFAULT_TOPICS[kind]

    async def __aenter__(self) -> GenesysSimulator:
        if self.broker is not None:
            await self.broker.start()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, **self.producer_options
        )
        try:
            await self.producer.start()
        except BaseException:
            await self._close_broker()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.producer is not None:
            with anyio.CancelScope(shield=True):
                await self.producer.stop()
        await self._close_broker()

    async def _close_broker(self) -> None:
        if self.broker is not None:
            with anyio.CancelScope(shield=True):
                await self.broker.stop()

    def source_options(self) -> dict[str, Any]:
        """Options that point a ``genesys`` source at this simulator's broker."""
        return {
            "bootstrap_servers": [self.bootstrap],
            "topic_prefix": self.topic_prefix,
            "auto_offset_reset": "earliest",
        }

    async def send(self, kind: str, key: str | bytes | None, value: Any) -> None:
        """Produce one record; ``value`` is JSON-encoded unless it is bytes already."""
        assert self.producer is not None, "use the simulator with async with"
        raw_key = key.encode() if isinstance(key, str) else key
        raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
        await self.producer.send(self.topic(kind), value=raw, key=raw_key)
        self.sent += 1

    async def play(self, steps: Iterable[Step], *, speed: float = 1.0) -> int:
        """Send ``steps`` with their pauses (``speed`` 2 halves them; 0 means no pauses)."""
        count = 0
        for step in steps:
            if step.after and speed > 0:
                assert self.producer is not None
                await self.producer.flush()
                await anyio.sleep(step.after / speed)
            await self.send(step.kind, step.key, stamp(step))
            count += 1
        await self.flush()
        return count

    async def flush(self) -> None:
        assert self.producer is not None
        await self.producer.flush()

