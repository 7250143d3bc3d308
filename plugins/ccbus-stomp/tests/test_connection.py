"""StompConnection against a real ActiveMQ broker and a Java JMS peer."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import pytest
from ccbus_peers.activemq import ActiveMQBroker, unique_name
from ccbus_stomp import NotConnectedError, StompConnection, StompOptions, queue, topic

pytestmark = pytest.mark.anyio


async def test_jms_publisher_reaches_the_subscription_and_acks_clear_it(
    activemq: ActiveMQBroker, jms_peer: Any, consumer: Any
) -> None:
    name = unique_name("t.pub")
    async with consumer({"url": activemq.stomp_url}) as c:
        await c.conn.wait_connected(30)
        await c.conn.subscribe(topic(name))
        async with jms_peer(activemq) as peer:
            for n in range(20):
                await peer.send(f"topic:{name}", json.dumps({"n": n}), type="cvp.test")
            await c.wait_for(lambda: len(c.messages) == 20)
        assert [json.loads(b)["n"] for b in c.bodies()] == list(range(20))
        assert {m.type for m in c.messages} == {"cvp.test"}
        assert all(m.destination == f"/topic/{name}" for m in c.messages)
        await c.conn.flush_acks()
        assert c.conn.stats["acked"] == 20
        assert c.states[:2] == ["connecting", "connected"]


async def test_send_is_a_jms_text_message_with_headers_and_the_reply_comes_back(
    activemq: ActiveMQBroker, jms_peer: Any, consumer: Any
) -> None:
    commands = unique_name("t.cmd")
    replies = unique_name("t.reply")
    async with jms_peer(activemq) as peer, consumer({"url": activemq.stomp_url}) as c:
        await peer.consume(f"queue:{commands}")
        await c.conn.wait_connected(30)
        await c.conn.subscribe(queue(replies))
        before = time.time() * 1000
        await c.conn.send(
            queue(commands), "1001,2002", type="MakeCall#1001", correlation_id="corr-7",
            reply_to=queue(replies), ttl=30, receipt=True,
        )
        seen = await peer.next_message(30)
        assert seen.message_class == "TextMessage"  # no content-length: JMS text
        assert seen.body == "1001,2002"
        assert seen.type == "MakeCall#1001"
        assert seen.correlation_id == "corr-7"
        assert seen.reply_to == f"queue://{replies}"
        assert before + 25_000 < seen.expiration < before + 35_000
        assert seen.delivery_mode == "persistent"

        await peer.reply(seen, "DialogState#1001#ACTIVE", type="DialogState#1001")
        await c.wait_for(lambda: len(c.messages) == 1)
        answer = c.messages[0]
        assert answer.correlation_id == "corr-7"
        assert answer.type == "DialogState#1001"
        assert answer.text() == "DialogState#1001#ACTIVE"


async def test_a_body_with_a_content_length_becomes_a_bytes_message_which_we_never_send(
    activemq: ActiveMQBroker, jms_peer: Any, consumer: Any
) -> None:
    """The control: the JMS peer does tell the two classes apart."""
    name = unique_name("t.bytes")
    async with jms_peer(activemq) as peer, consumer({"url": activemq.stomp_url}) as c:
        await peer.consume(f"queue:{name}")
        await c.conn.wait_connected(30)
        await c.conn.send(queue(name), "plain", headers={"content-length": "5"})
        conn = c.conn._conn
        await anyio.to_thread.run_sync(
            lambda: conn.send(queue(name), b"bytes", headers={"content-length": "5"})
        )
        first = await peer.next_message(30)
        second = await peer.next_message(30)
        # ours drops a caller's content-length: still a TextMessage
        assert (first.message_class, first.body) == ("TextMessage", "plain")
        # stomp.py's default (a content-length) makes a BytesMessage
        assert (second.message_class, second.body) == ("BytesMessage", "bytes")


#: Text whose Java form differs from its UTF-8: beyond the BMP (emoji, a CJK
#: extension ideograph, the last code point) and NUL, next to plain non-ASCII.
JAVA_ONLY_TEXT = "Zo\u00eb \U0001f600 \U00020bb7 \U0010ffff a\x00b"


async def test_a_java_text_message_beyond_the_bmp_and_with_nul_reads_as_java_wrote_it(
    activemq: ActiveMQBroker, jms_peer: Any, consumer: Any
) -> None:
    """ActiveMQ hands a Java client's TextMessage to STOMP in modified UTF-8: read it."""
    name = unique_name("t.java-text")
    async with consumer({"url": activemq.stomp_url}) as c:
        await c.conn.wait_connected(30)
        await c.conn.subscribe(queue(name))
        async with jms_peer(activemq) as peer:
            await peer.send(f"queue:{name}", JAVA_ONLY_TEXT)
            await peer.send(f"queue:{name}", JAVA_ONLY_TEXT, as_bytes=True)
            await c.wait_for(lambda: len(c.messages) == 2)
    text, raw = c.messages
    # the broker's own behaviour, which is why the decoder exists: surrogate halves, C0 80
    assert b"\xed\xa0\xbd\xed\xb8\x80" in text.body and b"a\xc0\x80b" in text.body
    assert text.text() == JAVA_ONLY_TEXT
    # a BytesMessage carries whatever the publisher wrote: here standard UTF-8
    assert raw.body == JAVA_ONLY_TEXT.encode("utf-8")
    assert raw.text() == JAVA_ONLY_TEXT


async def test_text_beyond_the_bmp_and_with_nul_reaches_a_java_consumer_intact(
    activemq: ActiveMQBroker, jms_peer: Any, consumer: Any
) -> None:
    """Java's reader refuses 4-byte UTF-8 (UTFDataFormatException): we send its own form."""
    name = unique_name("t.to-java")
    async with jms_peer(activemq) as peer, consumer({"url": activemq.stomp_url}) as c:
        await peer.consume(f"queue:{name}")
        await c.conn.wait_connected(30)
        await c.conn.send(queue(name), JAVA_ONLY_TEXT, type="Text#1001")
        await c.conn.send(queue(name), "after")
        seen = await peer.next_message(30)
        after = await peer.next_message(30)
    assert (seen.message_class, seen.type) == ("TextMessage", "Text#1001")
    assert seen.body == JAVA_ONLY_TEXT
    assert after.body == "after"


async def test_send_while_the_broker_is_away_says_so(consumer: Any) -> None:
    port = _closed_port()
    async with consumer({"url": f"stomp://127.0.0.1:{port}"}) as c:
        with pytest.raises(NotConnectedError, match="not connected"):
            await c.conn.send(queue("x"), "hello", wait_connected=0.2)
        await c.wait_for(lambda: c.conn.stats["connect_failures"] >= 2)
        assert "reconnecting" in c.states


async def test_durable_subscription_keeps_what_was_published_while_we_were_away(
    activemq: ActiveMQBroker, jms_peer: Any, consumer: Any
) -> None:
    name = unique_name("t.durable")
    options = {"url": activemq.stomp_url, "client_id": unique_name("ccbus")}
    async with consumer(options) as c:
        await c.conn.wait_connected(30)
        await c.conn.subscribe(topic(name), durable_name="cvp-calls")
        async with jms_peer(activemq) as peer:
            await peer.send(f"topic:{name}", "while-here")
            await c.wait_for(lambda: len(c.messages) == 1)
    # ccbus is gone; the durable subscription is not
    async with jms_peer(activemq) as peer:
        for n in range(5):
            await peer.send(f"topic:{name}", f"while-away-{n}")
    async with consumer(options) as c:
        await c.conn.wait_connected(30)
        await c.conn.subscribe(topic(name), durable_name="cvp-calls")
        await c.wait_for(lambda: len(c.messages) == 5)
        assert c.bodies() == [f"while-away-{n}" for n in range(5)]


async def test_broker_restart_reconnects_restores_subscriptions_and_loses_nothing(
    activemq_factory: Any, jms_peer: Any, consumer: Any
) -> None:
    broker: ActiveMQBroker = activemq_factory(tls=False)
    name = unique_name("t.restart")
    options = {"url": broker.stomp_url, "client_id": "ccbus-restart"}
    async with consumer(options) as c:
        await c.conn.wait_connected(30)
        await c.conn.subscribe(topic(name), durable_name="restart")
        async with jms_peer(broker) as peer:
            for n in range(100):
                await peer.send(f"topic:{name}", f"a{n}")
        # stop mid-stream: some are delivered, some acked, some not yet
        await anyio.to_thread.run_sync(broker.stop)
        await c.wait_for(lambda: "reconnecting" in c.states)
        await anyio.to_thread.run_sync(broker.start)
        async with jms_peer(broker) as peer:
            for n in range(100):
                await peer.send(f"topic:{name}", f"b{n}")
        expected = {f"a{n}" for n in range(100)} | {f"b{n}" for n in range(100)}
        await c.wait_for(lambda: set(c.bodies()) >= expected, within=90)
        assert c.conn.stats["connects"] >= 2
        assert c.states.count("connected") >= 2
        # at-least-once: a message delivered but not acked before the stop may come twice,
        # and then it says so
        seen: set[str] = set()
        for message in c.messages:
            if message.text() in seen:
                assert message.redelivered or message.generation > 1
            seen.add(message.text())


async def test_unacked_messages_are_redelivered_on_the_next_connection(
    activemq_factory: Any, jms_peer: Any, consumer: Any
) -> None:
    broker: ActiveMQBroker = activemq_factory(tls=False)
    name = unique_name("t.unacked")
    async with consumer({"url": broker.stomp_url}) as c:
        c.ack = False
        await c.conn.wait_connected(30)
        await c.conn.subscribe(queue(name))
        async with jms_peer(broker) as peer:
            for n in range(3):
                await peer.send(f"queue:{name}", f"m{n}")
        await c.wait_for(lambda: len(c.messages) == 3)
        await anyio.to_thread.run_sync(lambda: broker.restart(kill=True))
        c.ack = True
        await c.wait_for(lambda: len(c.messages) == 6, within=90)
        again = c.messages[3:]
        assert [m.text() for m in again] == ["m0", "m1", "m2"]
        assert all(m.generation > 1 for m in again)
        # a late ack for the first connection's message is dropped, not sent to the new one
        await c.conn.ack(c.messages[0])
        assert c.conn.stats["acks_dropped"] >= 1


async def test_a_silent_broker_is_noticed_by_heartbeats(
    activemq: ActiveMQBroker, relay: Any, consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = relay(activemq.stomp_port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        # 1 s heartbeats: stomp.py gives up after 1.5 s of silence, which a loaded machine
        # does not produce by accident
        options = {"url": f"stomp://127.0.0.1:{proxy.port}", "heartbeat_send": 1.0,
                   "heartbeat_receive": 1.0}
        caplog.set_level(logging.WARNING, "test.stomp.t")
        async with consumer(options) as c:
            await c.conn.wait_connected(30)
            await c.conn.subscribe(queue(unique_name("t.hb")))
            await anyio.sleep(3.0)  # idle, but heartbeats flow: the connection stays up
            assert c.conn.stats["losses"] == 0
            proxy.freeze()
            await c.wait_for(lambda: c.conn.stats["connects"] >= 2)
            assert c.conn.stats["losses"] >= 1
            assert "lost the connection" in caplog.text
            await c.conn.send(queue("t.hb.after"), "alive again")
        tg.cancel_scope.cancel()


async def test_tls_with_the_broker_certificate(activemq: ActiveMQBroker, consumer: Any) -> None:
    name = unique_name("t.tls")
    options = {"url": activemq.stomp_ssl_url, "ca_file": str(activemq.ca_file)}
    async with consumer(options) as c:
        await c.conn.wait_connected(30)
        await c.conn.subscribe(queue(name))
        await c.conn.send(queue(name), "over tls")
        await c.wait_for(lambda: c.bodies() == ["over tls"])


async def test_tls_refuses_an_unknown_certificate(
    activemq: ActiveMQBroker, consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "test.stomp.t")
    async with consumer({"url": activemq.stomp_ssl_url}) as c:  # system CAs only
        await c.wait_for(lambda: c.conn.stats["connect_failures"] >= 1)
        assert not c.conn.connected
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_credentials(
    activemq_factory: Any, consumer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker: ActiveMQBroker = activemq_factory(users={"ccbus": "s3cret"}, tls=False)
    caplog.set_level(logging.WARNING, "test.stomp.t")
    async with consumer({"url": broker.stomp_url, "username": "ccbus",
                         "password": "wrong"}) as c:
        await c.wait_for(lambda: c.conn.stats["connect_failures"] >= 2)
        assert not c.conn.connected
        assert "cannot connect" in caplog.text and "ERROR" in caplog.text
        assert "wrong" not in caplog.text
    async with consumer({"url": broker.stomp_url, "username": "ccbus",
                         "password": "s3cret"}) as c:
        await c.conn.wait_connected(30)


def test_options_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="scheme must be one of"):
        StompOptions(url="amqp://x:1")
    with pytest.raises(ValueError, match="go together"):
        StompOptions(username="u")
    assert StompOptions(url="stomp+ssl://amq.example:61614").tls
    assert StompOptions(url="stomp+ssl://amq.example").port == 61614
    assert StompOptions(url="stomp://u@h:1", password=None).safe_url == "stomp://h:1"


async def test_durable_subscription_needs_a_client_id() -> None:
    conn = StompConnection(StompOptions(), name="x")
    with pytest.raises(ValueError, match="client_id"):
        await conn.subscribe(topic("x"), durable_name="d")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_send_without_the_brokers_receipt_says_so(
    activemq: ActiveMQBroker, relay: Any, consumer: Any
) -> None:
    proxy = relay(activemq.stomp_port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        options = {"url": f"stomp://127.0.0.1:{proxy.port}", "heartbeat_send": 0,
                   "heartbeat_receive": 0, "connect_timeout": 2}
        async with consumer(options) as c:
            await c.conn.wait_connected(30)
            await c.conn.send(queue(unique_name("t.rcpt")), "acknowledged", receipt=True)
            proxy.freeze()  # the broker never sees the next frame, nor answers it
            with pytest.raises(NotConnectedError, match="no receipt from the broker"):
                await c.conn.send(queue(unique_name("t.rcpt")), "lost", receipt=True)
        tg.cancel_scope.cancel()
