"""The ``cisco-cvp`` source: CVP's JMS topics (through ActiveMQ's STOMP connector) and syslog.

JMS: one :class:`ccbus_stomp.StompConnection` with one subscription per
configured channel (durable by default, named ``<prefix><channel key>``).
Each message is decoded, checked against the document's schema, mapped and
emitted; it is acknowledged only after ``await ctx.emit(...)`` returned for
every event it produced, so the broker redelivers anything the bus had not
recorded when the connection, the bus or the machine went down.

Bodies are read as UTF-8 or as the modified UTF-8 a Java publisher's
TextMessage arrives in (``StompMessage.text()``: emoji as surrogate pairs,
NUL as ``C0 80``).  A message that cannot be used (neither, not JSON, against the schema, on
the wrong topic) is counted under its reason, logged with the source, topic
and reason (the first ten of each reason, then every hundredth, so a broken
publisher cannot flood the journal), kept in the dead-letter file with its
reason, and then acknowledged: redelivering it would not make it better.

Syslog: UDP and TCP listeners; see :mod:`ccbus_cisco_cvp.syslog`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus, UDPSocket
from anyio.streams.stapled import MultiListener
from ccbus_stomp import StompConnection, StompMessage, topic

from ccbus import Event, SourceContext, decode_json, parse_timestamp

from .deadletters import DeadLetterFile
from .mapping import VENDOR, Mapper
from .options import CvpOptions
from .protocol import CHANNELS, Channel, Problem, validate
from .syslog import SyslogError, TcpFramer, parse

__all__ = ["CvpSource"]

LOG_FIRST = 10
LOG_EVERY = 100
_CHANNELS = {c.key: c for c in CHANNELS}


class CvpSource:
    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: CvpOptions = ctx.options
        self.mapper = Mapper(ctx.name, remember_calls=self.options.remember_calls)
        self.dead_letters = DeadLetterFile(ctx.state_dir / "dead-letters.jsonl")
        #: messages received per channel key (and "syslog"), events emitted, rejects per reason
        self.received: Counter[str] = Counter()
        self.emitted = 0
        self.rejected: Counter[str] = Counter()
        #: datagrams dropped because the bus fell behind (UDP cannot wait)
        self.syslog_dropped = 0
        self.connection: StompConnection | None = None
        #: subscription id -> channel
        self.channels: dict[str, Channel] = {}
        self.udp_port: int | None = None
        self.tcp_port: int | None = None
        self.listening = anyio.Event()
        self._tcp_open = 0

    async def run(self) -> None:
        """Serve until cancelled; a failure is raised as itself, not wrapped in task groups,
        so the bus's "source failed: ..." line names the cause (a locked outbox, a port in use).
        """
        try:
            await self._run()
        except ExceptionGroup as group:
            raise _cause(group) from None

    async def _run(self) -> None:
        if self.options.syslog is not None:
            # not ready (``/readyz``) until the listeners are bound: the bus counts a
            # source that has said nothing yet as ready
            self.ctx.set_state("binding")
        async with anyio.create_task_group() as tg:
            if self.options.syslog is not None:
                await tg.start(self._syslog)
            self.listening.set()
            if self.options.broker is not None:
                await self._jms()
            else:
                self.ctx.set_state("listening")

    # ------------------------------------------------------------------ JMS

    async def _jms(self) -> None:
        options = self.options
        assert options.broker is not None
        async with StompConnection(
            options.broker, name=self.ctx.name, log=self.ctx.log, set_state=self.ctx.set_state
        ) as conn:
            self.connection = conn
            for key, name in options.topic_map().items():
                if not name:
                    continue
                subscription = await conn.subscribe(
                    topic(name),
                    durable_name=f"{options.subscription_prefix}{key}" if options.durable else None,
                )
                self.channels[subscription.id] = _CHANNELS[key]
            async for message in conn:
                await self.handle(conn, message)

    async def handle(self, conn: StompConnection, message: StompMessage) -> None:
        """One message: emit its events and ack it, or count, log, keep and ack it."""
        channel = self.channels.get(message.subscription)
        self.received[channel.key if channel else "unknown"] += 1
        received = datetime.now(UTC)
        where = {"topic": message.destination, "messageId": message.message_id}
        try:
            doc = decode_json(message.text())
        except UnicodeDecodeError as err:
            await self.reject([Problem("bad_encoding", f"body is neither UTF-8 nor Java's "
                                       f"modified UTF-8: {err}")],
                              message.body, **where)
        except ValueError as err:
            await self.reject([Problem("invalid_json", f"body is not JSON: {err}")],
                              message.body, **where)
        else:
            own, problems = validate(doc, channel if self.options.strict_channel else None)
            if problems or own is None:
                await self.reject(problems, message.body, **where)
            else:
                try:
                    events = self.mapper.map(
                        doc, own, event_id=message.message_id or uuid.uuid4().hex,
                        topic=message.destination.removeprefix("/topic/"), received=received,
                    )
                except Exception as err:  # noqa: BLE001 - a mapping bug must not loop forever
                    # raising would restart the source and the broker would redeliver the
                    # same message: a poison loop. Keep it instead, with the traceback logged.
                    self.ctx.log.exception("cvp %s: cannot map a valid %s", self.ctx.name,
                                           own.event_type)
                    await self.reject([Problem("mapping_error", f"{type(err).__name__}: {err}")],
                                      message.body, **where)
                else:
                    emit = self.ctx.emit
                    for event in events:
                        await emit(event)
                    self.emitted += len(events)
        await conn.ack(message)

    async def reject(self, problems: list[Problem], raw: bytes, **where: str | None) -> None:
        """Count, log and dead-letter a message that cannot be used."""
        reasons = sorted({p.reason for p in problems})
        count_bad_input = getattr(self.ctx, "count_bad_input", None)
        for reason in reasons:
            self.rejected[reason] += 1
            if count_bad_input is not None:
                count_bad_input(reason)
        detail = "; ".join(p.detail for p in problems[:5])
        if len(problems) > 5:
            detail += f"; and {len(problems) - 5} more"
        first = reasons[0]
        count = self.rejected[first]
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            origin = ", ".join(f"{k} {v}" for k, v in where.items() if v)
            self.ctx.log.warning(
                "cvp %s: rejected a message (%s) from %s: %s [%d %s so far; kept in %s]",
                self.ctx.name, ", ".join(reasons), origin or "?", detail, count, first,
                self.dead_letters.path,
            )
        try:
            await self.dead_letters.add(",".join(reasons), detail, raw, **where)
        except OSError as err:  # a full disk must not stop the source
            self.ctx.log.error("cvp %s: cannot write dead letter: %s", self.ctx.name, err)

    # ------------------------------------------------------------------ syslog

    async def _syslog(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind the listeners, then serve them until cancelled or a failure.

        The listeners belong to an exit stack entered before anything else, so
        every way out (a stop, a failure of this source, or the second bind
        failing after the first succeeded) closes both ports: the bus restarts
        a failed source by calling :meth:`run` again, and that must find its
        ports free.  (anyio's ``Listener.serve`` never closes its listener.)
        """
        options = self.options.syslog
        assert options is not None
        send, receive = anyio.create_memory_object_stream[tuple[bytes, str]](options.queue_size)
        async with AsyncExitStack() as ports, send, receive, anyio.create_task_group() as tg:
            if options.udp:
                udp = await ports.enter_async_context(await self._bind_udp(options.udp))
                tg.start_soon(self._udp, udp, send)
            if options.tcp:
                listener = await ports.enter_async_context(await self._bind_tcp(options.tcp))
                tg.start_soon(listener.serve, self._tcp_connection)
            tg.start_soon(self._syslog_worker, receive.clone())
            task_status.started()

    async def _bind_udp(self, address: str) -> UDPSocket:
        host, _, port = address.rpartition(":")
        udp = await anyio.create_udp_socket(local_host=host, local_port=int(port))
        self.udp_port = udp.extra(anyio.abc.SocketAttribute.local_port)
        self.ctx.log.info("cvp %s: syslog on udp %s:%s", self.ctx.name, host, self.udp_port)
        return udp

    async def _bind_tcp(self, address: str) -> MultiListener[SocketStream]:
        host, _, port = address.rpartition(":")
        listener = await anyio.create_tcp_listener(local_host=host, local_port=int(port))
        self.tcp_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.ctx.log.info("cvp %s: syslog on tcp %s:%s", self.ctx.name, host, self.tcp_port)
        return listener

    async def _udp(self, udp: Any, queue: Any) -> None:
        async with udp:
            async for data, (peer_host, peer_port) in udp:
                try:
                    queue.send_nowait((data, f"udp {peer_host}:{peer_port}"))
                except anyio.WouldBlock:
                    self.syslog_dropped += 1
                    count_bad_input = getattr(self.ctx, "count_bad_input", None)
                    if count_bad_input is not None:
                        count_bad_input("syslog_overflow")
                    if self.syslog_dropped <= LOG_FIRST or self.syslog_dropped % LOG_EVERY == 0:
                        self.ctx.log.warning(
                            "cvp %s: syslog queue full (%d): dropped a datagram from %s "
                            "[%d dropped so far]", self.ctx.name,
                            self.options.syslog.queue_size if self.options.syslog else 0,
                            peer_host, self.syslog_dropped,
                        )

    async def _syslog_worker(self, queue: Any) -> None:
        async with queue:
            async for data, peer in queue:
                await self.syslog_message(data, peer)

    async def _tcp_connection(self, stream: SocketStream) -> None:
        options = self.options.syslog
        assert options is not None
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
        peer = f"tcp {address[0]}:{address[1]}" if isinstance(address, tuple) else f"tcp {address}"
        self._tcp_open += 1
        try:
            async with stream:
                if self._tcp_open > options.max_connections:
                    await self.reject([Problem("too_many_connections",
                                               f"more than {options.max_connections} syslog "
                                               "TCP connections: refused")], b"", peer=peer)
                    return
                await self._tcp_messages(stream, peer)
        except (anyio.BrokenResourceError, anyio.EndOfStream, ConnectionError):
            pass
        finally:
            self._tcp_open -= 1

    async def _tcp_messages(self, stream: SocketStream, peer: str) -> None:
        """Read and emit messages until the peer closes, breaks the framing or is too slow.

        Two clocks, so that a connection slot is never held for nothing: between
        messages the connection may be quiet for ``idle_timeout``; once a message
        has begun, the rest must arrive within ``read_timeout`` (counted when it
        does not: a trickling sender is misbehaving, a quiet one is not).  Time
        spent waiting for the bus (back-pressure) is not charged to the sender.
        """
        options = self.options.syslog
        assert options is not None
        framer = TcpFramer(options.max_message_bytes)
        begun: float | None = None  # when the message now partly received began
        while True:
            limit = (options.idle_timeout if begun is None
                     else begun + options.read_timeout - anyio.current_time())
            chunk = None
            with anyio.move_on_after(limit):
                chunk = await stream.receive()
            if chunk is None:
                await self._tcp_timed_out(peer, framer.buffer, idle=begun is None)
                return
            try:
                messages = framer.feed(chunk)
            except SyslogError as err:
                await self.reject([Problem(err.reason, str(err))], framer.buffer[:1024], peer=peer)
                return  # the stream is out of step: close it, the sender reconnects
            for data in messages:
                await self.syslog_message(data, peer)  # TCP waits: back-pressure
            if not framer.buffer:
                begun = None
            elif messages or begun is None:
                begun = anyio.current_time()

    async def _tcp_timed_out(self, peer: str, partial: bytes, *, idle: bool) -> None:
        options = self.options.syslog
        assert options is not None
        if idle:
            self.ctx.log.info("cvp %s: closed the syslog connection from %s: nothing sent "
                              "for %gs", self.ctx.name, peer, options.idle_timeout)
            return
        await self.reject([Problem("slow_message",
                                   f"TCP message not complete within {options.read_timeout:g}s "
                                   f"({len(partial)} bytes received): disconnected")],
                          partial[:1024], peer=peer)

    async def syslog_message(self, data: bytes, peer: str) -> None:
        """Parse one syslog message and emit ``cvp.syslog``; or count, log and keep it."""
        self.received["syslog"] += 1
        received = datetime.now(UTC)
        try:
            fields = parse(data)
        except SyslogError as err:
            await self.reject([Problem(err.reason, str(err))], data, peer=peer)
            return
        fields["peer"] = peer
        moment = None
        if fields["format"] == "rfc5424":
            moment = parse_timestamp(fields.get("timestamp"))
        event = Event(
            type=f"{VENDOR}.syslog",
            source=self.ctx.name,
            subject=fields.get("host") or peer.split(" ", 1)[1].rsplit(":", 1)[0],
            time=moment or received,
            vendor=VENDOR,
            receivedat=received,
            data=fields,
        )
        await self.ctx.emit(event)
        self.emitted += 1


def _cause(group: ExceptionGroup[Exception]) -> Exception:
    """The one exception inside nested task-group wrappers, or the group if there are several."""
    error: Exception = group
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
