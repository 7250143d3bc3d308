"""CVP's side, for admins, tests and the benchmark: publish events to ActiveMQ, send syslog.

:class:`CvpSimulator` publishes each payload as CVP does: a JMS TextMessage
(JSON body, JMSType = the eventType, persistent) on the channel's topic,
through the same :class:`ccbus_stomp.StompConnection` the source uses, and
sends the matching syslog lines over UDP (one datagram each) or TCP
(octet-counted, RFC 6587).  It needs a broker: ``ccbus simulate cvp
--start-broker`` starts a private one from Debian's ``activemq`` package.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio
from ccbus_stomp import StompConnection, StompOptions, topic

from .protocol import CHANNELS
from .scenarios import Item

__all__ = ["CvpSimulator", "default_topics"]


def default_topics() -> dict[str, str]:
    return {c.key: c.name for c in CHANNELS}


class CvpSimulator:
    def __init__(
        self,
        broker: StompOptions | None,
        *,
        topics: Mapping[str, str | None] | None = None,
        syslog_udp: tuple[str, int] | None = None,
        syslog_tcp: tuple[str, int] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.broker = broker
        self.topics = dict(default_topics(), **(topics or {}))
        self.syslog_udp = syslog_udp
        self.syslog_tcp = syslog_tcp
        self.log = log or logging.getLogger("ccbus.simulate.cvp")
        self.connection: StompConnection | None = None
        self.published = 0
        self.syslog_sent = 0

    async def __aenter__(self) -> CvpSimulator:
        if self.broker is not None:
            self.connection = StompConnection(self.broker, name="cvp-simulator", log=self.log)
            await self.connection.__aenter__()
            await self.connection.wait_connected(self.broker.connect_timeout + 5)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.connection is not None:
            await self.connection.__aexit__(exc_type, exc, tb)

    async def publish(
        self, key: str, payload: dict[str, Any] | str, *, receipt: bool = False,
        wait_connected: float = 30,
    ) -> None:
        """Publish one payload (a dict, or a raw body to test rejects) on ``key``'s topic.

        With ``receipt``, return only once the broker confirmed it has the message
        (``NotConnectedError`` if it never does): a message sent as the broker goes
        down is otherwise lost without a word, which a test that counts what
        arrived must not mistake for ccbus losing it.
        """
        if self.connection is None:
            raise RuntimeError("no broker configured")
        name = self.topics.get(key)
        if not name:
            return
        body = payload if isinstance(payload, str) else json.dumps(payload)
        event_type = payload.get("eventType") if isinstance(payload, dict) else None
        await self.connection.send(
            topic(name), body, type=str(event_type) if event_type else None,
            persistent=True, receipt=receipt, wait_connected=wait_connected,
        )
        self.published += 1

    async def play(self, items: list[Item], *, pause: float = 0.0) -> int:
        """Publish ``items`` in order, ``pause`` seconds apart; how many were published."""
        for key, payload in items:
            await self.publish(key, payload)
            if pause:
                await anyio.sleep(pause)
        return len(items)

    async def send_syslog(self, lines: list[bytes]) -> None:
        """Each line as one UDP datagram and/or one octet-counted TCP frame."""
        if self.syslog_udp is not None:
            target = self.syslog_udp
            await anyio.to_thread.run_sync(_send_udp, target, lines)
            self.syslog_sent += len(lines)
        if self.syslog_tcp is not None:
            async with await anyio.connect_tcp(*self.syslog_tcp) as stream:
                for line in lines:
                    await stream.send(b"%d %s" % (len(line), line))
            self.syslog_sent += len(lines)


def _send_udp(target: tuple[str, int], lines: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for line in lines:
            sock.sendto(line, target)
