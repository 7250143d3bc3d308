"""signalrcore's WebSocket transport, made to answer RFC 6455 pings.

signalrcore 1.0 speaks WebSocket with its own socket code
(``signalrcore.transport.websockets.websocket_client.WebSocketClient``), not
with websocket-client.  Its ``_recv_frame`` reads one frame and, unless it is
a close frame, hands the payload up as a message: a **ping** (opcode 0x9) from
the hub or a proxy on the way is passed to the hub protocol as if it were
SignalR text, and no **pong** goes back.  RFC 6455 (section 5.5.2) says an
endpoint MUST answer a ping with a pong carrying the same application data;
load balancers, reverse proxies and servers that enforce it close a client
that does not.  The same reader also glued a control frame arriving between
the fragments of a message (which RFC 6455 allows) into the message.

The fix here is signalrcore's own classes with one method changed:

* :class:`PongingWebSocketClient` reads frames with signalrcore's
  ``_read_one_frame`` (so the buffered reader that :mod:`.hub` installs still
  applies) and handles control frames before returning a message: a ping is
  answered with a pong of the same payload, a pong is ignored (unsolicited
  pongs are allowed), a close ends the connection as before, anything else
  fails the connection with 1002 (protocol error).  Its ``send`` takes a
  lock: pongs go out from the receive thread while the event loop sends
  invocations and SignalR pings from worker threads, and two frames written
  at once would interleave on the socket.
* :class:`PongingWebsocketTransport` is signalrcore's WebSocket transport
  creating that client.
* :func:`install` puts the transport in signalrcore's transport table
  (``signalrcore.transport.transport_factory.TRANSPORTS``), where a hub
  connection looks up the WebSockets transport when it starts.  That table is
  process-wide, so every signalrcore connection in the process answers pings
  from then on; that is what the RFC requires of all of them.  It has to be
  in place before the connection starts: the receive thread reads frames from
  the moment the WebSocket is open, so swapping the reader afterwards could
  miss a ping.

Pings and pongs are not SignalR messages, so they no longer reach the hub
protocol: they do not count as "the hub said something" for the source's
``server_timeout`` (an intermediary may send them for a hub long gone).

Written against signalrcore 1.0.x (the plugin's pin); upstream has the same
reader, so a fix there would make this module unnecessary.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, NoReturn

from signalrcore.protocol.messagepack_protocol import (  # type: ignore[import-untyped]
    MessagePackHubProtocol,
)
from signalrcore.transport import transport_factory  # type: ignore[import-untyped]
from signalrcore.transport.sockets.errors import SocketClosedError  # type: ignore[import-untyped]
from signalrcore.transport.websockets.websocket_client import (  # type: ignore[import-untyped]
    WebSocketClient,
)
from signalrcore.transport.websockets.websocket_transport import (  # type: ignore[import-untyped]
    WebsocketTransport,
)
from signalrcore.types import HttpTransportType  # type: ignore[import-untyped]

__all__ = ["PongingWebSocketClient", "PongingWebsocketTransport", "install"]

OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
#: RFC 6455 section 5.5: a control frame's payload is at most this long, and never fragmented.
MAX_CONTROL_PAYLOAD = 125
PROTOCOL_ERROR = 1002


class PongingWebSocketClient(WebSocketClient):  # type: ignore[misc]
    """signalrcore's WebSocket client, answering pings and reading past control frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send_lock = threading.Lock()
        #: pongs sent in answer to the peer's pings
        self.pongs_sent = 0

    def send(self, message: str | bytes, opcode: int = 0x1) -> None:
        """Write one whole frame; frames from different threads must not interleave."""
        with self._send_lock:
            super().send(message, opcode=opcode)

    def _recv_frame(self) -> Any:
        """The next message (text or bytes, as signalrcore's reader returns it)."""
        fin, _opcode, payload = self._next_data_frame()
        while not fin:
            fin, _opcode, data = self._next_data_frame()
            payload += data
        if self.is_trace_enabled():
            self.logger.debug(f"[TRACE] - {payload!r}")
        return self.prepare_data(payload)

    def _next_data_frame(self) -> tuple[bool, int, bytes]:
        """The next text, binary or continuation frame; control frames are handled on the way."""
        while True:
            fin, opcode, data = self._read_one_frame()
            if opcode < OP_CLOSE:
                return fin, opcode, data
            self._control_frame(fin, opcode, data)

    def _control_frame(self, fin: bool, opcode: int, data: bytes) -> None:
        """Answer a ping, ignore a pong, end on a close; fail on anything malformed."""
        if opcode == OP_CLOSE:
            raise SocketClosedError()
        if opcode not in (OP_PING, OP_PONG) or not fin or len(data) > MAX_CONTROL_PAYLOAD:
            self._fail(f"bad control frame (opcode {opcode:#x}, fin {fin}, {len(data)} bytes)")
        if opcode == OP_PING:
            self.send(data, opcode=OP_PONG)
            self.pongs_sent += 1

    def _fail(self, why: str) -> NoReturn:
        """Close with 1002 (protocol error) and end the receive loop, as signalrcore does."""
        self.logger.warning(f"WebSocket protocol error from the server: {why}")
        try:
            self.send(struct.pack(">H", PROTOCOL_ERROR), opcode=OP_CLOSE)
        except Exception:  # the socket may already be gone; the connection ends either way
            pass
        raise SocketClosedError()


class PongingWebsocketTransport(WebsocketTransport):  # type: ignore[misc]
    """signalrcore's WebSocket transport with :class:`PongingWebSocketClient`."""

    def create_client(self) -> PongingWebSocketClient:
        return PongingWebSocketClient(
            url=self.url,
            connection_id=self.connection_id,
            headers=self.headers,
            is_binary=type(self.protocol) is MessagePackHubProtocol,
            ssl_context=self.ssl_context,
            enable_trace=self.enable_trace,
            on_message=self.on_message,
            on_error=self.on_socket_error,
            on_close=self.on_socket_close,
            on_open=self.on_socket_open,
        )


def install() -> None:
    """Make signalrcore's hub connections use :class:`PongingWebsocketTransport` from now on."""
    transport_factory.TRANSPORTS[HttpTransportType.web_sockets] = PongingWebsocketTransport
