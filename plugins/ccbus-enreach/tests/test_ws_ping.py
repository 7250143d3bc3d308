"""RFC 6455 pings: the source answers them, and the simulator can send and enforce them.

The simulator's ``ws_ping_every`` puts an enforcing relay in front of its hub
(:mod:`ccbus_enreach.wsping`): a ping with a random payload to every WebSocket
client, and the connection closed when the pong with that payload is late, as
a load balancer or proxy would.  signalrcore alone answers no ping (its reader
hands the ping's payload up as a message); :mod:`ccbus_enreach.transport`
makes it.  The relay itself is checked against two other clients: the
``websockets`` library (which answers pings) and a raw socket (which does not).

The pong deadline is generous (a busy machine must not make a pong late);
the ping period is short, so the test sees several pings quickly.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from ccbus_enreach.scenarios import ANNA
from ccbus_enreach.simulator import RteSimulator
from ccbus_enreach.transport import PongingWebSocketClient
from ccbus_enreach.wsping import OP_PING, read_frame
from websockets.asyncio.client import connect

pytestmark = pytest.mark.anyio

RS = "\x1e"
EVERY = 0.2
PONG_WITHIN = 10.0
PINGS = 3


def pinging_simulator(pong_within: float = PONG_WITHIN) -> RteSimulator:
    return RteSimulator(ws_ping_every=EVERY, ws_pong_within=pong_within)


async def test_the_source_answers_protocol_pings_and_keeps_receiving(
    enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int
) -> None:
    async with pinging_simulator() as sim:
        options = {**sim.source_options(), "subscriptions": subscriptions}
        async with enreach_bus(options) as bus:
            await sim.wait_subscribed(subscription_count, within=30)
            pings = sim.ping_stats
            assert pings is not None
            # enough pings answered, or the connection lost (cut by the relay, or given up)
            await sim.wait_for(
                lambda: pings.pongs_received >= PINGS
                or pings.pong_timeouts > 0
                or sim.stats.connections > 1,
                within=60,
            )
            assert pings.pong_timeouts == 0, "a ping went unanswered: the relay cut the source"
            assert pings.pongs_unmatched == 0, "a pong did not carry its ping's payload"
            assert sim.stats.connections == 1, "the source lost its connection to a ping"
            assert await sim.publish("UserStatus", ANNA, {"Talking": True}) == 1
            await bus.wait_until(lambda: "enreach.UserStatus" in bus.recorder.types(), timeout=20)
            # the same connection all along, and pings were not taken for hub messages
            assert bus.source().connections == 1
            assert bus.source().ctx.refusals.counts["malformed_frame"] == 0


async def test_a_client_that_answers_pings_keeps_its_connection() -> None:
    async with pinging_simulator() as sim:
        url = f"{sim.hub_url}?access_token={sim.issue_token()}"
        async with connect(url, proxy=None, ping_interval=None) as ws:  # answers pings itself
            await ws.send('{"protocol":"json","version":1}' + RS)
            assert await ws.recv() == "{}" + RS
            pings = sim.ping_stats
            assert pings is not None
            await sim.wait_for(
                lambda: pings.pongs_received >= PINGS or pings.pong_timeouts > 0, within=60
            )
            assert (pings.pong_timeouts, pings.pongs_unmatched) == (0, 0)
            call = '{"type":1,"invocationId":"1","target":"UnsubscribeAll","arguments":[]}'
            await ws.send(call + RS)
            assert '"result":true' in str(await ws.recv())


async def test_a_client_that_does_not_answer_is_cut_off() -> None:
    async with pinging_simulator(pong_within=1.0) as sim:
        stream = await anyio.connect_tcp("127.0.0.1", sim.port)
        async with stream:
            received = BufferedByteReceiveStream(stream)
            await _open_websocket(stream, received, sim)
            await stream.send(_client_frame(0x1, b'{"protocol":"json","version":1}' + RS.encode()))
            opcodes = []
            with anyio.fail_after(60):
                try:
                    while True:
                        opcodes.append((await read_frame(received)).opcode)
                except (anyio.EndOfStream, anyio.IncompleteRead, OSError):
                    pass  # closed by the relay: what this test waits for
        pings = sim.ping_stats
        assert pings is not None
        assert OP_PING in opcodes
        assert (pings.pong_timeouts, pings.pongs_received) == (1, 0)
        await sim.wait_for(lambda: not sim.clients, within=30)  # the hub saw it go too


async def _open_websocket(
    stream: anyio.abc.SocketStream, received: BufferedByteReceiveStream, sim: RteSimulator
) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /rte?access_token={sim.issue_token()} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{sim.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send(request.encode())
    head = await received.receive_until(b"\r\n\r\n", 65536)
    assert head.startswith(b"HTTP/1.1 101"), head


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame: FIN, masked, a payload of at most 125 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def test_a_ping_between_the_fragments_of_a_message_is_answered_and_left_out() -> None:
    """RFC 6455 lets a control frame come between fragments; signalrcore glued it in."""
    messages: list[Any] = []
    sock = socket.create_server(("127.0.0.1", 0))
    listener = await anyio.abc.SocketListener.from_socket(sock)
    async with listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        opened = threading.Event()
        client = PongingWebSocketClient(
            url=f"ws://127.0.0.1:{port}/rte",
            on_message=lambda _client, message: messages.append(message),
            on_open=opened.set,
            on_error=lambda error: None,
            on_close=lambda: None,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, client.connect)
            with anyio.fail_after(30):
                server = await listener.accept()
            async with server:
                received = BufferedByteReceiveStream(server)
                await received.receive_until(b"\r\n\r\n", 65536)
                await server.send(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                # frames only once the client has read the 101 (as a SignalR hub, which
                # answers the client's handshake message first): sent at once, they could
                # share the client's read of the 101 on a busy machine
                with anyio.fail_after(30):
                    await anyio.to_thread.run_sync(opened.wait)
                payload = bytes([0, 0xFF, 0x80, 7])  # not text: it must come back as it is
                first, rest = b'{"ty', b'pe":6}' + RS.encode()
                await server.send(bytes([0x01, len(first)]) + first)  # text, not final
                await server.send(bytes([0x80 | OP_PING, len(payload)]) + payload)
                await server.send(bytes([0x80, len(rest)]) + rest)  # the final continuation
                with anyio.fail_after(30):
                    pong = await read_frame(received)
                    while not messages:  # noqa: ASYNC110 - the client's own thread appends
                        await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(client.close)
    assert (pong.opcode, pong.payload) == (0xA, payload)
    assert client.pongs_sent == 1
    assert messages == ['{"type":6}' + RS]
