"""One supervised STOMP connection, with stomp.py's receiver thread bridged into anyio.

stomp.py reads frames on its own thread and calls listeners there; it does
not reconnect after an established connection drops (PITFALLS: "stomp.py").
:class:`StompConnection` wraps it so a source or action never sees either:

- **Hand-off.** The receiver thread only appends a frame to a deque (a
  thread-safe operation) and, if the loop's consumer is idle, wakes it with
  one ``anyio.from_thread.run_sync`` call; no loop API is touched from that
  thread otherwise.  Under load the consumer drains the deque without any
  cross-thread call per frame.  Memory is bounded by the broker:
  subscriptions use ``client-individual`` acknowledgement with
  ``activemq.prefetchSize``, so at most ``prefetch`` unacknowledged
  messages per subscription are ever in flight.
- **Acknowledgement** happens only when the caller says so (``await
  conn.ack(message)``, after ``await ctx.emit(...)`` returned).  Acks are
  batched into one worker-thread call, so a burst of thousands costs a few
  thread hops.  An ack for a message delivered on a connection that has
  since dropped is discarded: the broker redelivers that message anyway.
- **Supervision.** A task connects (socket, TLS, CONNECT, heartbeats),
  re-issues every registered subscription, reports ``connected``, waits for
  the connection to be lost (socket closed, heartbeat timeout, ERROR frame)
  and reconnects after a :class:`ccbus.sources.backoff.Backoff` delay, forever.
  Each connection gets a fresh stomp.py object and a generation number, so
  a late callback from an old connection cannot confuse the new one.
- **Sending** builds JMS TextMessages (no ``content-length``), with JMSType
  (``type``), JMSCorrelationID, JMSReplyTo and a time-to-live (``expires``),
  persistent unless told otherwise, from a worker thread (stomp.py's
  ``send`` blocks on the socket).  Bodies are written in Java's modified
  UTF-8 and read in either form (:mod:`ccbus_stomp.jmstext`): ActiveMQ passes
  text between STOMP and JMS as raw bytes, so plain UTF-8 would lose emoji
  on the way to a Java application.

Typical use, in a source::

    async with StompConnection(options, name=ctx.name, log=ctx.log,
                               set_state=ctx.set_state) as conn:
        await conn.subscribe("/topic/cvp/calls/started", durable_name="ccbus-calls")
        async for message in conn:
            await ctx.emit(make_event(message))
            await conn.ack(message)
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import stomp
import stomp.exception
from anyio.abc import TaskGroup

from ccbus import Backoff

from .frames import Connection, ack_frames
from .jmstext import decode_jms_text, encode_jms_text
from .options import StompOptions

__all__ = [
    "NotConnectedError",
    "StompConnection",
    "StompMessage",
    "Subscription",
]

#: How long acks gather before one worker-thread call writes them all.
ACK_GATHER = 0.002
#: Headers a sender may not set through ``headers=``: they come from arguments.
_RESERVED = frozenset({"content-length", "destination", "receipt"})


class NotConnectedError(ConnectionError):
    """Raised by :meth:`StompConnection.send` when the broker is not reachable in time."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription the connection keeps (and restores after every reconnect)."""

    destination: str
    id: str
    #: ``activemq.subscriptionName``: a durable topic subscription (needs ``client_id``).
    durable_name: str | None = None
    #: A JMS message selector.
    selector: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def frame_headers(self, prefetch: int) -> dict[str, str]:
        headers = {"activemq.prefetchSize": str(prefetch), **self.headers}
        if self.durable_name:
            headers["activemq.subscriptionName"] = self.durable_name
        if self.selector:
            headers["selector"] = self.selector
        return headers


@dataclass(slots=True)
class StompMessage:
    """A MESSAGE frame, body as bytes (stomp.py's decoding is off: it would hide bad bytes)."""

    headers: dict[str, str]
    body: bytes
    #: Which connection delivered it; acks only make sense on that one.
    generation: int

    @property
    def destination(self) -> str:
        return self.headers.get("destination", "")

    @property
    def subscription(self) -> str:
        return self.headers.get("subscription", "")

    @property
    def message_id(self) -> str:
        return self.headers.get("message-id", "")

    @property
    def ack_id(self) -> str:
        """STOMP 1.2's ``ack`` header (what ACK must carry)."""
        return self.headers.get("ack") or self.message_id

    @property
    def redelivered(self) -> bool:
        return self.headers.get("redelivered") == "true"

    @property
    def type(self) -> str | None:
        """JMSType."""
        return self.headers.get("type")

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get("correlation-id")

    @property
    def reply_to(self) -> str | None:
        return self.headers.get("reply-to")

    def text(self) -> str:
        """The body as text: UTF-8, or the modified UTF-8 a Java publisher's TextMessage
        arrives in (see :mod:`ccbus_stomp.jmstext`); :class:`UnicodeDecodeError` if neither."""
        return decode_jms_text(self.body)


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """Runs on stomp.py's receiver thread: hands everything to the connection at once."""

    def __init__(self, owner: StompConnection, generation: int) -> None:
        self.owner = owner
        self.generation = generation

    def on_connected(self, frame: Any) -> None:
        self.owner._thread_connected(self.generation, frame)

    def on_message(self, frame: Any) -> None:
        self.owner._thread_message(self.generation, frame)

    def on_receipt(self, frame: Any) -> None:
        self.owner._thread_receipt(self.generation, frame)

    def on_error(self, frame: Any) -> None:
        self.owner._thread_error(self.generation, frame)

    def on_heartbeat_timeout(self) -> None:
        self.owner._thread_lost(self.generation, "no heartbeat from the broker")

    def on_disconnected(self) -> None:
        self.owner._thread_lost(self.generation, "connection closed")


class _Attempt:
    """One connection's life, shared between the loop and the receiver thread."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.connected = anyio.Event()
        self.lost = anyio.Event()
        self.reason = ""
        self.error: str | None = None
        self.server = ""


class StompConnection:
    """A STOMP connection that stays up: see the module docstring."""

    def __init__(
        self,
        options: StompOptions,
        *,
        name: str,
        log: logging.Logger | None = None,
        set_state: Callable[[str], None] = lambda state: None,
    ) -> None:
        self.options = options
        self.name = name
        self.log = log or logging.getLogger(f"ccbus.stomp.{name}")
        self.set_state = set_state
        self.subscriptions: dict[str, Subscription] = {}
        #: connects, losses, received, acked, acks_dropped, sent, error_frames, ...
        self.stats: Counter[str] = Counter()
        self.state = "stopped"
        self._ids = itertools.count(1)
        self._generation = 0
        self._conn: Any = None
        self._attempt: _Attempt | None = None
        self._connected = anyio.Event()
        self._inbox: deque[StompMessage] = deque()
        self._inbox_waiting = False
        self._inbox_event = anyio.Event()
        self._acks: list[tuple[int, str]] = []
        self._acks_pending = anyio.Event()
        self._acks_in_flight = 0
        self._acks_done = anyio.Event()
        self._receipts: dict[str, anyio.Event] = {}
        self._token: Any = None
        self._tg: TaskGroup | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> StompConnection:
        self._token = anyio.lowlevel.current_token()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._supervise)
        self._tg.start_soon(self._ack_writer)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.flush_acks()
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            # also when the caller is being cancelled: a connection left open would hold
            # the client id, and the next connection with it would be refused
            with anyio.CancelScope(shield=True):
                await self._close_current("stopping")
            self._set_state("stopped")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        """The current connection's number (1 for the first; grows on every reconnect)."""
        return self._generation

    async def wait_connected(self, within: float | None = None) -> None:
        """Wait until the broker connection is up (raises TimeoutError after ``within`` s)."""
        with anyio.fail_after(within):
            await self._connected.wait()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.set_state(state)

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self) -> None:
        backoff = Backoff(initial=self.options.backoff_initial, cap=self.options.backoff_cap)
        url = self.options.safe_url
        while True:
            self._set_state("connecting")
            attempt = await self._connect()
            if attempt is None:
                delay = backoff.next_delay()
                self._set_state("reconnecting")
                self.log.info("stomp %s: retrying %s in %.1fs", self.name, url, delay)
                await anyio.sleep(delay)
                continue
            backoff.started()
            self.stats["connects"] += 1
            self._set_state("connected")
            self.log.info(
                "stomp %s: connected to %s (%s), %d subscription(s)%s",
                self.name, url, attempt.server or "broker", len(self.subscriptions),
                " restored" if self.stats["connects"] > 1 else "",
            )
            self._connected.set()
            await attempt.lost.wait()
            self._connected = anyio.Event()
            self.stats["losses"] += 1
            self._set_state("reconnecting")
            await self._close_current(attempt.reason)
            delay = backoff.next_delay()
            self.log.warning(
                "stomp %s: lost the connection to %s (%s); reconnecting in %.1fs",
                self.name, url, attempt.reason, delay,
            )
            await anyio.sleep(delay)

    async def _connect(self) -> _Attempt | None:
        """One attempt: socket, TLS, CONNECT, then the subscriptions. None if it failed."""
        self._generation += 1
        attempt = _Attempt(self._generation)
        self._attempt = attempt
        options = self.options
        conn = Connection(
            [(options.host, options.port)],
            timeout=options.connect_timeout,
            heartbeats=(int(options.heartbeat_send * 1000), int(options.heartbeat_receive * 1000)),
            vhost=options.vhost,
        )
        if options.tls:
            conn.set_ssl(
                for_hosts=[(options.host, options.port)],
                ca_certs=str(options.ca_file) if options.ca_file else None,
                cert_file=str(options.cert_file) if options.cert_file else None,
                key_file=str(options.key_file) if options.key_file else None,
                verify=options.verify_tls,
                ssl_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        conn.set_listener("ccbus", _Listener(self, attempt.generation))
        headers = {"client-id": options.client_id} if options.client_id else {}
        self._conn = conn
        url = options.safe_url
        try:
            with anyio.fail_after(options.connect_timeout + 1):
                await anyio.to_thread.run_sync(
                    lambda: _no_delay(conn.connect(
                        options.username, options.password, wait=False, headers=headers
                    ), conn),
                    abandon_on_cancel=True,
                )
                await attempt.connected.wait()
        except TimeoutError:
            self._fail(attempt, f"no CONNECTED frame within {options.connect_timeout:g}s")
        except (stomp.exception.StompException, OSError, ssl.SSLError) as err:
            self._fail(attempt, _describe(err) or "cannot connect")
        if attempt.error is None and attempt.lost.is_set():
            attempt.error = attempt.reason
        if attempt.error is not None:
            self.stats["connect_failures"] += 1
            self.log.warning("stomp %s: cannot connect to %s: %s", self.name, url, attempt.error)
            await self._close_current(attempt.error)
            return None
        try:
            for subscription in list(self.subscriptions.values()):
                await self._send_subscribe(conn, subscription)
        except (stomp.exception.StompException, OSError) as err:
            self.log.warning(
                "stomp %s: connection to %s failed while subscribing: %s",
                self.name, url, _describe(err),
            )
            await self._close_current("subscribe failed")
            return None
        return attempt

    def _fail(self, attempt: _Attempt, reason: str) -> None:
        if attempt.error is None:
            attempt.error = reason

    async def _send_subscribe(self, conn: Any, subscription: Subscription) -> None:
        """SUBSCRIBE with a receipt, and wait for it: once this returns, the broker
        has the subscription (a durable one keeps messages from then on)."""
        headers = subscription.frame_headers(self.options.prefetch)
        receipt_id = f"s-{self._generation}-{next(self._ids)}"
        done = self._receipts[receipt_id] = anyio.Event()
        try:
            await anyio.to_thread.run_sync(
                lambda: conn.subscribe(
                    subscription.destination, subscription.id, ack="client-individual",
                    headers={**headers, "receipt": receipt_id},
                )
            )
            with anyio.move_on_after(self.options.connect_timeout) as scope:
                await done.wait()
            if scope.cancelled_caught:
                raise stomp.exception.StompException(
                    f"no receipt for SUBSCRIBE {subscription.destination} within "
                    f"{self.options.connect_timeout:g}s"
                )
        finally:
            self._receipts.pop(receipt_id, None)

    async def _close_current(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return

        def close() -> None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001 - the socket may already be gone
                pass
            try:
                # close the socket rather than wait for the receiver thread (``stop()``): a
                # silent broker would keep that thread in recv() for as long as TCP lives
                conn.transport.disconnect_socket()
            except Exception:  # noqa: BLE001
                pass

        with anyio.move_on_after(5):
            await anyio.to_thread.run_sync(close, abandon_on_cancel=True)

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self,
        destination: str,
        *,
        durable_name: str | None = None,
        selector: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,  # noqa: A002 - STOMP's name for it
    ) -> Subscription:
        """Subscribe now if connected, and after every reconnect.

        ``destination`` is ``/topic/NAME`` or ``/queue/NAME``.  A durable
        subscription (``durable_name``) keeps messages published while ccbus
        is away; it needs ``client_id`` in the options.
        """
        if durable_name and not self.options.client_id:
            raise ValueError("a durable subscription needs client_id in the broker options")
        subscription = Subscription(
            destination=destination,
            id=id or f"sub-{next(self._ids)}",
            durable_name=durable_name,
            selector=selector,
            headers=dict(headers or {}),
        )
        self.subscriptions[subscription.id] = subscription
        conn = self._conn
        if conn is not None and self.connected:
            try:
                await self._send_subscribe(conn, subscription)
            except (stomp.exception.StompException, OSError) as err:
                # the supervisor re-subscribes after it reconnects
                self.log.info("stomp %s: subscribe %s deferred: %s", self.name, destination,
                              _describe(err))
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.pop(subscription.id, None)
        conn = self._conn
        if conn is not None and self.connected:
            try:
                await anyio.to_thread.run_sync(lambda: conn.unsubscribe(subscription.id))
            except (stomp.exception.StompException, OSError):
                pass

    # ------------------------------------------------------------------ receiving

    def __aiter__(self) -> AsyncIterator[StompMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StompMessage]:
        while True:
            yield await self.receive()

    async def receive(self) -> StompMessage:
        """The next message from any subscription, in arrival order."""
        inbox = self._inbox
        while not inbox:
            self._inbox_event = anyio.Event()
            self._inbox_waiting = True
            if inbox:  # arrived between the check and the flag
                self._inbox_waiting = False
                break
            await self._inbox_event.wait()
        self._inbox_waiting = False
        return inbox.popleft()

    def receive_nowait(self) -> StompMessage | None:
        """The next message if one is already here (lets a consumer drain a burst)."""
        try:
            return self._inbox.popleft()
        except IndexError:
            return None

    # ------------------------------------------------------------------ acknowledging

    async def ack(self, message: StompMessage) -> None:
        """Acknowledge ``message`` (client-individual); batched, sent from a worker thread."""
        if message.generation != self._generation:
            # delivered on a connection that is gone: the broker redelivers it
            self.stats["acks_dropped"] += 1
            return
        self._acks.append((message.generation, message.ack_id))
        self._acks_pending.set()

    async def flush_acks(self) -> None:
        """Wait until every ack given so far was written (or dropped with its connection)."""
        while self._acks or self._acks_in_flight:
            if self._acks_done.is_set():
                self._acks_done = anyio.Event()
            await self._acks_done.wait()

    async def _ack_writer(self) -> None:
        while True:
            await self._acks_pending.wait()
            if len(self._acks) < self.options.prefetch // 4:
                # let a burst gather: one thread hop per batch, not per message (the
                # broker's prefetch window is far larger than what a few ms collect)
                await anyio.sleep(ACK_GATHER)
            self._acks_pending = anyio.Event()
            batch, self._acks = self._acks, []
            self._acks_in_flight = len(batch)
            conn = self._conn
            current = [ack for generation, ack in batch if generation == self._generation]
            self.stats["acks_dropped"] += len(batch) - len(current)
            try:
                if current and conn is not None:
                    await anyio.to_thread.run_sync(_ack_all, conn, current)
                    self.stats["acked"] += len(current)
            except (stomp.exception.StompException, OSError) as err:
                self.stats["acks_dropped"] += len(current)
                self.log.info("stomp %s: %d ack(s) not sent (%s); the broker redelivers",
                              self.name, len(current), _describe(err))
            finally:
                self._acks_in_flight = 0
                self._acks_done.set()

    # ------------------------------------------------------------------ sending

    async def send(
        self,
        destination: str,
        body: str,
        *,
        type: str | None = None,  # noqa: A002 - the STOMP/JMS name
        correlation_id: str | None = None,
        reply_to: str | None = None,
        ttl: float | None = None,
        persistent: bool = True,
        headers: Mapping[str, str] | None = None,
        receipt: bool = False,
        wait_connected: float = 0.0,
    ) -> None:
        """Send a JMS TextMessage (no ``content-length``) to ``destination``.

        ``body`` goes out as Java's modified UTF-8 (:func:`~ccbus_stomp.jmstext.encode_jms_text`),
        so a JMS consumer reads it back whole, emoji and NUL included.

        :param type: JMSType.
        :param correlation_id: JMSCorrelationID.
        :param reply_to: JMSReplyTo (``/queue/x``, ``/temp-queue/x``...).
        :param ttl: time to live in seconds (sets ``expires``, hence JMSExpiration).
        :param persistent: survive a broker restart (STOMP's default is not to).
        :param receipt: wait for the broker's RECEIPT: the message is in its hands.
        :param wait_connected: wait this long for a connection before
            raising :class:`NotConnectedError`.
        """
        # modified UTF-8: what a Java consumer can read, and NUL as C0 80, so that a NUL in
        # the text cannot end the frame (there is no content-length to say where it ends)
        data = encode_jms_text(body)
        frame: dict[str, str] = {k: v for k, v in (headers or {}).items() if k not in _RESERVED}
        if type is not None:
            frame["type"] = type
        if correlation_id is not None:
            frame["correlation-id"] = correlation_id
        if reply_to is not None:
            frame["reply-to"] = reply_to
        if ttl is not None:
            frame["expires"] = str(int((time.time() + ttl) * 1000))
        frame["persistent"] = "true" if persistent else "false"
        if not self.connected and wait_connected > 0:
            with anyio.move_on_after(wait_connected):
                await self._connected.wait()
        conn = self._conn
        if conn is None or not self.connected:
            raise NotConnectedError(
                f"stomp {self.name}: not connected to {self.options.safe_url}"
            )
        done: anyio.Event | None = None
        if receipt:
            receipt_id = f"r-{self._generation}-{next(self._ids)}"
            frame["receipt"] = receipt_id
            done = self._receipts[receipt_id] = anyio.Event()
        try:
            await anyio.to_thread.run_sync(lambda: conn.send(destination, data, headers=frame))
            self.stats["sent"] += 1
            if done is not None:
                lost = self._attempt.lost if self._attempt else anyio.Event()
                with anyio.move_on_after(self.options.connect_timeout):
                    async with anyio.create_task_group() as tg:

                        async def until_lost() -> None:
                            await lost.wait()
                            tg.cancel_scope.cancel()

                        tg.start_soon(until_lost)
                        await done.wait()
                        tg.cancel_scope.cancel()
                if not done.is_set():
                    raise NotConnectedError(
                        f"stomp {self.name}: no receipt from the broker for the message to "
                        f"{destination} (connection lost, or none within "
                        f"{self.options.connect_timeout:g}s); it may or may not have arrived"
                    )
        except (stomp.exception.StompException, OSError) as err:
            raise NotConnectedError(f"stomp {self.name}: send failed: {_describe(err)}") from err
        finally:
            if receipt:
                self._receipts.pop(frame["receipt"], None)

    # ------------------------------------------------------------------ receiver thread side

    def _current(self, generation: int) -> _Attempt | None:
        attempt = self._attempt
        return attempt if attempt is not None and attempt.generation == generation else None

    def _call_loop(self, func: Callable[[], None]) -> None:
        """Run ``func`` on the loop, from stomp.py's thread (the only way in)."""
        try:
            anyio.from_thread.run_sync(func, token=self._token)
        except Exception:  # noqa: BLE001 - the loop is gone: nobody is waiting any more
            pass

    def _thread_connected(self, generation: int, frame: Any) -> None:
        attempt = self._current(generation)
        if attempt is None:
            return
        attempt.server = str(frame.headers.get("server", ""))
        self._call_loop(attempt.connected.set)

    def _thread_message(self, generation: int, frame: Any) -> None:
        body = frame.body if isinstance(frame.body, bytes) else str(frame.body).encode()
        # stomp.py builds a fresh headers dict per frame: it is ours to keep
        self._inbox.append(StompMessage(frame.headers, body, generation))
        self.stats["received"] += 1
        if self._inbox_waiting:
            self._inbox_waiting = False
            self._call_loop(self._wake_inbox)

    def _wake_inbox(self) -> None:
        self._inbox_event.set()

    def _thread_receipt(self, generation: int, frame: Any) -> None:
        event = self._receipts.get(str(frame.headers.get("receipt-id", "")))
        if event is not None:
            self._call_loop(event.set)

    def _thread_error(self, generation: int, frame: Any) -> None:
        message = str(frame.headers.get("message", "")) or "ERROR frame"
        detail = frame.body.decode("utf-8", "replace") if isinstance(frame.body, bytes) else ""
        first_line = detail.strip().splitlines()[0] if detail.strip() else ""
        self.stats["error_frames"] += 1
        self.log.warning("stomp %s: broker sent ERROR: %s%s", self.name, message,
                         f" ({first_line})" if first_line and first_line != message else "")
        attempt = self._current(generation)
        if attempt is not None and not attempt.connected.is_set():
            # an ERROR instead of CONNECTED: credentials, client id in use ...
            attempt.error = message
            self._thread_lost(generation, message)

    def _thread_lost(self, generation: int, reason: str) -> None:
        attempt = self._current(generation)
        if attempt is None or attempt.lost.is_set():
            return
        attempt.reason = reason
        if attempt.error is None and not attempt.connected.is_set():
            attempt.error = reason

        def lost() -> None:
            attempt.lost.set()
            attempt.connected.set()  # release a connect() still waiting

        self._call_loop(lost)


def _no_delay(result: Any, conn: Any) -> Any:
    """Turn Nagle's algorithm off on the connection's socket (TCP_NODELAY).

    A consumer writes an ACK and then, say, a reply: two small writes in a
    row.  With Nagle on, the second waits until the first is acknowledged,
    and the broker delays that acknowledgement by up to 40 ms (delayed ACK),
    so every request/reply round trip took 40+ ms on loopback instead of a
    few.  STOMP frames are whole messages; there is nothing to coalesce.
    """
    sock = getattr(getattr(conn, "transport", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a test double) or already closed: nothing to tune
            pass
    return result


def _ack_all(conn: Any, ack_ids: list[str]) -> None:
    """Write a batch of ACK frames in one go (stomp.py's ``ack`` is one frame per call)."""
    data = ack_frames(ack_ids)
    transport = conn.transport
    if transport.blocking:
        transport.send(data)
    else:  # TLS: stomp.py's receive loop writes for us, as it does for its own frames
        transport.send_queue.put(data)


def _describe(err: BaseException) -> str:
    text = str(err)
    name = type(err).__name__
    return f"{name}: {text}" if text else name
