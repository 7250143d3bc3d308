"""Shared parts: a collecting consumer over a real :class:`StompConnection`, and a TCP relay.

The fixtures ``activemq`` (the session's broker), ``activemq_factory`` (a
private broker for one test) and ``jms_peer`` (a Java JMS peer) are made of the
real peers in ``ccbus_peers.activemq``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from ccbus_stomp import StompConnection, StompMessage, StompOptions

#: Short timings: recovery in fractions of a second.
FAST: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.3, "connect_timeout": 10}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# activemq, activemq_factory and jms_peer come from ccbus_peers' pytest plugin.


class Consumer:
    """Runs a connection and collects (and acks) every message it receives."""

    def __init__(self, conn: StompConnection, states: list[str]) -> None:
        self.conn = conn
        self.states = states
        self.messages: list[StompMessage] = []
        self.ack = True

    async def collect(self) -> None:
        async for message in self.conn:
            self.messages.append(message)
            if self.ack:
                await self.conn.ack(message)

    def bodies(self) -> list[str]:
        return [m.text() for m in self.messages]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 30.0) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polling what the consumer collected
                await anyio.sleep(0.02)


@asynccontextmanager
async def consuming(options: dict[str, Any], name: str = "t") -> AsyncIterator[Consumer]:
    states: list[str] = []
    conn = StompConnection(
        StompOptions.model_validate({**FAST, **options}),
        name=name,
        log=logging.getLogger(f"test.stomp.{name}"),
        set_state=states.append,
    )
    async with conn, anyio.create_task_group() as tg:
        consumer = Consumer(conn, states)
        tg.start_soon(consumer.collect)
        try:
            yield consumer
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def consumer() -> Callable[..., Any]:
    return consuming


class Relay:
    """A TCP relay on loopback between the client and the broker, which can freeze.

    :meth:`freeze` makes the connections open so far drop everything they
    carry while both sockets stay open: the broker looks alive to TCP and
    silent to STOMP, which only heartbeats can notice.  New connections
    relay normally.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections: list[dict[str, bool]] = []

    def freeze(self) -> None:
        for connection in self.connections:
            connection["frozen"] = True

    async def serve(self, *, task_status: Any) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        state = {"frozen": False}
        self.connections.append(state)
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as broker:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pipe, client, broker, state, tg)
                tg.start_soon(self._pipe, broker, client, state, tg)

    async def _pipe(self, source: SocketStream, sink: SocketStream, state: dict[str, bool],
                    tg: Any) -> None:
        try:
            async for chunk in source:
                if not state["frozen"]:
                    await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        tg.cancel_scope.cancel()  # one side closed: close both


@pytest.fixture
def relay() -> type[Relay]:
    return Relay
