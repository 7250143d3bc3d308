"""An enforcing WebSocket keepalive in front of the simulator: RFC 6455 pings, pongs or cut off.

Load balancers, reverse proxies and WebSocket servers with a protocol-level
keepalive send ping frames (opcode 0x9) and close a connection whose pong
(opcode 0xA, the same payload) does not come back in time.  The simulator's
hub runs on an ASGI server, and ASGI gives an application no way to send a
ping, so this is what an operator's proxy is: a TCP relay on loopback.

For every connection it relays bytes unchanged.  When the client asks for a
WebSocket upgrade and the simulator answers ``101``, it relays whole frames
from then on and, every ``every`` seconds, sends the client a ping with a
fresh random payload.  A pong with that payload within ``pong_within``
seconds keeps the connection; none, or one with another payload, and both
sides are closed, as the proxy would.  Pongs are the relay's business and are
not passed on to the simulator.  Other connections (the token call,
negotiate) are relayed as they are.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["PingStats", "PingingRelay"]

OP_PING = 0x9
OP_PONG = 0xA
HEAD_END = b"\r\n\r\n"
#: longest HTTP request or response head relayed
MAX_HEAD = 65536
#: what ends a relayed connection: the other side went away or sent nonsense
GONE = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.DelimiterNotFound,
    OSError,
)


@dataclass(slots=True)
class PingStats:
    """What the relay did, for tests and ``/_sim/status``."""

    pings_sent: int = 0
    pongs_received: int = 0
    pongs_unmatched: int = 0
    pong_timeouts: int = 0


@dataclass(slots=True)
class _Frame:
    opcode: int
    raw: bytes
    payload: bytes  # unmasked


async def read_frame(stream: BufferedByteReceiveStream) -> _Frame:
    """One whole WebSocket frame: its bytes as received and its unmasked payload."""
    head = await stream.receive_exactly(2)
    length = head[1] & 0x7F
    extended = b""
    if length == 126:
        extended = await stream.receive_exactly(2)
    elif length == 127:
        extended = await stream.receive_exactly(8)
    if extended:
        length = int.from_bytes(extended, "big")
    mask = await stream.receive_exactly(4) if head[1] & 0x80 else b""
    body = await stream.receive_exactly(length) if length else b""
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(body)) if mask else body
    return _Frame(head[0] & 0x0F, head + extended + mask + body, payload)


def ping_frame(payload: bytes) -> bytes:
    """A server's ping: FIN, opcode 0x9, unmasked, a payload of at most 125 bytes."""
    return bytes([0x80 | OP_PING, len(payload)]) + payload


class PingingRelay:
    """Relay connections to ``upstream``, pinging WebSocket clients and cutting silent ones."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        every: float,
        pong_within: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if every <= 0 or pong_within <= 0:
            raise ValueError("the ping period and the pong deadline must be positive")
        self.upstream = upstream
        self.every = every
        self.pong_within = pong_within
        self.on_change = on_change
        self.stats = PingStats()

    async def serve(
        self,
        listener: anyio.abc.SocketListener,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``listener`` until cancelled."""
        async with listener:
            task_status.started()
            await listener.serve(self._relay)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        try:
            async with client, await anyio.connect_tcp(*self.upstream) as server:
                await self._relay_connection(client, server)
        except GONE:
            pass

    async def _relay_connection(
        self, client: anyio.abc.SocketStream, server: anyio.abc.SocketStream
    ) -> None:
        client_in = BufferedByteReceiveStream(client)
        request = await client_in.receive_until(HEAD_END, MAX_HEAD) + HEAD_END
        await server.send(request)
        if b"upgrade: websocket" not in request.lower():
            await _pipe_both(client_in, client, server)
            return
        server_in = BufferedByteReceiveStream(server)
        response = await server_in.receive_until(HEAD_END, MAX_HEAD) + HEAD_END
        await client.send(response)
        if response.split(b" ", 2)[1:2] != [b"101"]:
            await _pipe_both(client_in, client, server, server_in)
            return
        await _WebSocketLink(self, client_in, client, server_in, server).run()


class _WebSocketLink:
    """One upgraded connection: frames both ways, and the pings to the client."""

    def __init__(
        self,
        relay: PingingRelay,
        client_in: BufferedByteReceiveStream,
        client: anyio.abc.SocketStream,
        server_in: BufferedByteReceiveStream,
        server: anyio.abc.SocketStream,
    ) -> None:
        self.relay = relay
        self.stats = relay.stats
        self.client_in, self.client = client_in, client
        self.server_in, self.server = server_in, server
        self.to_client = anyio.Lock()  # a ping goes between two whole frames, never inside one
        self.waiting: bytes | None = None
        self.answered = anyio.Event()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:

            async def until_done(func: Callable[[], Awaitable[None]]) -> None:
                try:
                    await func()
                except GONE:
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(until_done, self._server_to_client)
            tg.start_soon(until_done, self._client_to_server)
            tg.start_soon(until_done, self._ping)

    async def _server_to_client(self) -> None:
        while True:
            frame = await read_frame(self.server_in)
            async with self.to_client:
                await self.client.send(frame.raw)

    async def _client_to_server(self) -> None:
        while True:
            frame = await read_frame(self.client_in)
            if frame.opcode == OP_PONG:
                self._pong(frame.payload)
            else:
                await self.server.send(frame.raw)

    def _pong(self, payload: bytes) -> None:
        if self.waiting is not None and payload == self.waiting:
            self.stats.pongs_received += 1
            self.waiting = None
            self.answered.set()
        else:
            self.stats.pongs_unmatched += 1
        self.relay.on_change()

    async def _ping(self) -> None:
        """Ping, wait for the pong; return (ending the connection) when it does not come."""
        while True:
            await anyio.sleep(self.relay.every)
            payload = secrets.token_bytes(8)
            self.waiting, self.answered = payload, anyio.Event()
            async with self.to_client:
                await self.client.send(ping_frame(payload))
            self.stats.pings_sent += 1
            self.relay.on_change()
            with anyio.move_on_after(self.relay.pong_within):
                await self.answered.wait()
            if not self.answered.is_set():
                self.stats.pong_timeouts += 1
                self.relay.on_change()
                return


async def _pipe_both(
    client_in: BufferedByteReceiveStream,
    client: anyio.abc.SocketStream,
    server: anyio.abc.SocketStream,
    server_in: BufferedByteReceiveStream | None = None,
) -> None:
    """Plain HTTP: bytes both ways until the server is done."""
    async with anyio.create_task_group() as tg:

        async def upstream() -> None:
            try:
                while True:
                    await server.send(await client_in.receive())
            except GONE:
                pass
            try:
                await server.send_eof()
            except GONE:
                pass

        async def downstream() -> None:
            source = server_in if server_in is not None else server
            try:
                while True:
                    await client.send(await source.receive())
            except GONE:
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(upstream)
        tg.start_soon(downstream)
