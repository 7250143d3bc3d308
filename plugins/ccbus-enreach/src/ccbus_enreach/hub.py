"""One signalrcore connection to the RTE hub, bridged safely into the anyio event loop.

signalrcore is thread-based: ``start()`` does blocking HTTP and socket I/O,
and every message is handled on its receive thread.  Nothing here lets that
thread touch the event loop's objects directly:

* ``MessageReceived`` arguments go into a :class:`Handoff`, a bounded,
  batched queue.  When it is full the receive thread *waits*, so it stops
  reading the socket and TCP pushes back on the hub (the bus's
  back-pressure reaches the vendor), and nothing is dropped.  The loop is
  woken (``call_soon_threadsafe``, see :func:`_waker`) only when it is idle,
  so a busy stream costs no cross-thread call per message.
* Hub method calls (``Subscribe`` ...) complete on the receive thread too,
  on ``on_invocation`` or (for a hub error) on the global ``on_error``; both
  are matched by invocation id and resolve an :class:`anyio.Event`.
* Blocking calls (``start``, sends, ``stop``) run in worker threads, and all
  sends share one lock: signalrcore does not serialise writes itself.
* The hub's (or a proxy's) RFC 6455 pings are answered with pongs on the
  receive thread: signalrcore does not, so :mod:`.transport` gives it a
  WebSocket client that does, installed before the connection starts.

A frame the JSON hub protocol cannot read (whatever the exception: not JSON,
nested a hundred thousand levels deep, not a SignalR message) would end
signalrcore's receive thread; :class:`TolerantJsonHubProtocol` reports it
(``on_malformed``, for the source to refuse in the loop) and skips it instead.
A ``MessageReceived`` invocation's arguments reach the hand-off as a
:class:`Received` list that keeps the frame's text, for a dead letter.  It
also notes when anything last arrived, which is how a silent, half-dead
connection is noticed (signalrcore has no server timeout of its own).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import urllib.error
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from signalrcore.hub.base_hub_connection import BaseHubConnection  # type: ignore[import-untyped]
from signalrcore.hub.errors import UnAuthorizedHubError  # type: ignore[import-untyped]
from signalrcore.hub_connection_builder import HubConnectionBuilder  # type: ignore[import-untyped]
from signalrcore.messages.ping_message import PingMessage  # type: ignore[import-untyped]
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol  # type: ignore[import-untyped]
from signalrcore.transport.sockets.errors import (  # type: ignore[import-untyped]
    SocketClosedError,
    SocketHandshakeError,
)
from signalrcore.types import HttpTransportType  # type: ignore[import-untyped]

from ccbus import decode_json

from .errors import HubError, Transient, Unauthorized
from .protocol import MESSAGE_RECEIVED
from .transport import install as install_ponging_transport

__all__ = ["Handoff", "HubSession", "Received", "TolerantJsonHubProtocol"]

log = logging.getLogger(__name__)
# signalrcore logs each failure twice at WARNING ("AuthHubConnection", then the bare
# exception text) before raising it; the source logs one clear line per failure itself.
logging.getLogger("SignalRCoreClient").setLevel(logging.ERROR)


class Handoff:
    """Receive thread -> event loop: bounded, batched, woken once per idle period."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._waiter: anyio.Event | None = None
        self._closed = False
        self._wake = _waker()
        #: times the receive thread had to wait for room (back-pressure applied)
        self.waits = 0

    def put(self, item: Any) -> None:
        """From the receive thread: queue ``item``, waiting while the queue is full."""
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed:
                self.waits += 1
                self._cond.wait(1.0)
            if self._closed:
                return
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._wake(waiter.set)

    async def get_batch(self) -> list[Any]:
        """In the loop: everything queued so far (at least one item); waits when empty."""
        while True:
            with self._cond:
                if self._items:
                    batch = list(self._items)
                    self._items.clear()
                    self._cond.notify_all()
                    return batch
                if self._closed:
                    return []
                waiter = self._waiter = anyio.Event()
            await waiter.wait()

    def take_nowait(self) -> list[Any]:
        """Whatever is queued, without waiting (what was received before the connection ended)."""
        with self._cond:
            batch = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return batch

    def close(self) -> None:
        """Release a waiting receive thread and the reader; later items are ignored."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()


def _waker() -> Callable[[Callable[[], object]], None]:
    """How a thread runs a callback in this event loop.

    On asyncio (what ``ccbus run`` uses) ``call_soon_threadsafe``: it does
    not wait, so the receive thread goes straight back to the socket.
    Elsewhere ``anyio.from_thread.run_sync``, which waits for the loop.
    Called once per idle period, never per message under load.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another backend (trio)
        loop = None
    if loop is not None:

        def wake(func: Callable[[], object]) -> None:
            try:
                loop.call_soon_threadsafe(func)
            except RuntimeError:  # the loop is closed: nobody is left to read
                pass

        return wake
    token = anyio.lowlevel.current_token()

    def wake_blocking(func: Callable[[], object]) -> None:
        try:
            anyio.from_thread.run_sync(func, token=token)
        except RuntimeError:  # the loop has finished
            pass

    return wake_blocking


class TolerantJsonHubProtocol(JsonHubProtocol):  # type: ignore[misc]
    """The JSON hub protocol, minus the ways one bad frame ends the receive thread."""

    def __init__(self, on_malformed: Callable[[str, str], None]) -> None:
        super().__init__()
        self.on_malformed = on_malformed
        #: ``time.monotonic()`` when the last frame arrived (pings included)
        self.last_seen = time.monotonic()

    def parse_messages(self, raw: Any) -> list[Any]:
        self.last_seen = time.monotonic()
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        result = []
        for record in raw.split(self.record_separator):
            if not record:
                continue
            try:
                doc = decode_json(record)
                if not isinstance(doc, dict):
                    raise ValueError(f"a hub message must be an object, not {type(doc).__name__}")
                if not doc:
                    continue
                message = self.get_message(doc)
                arguments = getattr(message, "arguments", None)
                if getattr(message, "target", None) == MESSAGE_RECEIVED and isinstance(
                    arguments, list
                ):
                    message.arguments = Received(arguments, record)
                result.append(message)
            except Exception as err:  # noqa: BLE001 - one frame must never end the thread
                self.on_malformed(record, _why(err))
        return result


class Received(list[Any]):
    """A ``MessageReceived`` argument list, with the frame it came in (``raw``).

    A list still (what the hub sent), so readers of the hand-off see the
    arguments; ``raw`` is what a dead letter keeps when the message is refused.
    """

    __slots__ = ("raw",)

    def __init__(self, arguments: list[Any], raw: str) -> None:
        super().__init__(arguments)
        self.raw = raw


def _why(err: BaseException) -> str:
    """``Type: text`` of an exception, even one whose ``str()`` fails (a RecursionError can)."""
    try:
        text = str(err)
    except Exception:  # noqa: BLE001
        text = ""
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


@dataclass(eq=False, slots=True)
class _Call:
    method: str
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: str | None = None


class HubSession:
    """One connected period with the hub: start, invoke, receive, ping, stop.

    ``on_malformed(record, why)`` runs on the receive thread for a frame that
    cannot be read; keep it quick and thread-safe.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_pending: int,
        skip_negotiation: bool = False,
        verify_tls: bool = True,
        on_malformed: Callable[[str, str], None] = lambda record, why: None,
    ) -> None:
        self.url = url
        self.handoff = Handoff(max_pending)
        self.protocol = TolerantJsonHubProtocol(on_malformed)
        self.opened = threading.Event()
        self.closed = anyio.Event()
        #: set by stop(): a start() still running in an abandoned thread undoes itself
        self._stopping = threading.Event()
        self._wake = _waker()
        self._send_lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self.errors: Counter[str] = Counter()
        install_ponging_transport()  # answer the hub's WebSocket pings (see .transport)
        options: dict[str, Any] = {
            "access_token_factory": lambda: token,
            "transport": HttpTransportType.web_sockets,
            "skip_negotiation": skip_negotiation,
            "verify_ssl": verify_tls,
        }
        self.hub: BaseHubConnection = (
            HubConnectionBuilder()
            .with_url(url, options=options)
            .with_hub_protocol(self.protocol)
            .build()
        )
        self.hub.on(MESSAGE_RECEIVED, self.handoff.put)
        self.hub.on_open(self.opened.set)
        self.hub.on_close(self._on_close)
        self.hub.on_error(self._on_error)

    # -- thread side ------------------------------------------------------------------

    def _call_soon(self, func: Callable[[], None]) -> None:
        self._wake(func)

    def _on_close(self) -> None:
        self.opened.set()  # wake a start() still waiting for the handshake
        self._call_soon(self.closed.set)

    def _on_error(self, message: Any) -> None:
        """A hub error completion (matched to its call), or a socket/handshake error."""
        invocation_id = getattr(message, "invocation_id", None)
        error = getattr(message, "error", None) or str(message)
        call = self._calls.get(invocation_id) if invocation_id else None
        if call is None:
            self.errors[str(error)[:80]] += 1
            return
        call.error = str(error)
        self._call_soon(call.done.set)

    def _on_completion(self, call: _Call, message: Any) -> None:
        call.result = getattr(message, "result", None)
        self._call_soon(call.done.set)

    # -- loop side --------------------------------------------------------------------

    async def start(self, within: float) -> None:
        """Negotiate, connect and complete the SignalR handshake, or raise why not."""
        try:
            with anyio.fail_after(within):
                await anyio.to_thread.run_sync(
                    self._start_blocking, within, abandon_on_cancel=True
                )
        except TimeoutError:
            raise Transient(f"no SignalR handshake from {self.url} within {within:g}s") from None
        if self.closed.is_set() or not self.hub.transport or not self.hub.transport.is_connected():
            raise Transient("the hub closed the connection during the SignalR handshake")

    def _start_blocking(self, timeout: float) -> None:
        try:
            self.hub.start()
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise Unauthorized(f"negotiate answered {err.code} {err.reason}") from None
            raise Transient(f"negotiate answered {err.code} {err.reason}") from None
        except UnAuthorizedHubError:
            raise Unauthorized("negotiate answered 401") from None
        except SocketHandshakeError as err:
            status = _status_line(str(err))
            if " 401" in status or " 403" in status:
                raise Unauthorized(f"WebSocket upgrade refused: {status}") from None
            raise Transient(f"WebSocket upgrade refused: {status}") from None
        except (OSError, urllib.error.URLError, ValueError) as err:
            raise Transient(f"cannot connect to {self.url}: {err}") from None
        if self._stopping.is_set():  # start() timed out and was given up meanwhile
            self._stop_blocking()
            return
        _buffer_reads(getattr(self.hub.transport, "_client", None))
        if not self.opened.wait(timeout):
            raise Transient("no SignalR handshake response")

    async def invoke(self, method: str, arguments: list[Any], within: float) -> Any:
        """Call a hub method and return its result; :class:`HubError` for a hub error."""
        invocation_id = str(uuid.uuid4())
        call = _Call(method)
        self._calls[invocation_id] = call
        try:
            await self._send(
                lambda: self.hub.invoke(
                    method,
                    arguments,
                    on_invocation=lambda message: self._on_completion(call, message),
                    invocation_id=invocation_id,
                )
            )
            with anyio.fail_after(within):
                async with anyio.create_task_group() as tg:

                    async def closed() -> None:
                        await self.closed.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(closed)
                    await call.done.wait()
                    tg.cancel_scope.cancel()
        except TimeoutError:
            raise Transient(f"{method}: no completion within {within:g}s") from None
        finally:
            self._calls.pop(invocation_id, None)
        if not call.done.is_set():
            raise Transient(f"{method}: the connection closed before the hub answered")
        if call.error is not None:
            raise HubError(f"{method}: the hub answered with an error: {call.error}")
        return call.result

    async def ping(self) -> None:
        """Send a SignalR ping (type 6), so the hub knows this client is alive."""
        await self._send(lambda: self.hub.transport.send(PingMessage()))

    async def _send(self, func: Callable[[], Any]) -> None:
        def locked() -> None:
            with self._send_lock:
                func()

        try:
            await anyio.to_thread.run_sync(locked)
        except (OSError, ValueError) as err:
            raise Transient(f"sending to the hub failed: {err}") from None
        except Exception as err:  # signalrcore's HubConnectionError: not connected
            raise Transient(f"sending to the hub failed: {type(err).__name__}: {err}") from None

    def silent_for(self) -> float:
        """Seconds since the hub last sent anything."""
        return time.monotonic() - self.protocol.last_seen

    async def stop(self) -> None:
        """Close the connection and let the receive thread end; never raises."""
        self._stopping.set()
        self.handoff.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._stop_blocking)

    def _stop_blocking(self) -> None:
        client = getattr(self.hub.transport, "_client", None)
        sock = getattr(client, "sock", None)
        if sock is not None:
            # close() alone does not wake a recv() blocked in another thread on Linux
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.hub.stop()
        except Exception as err:  # a broken connection may fail to close; it is gone anyway
            log.debug("closing the hub connection: %s", err)


#: How much one read of the hub's socket may take: many WebSocket frames at once.
READ_SIZE = 65536


def _buffer_reads(client: Any) -> None:
    """Make signalrcore's WebSocket client read the socket in large chunks.

    signalrcore reads every frame with two or three ``recv`` calls of exactly
    the bytes it needs next (header, extended length, payload).  Each call
    releases the GIL and must win it back from the busy event loop, which can
    take a whole thread switch interval: the receive thread then spends most
    of its time waiting, not reading.  This swaps the client's
    ``_recv_exactly`` (looked up on the instance for every read) for one
    served from a buffer that a single ``recv`` of up to :data:`READ_SIZE`
    bytes fills.  It reads exactly what the original did, in the same order,
    and fails the same way (:class:`SocketClosedError` when the hub closes),
    so the frame decoding around it is signalrcore's, unchanged.  Swapping
    between two reads loses nothing: the original never reads ahead.
    """
    sock = getattr(client, "sock", None)
    if sock is None or not hasattr(client, "_recv_exactly"):
        return  # not the WebSocket client this was written against: leave it alone
    buffer = bytearray()

    def recv_exactly(size: int) -> bytes:
        while len(buffer) < size:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise SocketClosedError()
            buffer.extend(chunk)
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    client._recv_exactly = recv_exactly


def _status_line(text: str) -> str:
    for line in text.splitlines():
        if "HTTP/" in line:
            return line.strip().removeprefix("Handshake failed: ")
    return text[:80]
