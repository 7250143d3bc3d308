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
the wrong topic, or anything at all raised while decoding or mapping it) is refused
through the core's ``ctx.convert``/``ctx.refuse``: counted under its reason on ``/metrics``
(``ccbus_source_bad_input_total``), logged with the source, topic and reason (rate-limited,
so a broken publisher cannot flood the journal), kept in the dead-letter file with its
reason, and then acknowledged: redelivering it would not make it better.

Syslog: UDP and TCP listeners; see :mod:`ccbus_cisco_cvp.syslog`.
"""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus, UDPSocket
from anyio.streams.stapled import MultiListener
from ccbus_stomp import StompConnection, StompMessage, topic

from ccbus import Event, RefusedInput, SourceContext, decode_json, parse_timestamp

from .errors import SyslogError
from .mapping import VENDOR, Mapper
from .options import CvpOptions
from .protocol import CHANNELS, Channel, Problem, validate
from .syslog import TcpFramer, kernel_drops, parse

__all__ = ["CvpSource"]

LOG_FIRST = 10
LOG_EVERY = 100
#: How often the kernel's drop count of the UDP socket is read (seconds).
KERNEL_DROPS_INTERVAL = 1.0
_CHANNELS = {c.key: c for c in CHANNELS}


class CvpSource:
    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.options: CvpOptions = ctx.options
        self.mapper = Mapper(ctx.name, remember_calls=self.options.remember_calls)
        #: messages received per channel key (and "syslog"), events emitted
        self.received: Counter[str] = Counter()
        self.emitted = 0
        #: datagrams dropped because the bus fell behind (UDP cannot wait); also counted
        #: on ``/metrics`` as ``syslog_overflow``, but not kept as dead letters
        self.syslog_dropped = 0
        #: datagrams the kernel dropped before they were read (the socket's buffer was
        #: full); counted on ``/metrics`` as ``kernel_drop``
        self.syslog_kernel_dropped = 0
        self.connection: StompConnection | None = None
        #: subscription id -> channel
        self.channels: dict[str, Channel] = {}
        self.udp_port: int | None = None
        self.tcp_port: int | None = None
        self.listening = anyio.Event()
        self._tcp_open = 0

    @property
    def rejected(self) -> Counter[str]:
        """Refused messages by reason (the core's count, the same as on ``/metrics``)."""
        return self.ctx.refusals.counts

    @property
    def dead_letters(self) -> Any:
        """The core's dead-letter file of this source (``<state_dir>/dead-letters.jsonl``)."""
        return self.ctx.refusals.dead_letters

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
        """One message: emit its events and ack it; or refuse it (a dead letter) and ack it.

        Decoding, the schema check and the mapping run inside ``ctx.convert``: whatever
        they raise makes the message a dead letter instead of stopping the source (which
        would restart, be handed the same unacknowledged message, and stop again).
        ``emit`` and the ack stay outside: a failure to record events is the bus's.
        """
        channel = self.channels.get(message.subscription)
        self.received[channel.key if channel else "unknown"] += 1
        received = datetime.now(UTC)
        events = await self.ctx.convert(
            message.body, lambda: self._events(message, channel, received),
            topic=message.destination, messageId=message.message_id,
        )
        if events:
            emit = self.ctx.emit
            for event in events:
                await emit(event)
            self.emitted += len(events)
        await conn.ack(message)

    def _events(self, message: StompMessage, channel: Channel | None,
                received: datetime) -> list[Event]:
        """Decode, check and map one JMS message; :class:`RefusedInput` says why not."""
        try:
            text = message.text()
        except UnicodeDecodeError as err:
            raise RefusedInput("bad_encoding", "body is neither UTF-8 nor Java's modified "
                                               f"UTF-8: {err}") from None
        try:
            doc = decode_json(text)
        except ValueError as err:
            raise RefusedInput("invalid_json", f"body is not JSON: {err}") from None
        own, problems = validate(doc, channel if self.options.strict_channel else None)
        if problems or own is None:
            raise _refused(problems)
        try:
            return self.mapper.map(
                doc, own, event_id=message.message_id or uuid.uuid4().hex,
                topic=message.destination.removeprefix("/topic/"), received=received,
            )
        except Exception as err:
            # a bug in this plugin's mapping, not bad input: say so with the traceback,
            # and keep the message under its own reason
            self.ctx.log.exception("cvp %s: cannot map a valid %s", self.ctx.name,
                                   own.event_type)
            raise RefusedInput("mapping_error", f"{type(err).__name__}: {err}") from err

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
                raw = udp.extra(anyio.abc.SocketAttribute.raw_socket)
                # the count so far, read before anything can arrive: all later drops count
                tg.start_soon(self._kernel_drops, raw, kernel_drops(raw))
            if options.tcp:
                listener = await ports.enter_async_context(await self._bind_tcp(options.tcp))
                tg.start_soon(listener.serve, self._tcp_connection)
            tg.start_soon(self._syslog_worker, receive.clone())
            task_status.started()

    async def _bind_udp(self, address: str) -> UDPSocket:
        host, _, port = address.rpartition(":")
        udp = await anyio.create_udp_socket(local_host=host, local_port=int(port))
        options = self.options.syslog
        if options is not None and options.receive_buffer is not None:
            raw = udp.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.receive_buffer)
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
                    # counted, not dead-lettered: writing each one down would slow the
                    # receiver exactly when it is already behind
                    self.syslog_dropped += 1
                    self.ctx.count_bad_input("syslog_overflow")
                    if self.syslog_dropped <= LOG_FIRST or self.syslog_dropped % LOG_EVERY == 0:
                        self.ctx.log.warning(
                            "cvp %s: syslog queue full (%d): dropped a datagram from %s "
                            "[%d dropped so far]", self.ctx.name,
                            self.options.syslog.queue_size if self.options.syslog else 0,
                            peer_host, self.syslog_dropped,
                        )

    async def _kernel_drops(self, sock: socket.socket, seen: int | None) -> None:
        """Count what the kernel dropped for the UDP socket (``seen`` so far), as it
        happens (within :data:`KERNEL_DROPS_INTERVAL`): otherwise those losses are
        invisible."""
        if seen is None:
            self.ctx.log.info("cvp %s: the kernel's count of dropped syslog datagrams cannot "
                              "be read here (no /proc/net/udp): not counted", self.ctx.name)
            return
        while True:
            await anyio.sleep(KERNEL_DROPS_INTERVAL)
            now = await anyio.to_thread.run_sync(kernel_drops, sock)
            if now is None or now <= seen:
                continue
            new, seen = now - seen, now
            self.syslog_kernel_dropped += new
            self.ctx.count_bad_input("kernel_drop", new)
            self.ctx.log.warning(
                "cvp %s: the kernel dropped %d syslog datagram(s) before they were read "
                "(the socket's receive buffer was full; raise syslog.receive_buffer) "
                "[%d dropped so far]", self.ctx.name, new, self.syslog_kernel_dropped)

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
                    await self.ctx.refuse("too_many_connections",
                                          f"more than {options.max_connections} syslog "
                                          "TCP connections: refused", b"", peer=peer)
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
            ended = False
            with anyio.move_on_after(limit):
                try:
                    chunk = await stream.receive()
                except anyio.EndOfStream:
                    ended = True
            if chunk is None and not ended:
                await self._tcp_timed_out(peer, framer.buffer, idle=begun is None)
                return
            partial = framer.buffer
            try:
                messages = framer.finish() if ended else framer.feed(chunk or b"")
            except SyslogError as err:
                kept = partial if ended else framer.buffer
                await self.ctx.refuse(err.reason, err.detail, kept[:1024], peer=peer)
                return  # the stream is out of step: close it, the sender reconnects
            for data in messages:
                await self.syslog_message(data, peer)  # TCP waits: back-pressure
            if ended:  # the peer closed: its last message, if unterminated, went above
                return
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
        await self.ctx.refuse("slow_message",
                              f"TCP message not complete within {options.read_timeout:g}s "
                              f"({len(partial)} bytes received): disconnected",
                              partial[:1024], peer=peer)

    async def syslog_message(self, data: bytes, peer: str) -> None:
        """Parse one syslog message and emit ``cvp.syslog``; or refuse it (a dead letter)."""
        self.received["syslog"] += 1
        received = datetime.now(UTC)
        event = await self.ctx.convert(
            data, lambda: self._syslog_event(data, peer, received), peer=peer
        )
        if event is not None:
            await self.ctx.emit(event)
            self.emitted += 1

    def _syslog_event(self, data: bytes, peer: str, received: datetime) -> Event:
        fields = parse(data)  # a SyslogError is a RefusedInput: a dead letter with its reason
        fields["peer"] = peer
        moment = None
        if fields["format"] == "rfc5424":
            moment = parse_timestamp(fields.get("timestamp"))
        return Event(
            type=f"{VENDOR}.syslog",
            source=self.ctx.name,
            subject=fields.get("host") or peer.split(" ", 1)[1].rsplit(":", 1)[0],
            time=moment or received,
            vendor=VENDOR,
            receivedat=received,
            data=fields,
        )


def _refused(problems: list[Problem]) -> RefusedInput:
    """One refusal for a payload against the schema: the first problem's reason (the
    counter's label), and up to five problems as the detail."""
    if not problems:
        return RefusedInput("unknown_event_type", "payload matches no CVP message")
    detail = "; ".join(p.detail for p in problems[:5])
    if len(problems) > 5:
        detail += f"; and {len(problems) - 5} more"
    return RefusedInput(problems[0].reason, detail)


def _cause(group: ExceptionGroup[Exception]) -> Exception:
    """The one exception inside nested task-group wrappers, or the group if there are several."""
    error: Exception = group
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
