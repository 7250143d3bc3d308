"""The JMS path end to end: a Java JMS peer publishes CVP events on a real ActiveMQ broker,
the ``cisco-cvp`` source consumes them over STOMP, and ccbus rules see them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
from ccbus_cisco_cvp.protocol import CHANNELS
from ccbus_cisco_cvp.scenarios import malformed
from ccbus_peers.activemq import ActiveMQBroker, unique_name
from ccbus_stomp import StompConnection, StompOptions

from ccbus.testing import wait_until

pytestmark = pytest.mark.anyio

#: Short timings: recovery in fractions of a second.
FAST_BROKER: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.5,
                               "connect_timeout": 10}


def jms_options(broker: ActiveMQBroker, prefix: str, **extra: Any) -> dict[str, Any]:
    """Source options with this test's own topics (the session broker is shared)."""
    return {
        "broker": {"url": broker.stomp_url, "client_id": f"ccbus-{prefix}", **FAST_BROKER},
        "topics": {c.key: f"{prefix}/{c.name}" for c in CHANNELS},
        **extra,
    }


def started(n: int, prefix: str = "G") -> dict[str, Any]:
    return {"eventType": "call.started", "timestamp": "2026-11-22T09:00:00.000Z",
            "callGuid": f"{prefix}{n:05d}", "callingNumber": "+15550001", "calledNumber": "800"}


async def test_a_jms_publisher_reaches_ccbus_rules_on_every_channel(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_bus: Any, tmp_path: Path,
    payloads: dict[str, dict[str, Any]],
) -> None:
    prefix = unique_name("cvp")
    async with cvp_bus(jms_options(activemq, prefix)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        async with jms_peer(activemq) as peer:
            for channel in CHANNELS:
                payload = payloads[channel.key]
                await peer.send(f"topic:{prefix}/{channel.name}", json.dumps(payload),
                                type=payload["eventType"])
        natives = {f"cvp.{c.event_type}" for c in CHANNELS}
        await h.wait_until(lambda: natives <= set(h.recorder.types()), timeout=30)
        await h.wait_until(lambda: {"call.started", "call.queued", "call.transferred",
                                    "call.ended", "system.alert", "device.status_changed"}
                           <= set(h.recorder.types()), timeout=30)
        source = h.source()
        assert source.rejected == {}
        assert sum(source.received.values()) == 10
        await source.connection.flush_acks()
        assert source.connection.stats["acked"] == 10
    ended = h.recorder.of("cvp.call.ended")[0]
    assert ended.event.subject == payloads["calls_ended"]["callGuid"]
    assert ended.event.id.startswith("ID:")  # the JMS message id: redeliveries are duplicates
    alerts = [c.value for c in h.recorder.of("system.alert")]
    assert any("cpu_usage" in str(a) and "exceeds the threshold 85" in str(a) for a in alerts)


async def test_malformed_frames_are_counted_logged_kept_and_acked(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_source: Any, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "ccbus.source.cvp")
    prefix = unique_name("cvp")
    async with cvp_source(jms_options(activemq, prefix)) as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        async with jms_peer(activemq) as peer:
            for key, body in malformed():
                name = next(ch.name for ch in CHANNELS if ch.key == key)
                await peer.send(f"topic:{prefix}/{name}", body)
            # not UTF-8, sent the way a careless client would: a BytesMessage
            bad = StompConnection(StompOptions(url=activemq.stomp_url), name="bad")
            async with bad:
                await bad.wait_connected(30)
                conn = bad._conn
                await anyio.to_thread.run_sync(lambda: conn.send(
                    f"/topic/{prefix}/cvp/calls/started", b"\xff\xfe{}",
                    headers={"content-length": "4", "persistent": "true"}))
            await peer.send(f"topic:{prefix}/cvp/calls/started", json.dumps(started(1)))
        await wait_until(lambda: c.types() == ["cvp.call.started", "call.started"], timeout=30)
        await wait_until(lambda: c.source.dead_letters.written == 8, timeout=30)
        await c.source.connection.flush_acks()
        assert c.source.connection.stats["acked"] == 9  # rejects are acked too: no poison loop
    assert c.source.rejected == {
        "invalid_json": 1, "missing_field": 1, "bad_enum": 1, "wrong_type": 1,
        "wrong_channel": 1, "unknown_event_type": 1, "not_an_object": 1, "bad_encoding": 1,
    }
    assert (f"source cvp: refused a message (invalid_json) from topic /topic/{prefix}/cvp/calls/"
            "started, messageId ID:") in caplog.text
    assert "wrong_channel" in caplog.text and "belongs on 'cvp/calls/ended'" in caplog.text
    letters = c.source.dead_letters.read()
    assert letters[0]["reason"] == "invalid_json" and letters[0]["message"] == "{not json"
    assert letters[0]["topic"] == f"/topic/{prefix}/cvp/calls/started"
    assert {r["reason"] for r in letters} == set(c.source.rejected)


async def test_text_beyond_the_bmp_from_a_java_publisher_arrives_whole(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_source: Any, tmp_path: Path,
) -> None:
    """ActiveMQ passes a Java TextMessage on in modified UTF-8: emoji as surrogate halves."""
    prefix = unique_name("cvp")
    caller = "Zo\u00eb \U0001f600 \U00020bb7"
    message = "SIP 503 from gw-\U0001f4de: \U0001f6a8 no route"
    call = {**started(1), "callerName": caller}  # extra fields are kept in the event
    error = {"eventType": "call.error", "timestamp": "2026-11-22T09:00:01.000Z",
             "callGuid": "G00001", "errorCode": "E503", "errorMessage": message,
             "errorCategory": "sip_failure"}
    async with cvp_source(jms_options(activemq, prefix)) as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        async with jms_peer(activemq) as peer:
            # ensure_ascii=False: the characters themselves, as a Java JSON writer sends them
            await peer.send(f"topic:{prefix}/cvp/calls/started",
                            json.dumps(call, ensure_ascii=False))
            await peer.send(f"topic:{prefix}/cvp/calls/error",
                            json.dumps(error, ensure_ascii=False))
        await wait_until(lambda: "cvp.call.error" in c.types(), timeout=30)
    assert c.source.rejected == {}
    native = {e.type: e for e in c.events}
    assert native["cvp.call.started"].data["callerName"] == caller
    assert native["cvp.call.error"].data["errorMessage"] == message


async def test_published_while_ccbus_was_down_is_delivered_when_it_returns(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_source: Any, tmp_path: Path,
) -> None:
    prefix = unique_name("cvp")
    options = jms_options(activemq, prefix)
    async with cvp_source(options) as c:
        # the durable subscriptions exist
        await wait_until(lambda: "connected" in c.states, timeout=30)
    async with jms_peer(activemq) as peer:
        for n in range(20):
            await peer.send(f"topic:{prefix}/cvp/calls/started", json.dumps(started(n)))
    async with cvp_source(options) as c:
        await wait_until(lambda: len(c.events) == 40, timeout=30)
    assert [e.subject for e in c.events if e.type == "cvp.call.started"] == [
        f"G{n:05d}" for n in range(20)
    ]


async def test_ack_only_after_emit_returned(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_source: Any, tmp_path: Path,
) -> None:
    """The bus never recorded the event (emit did not return): the broker must redeliver."""
    prefix = unique_name("cvp")
    options = jms_options(activemq, prefix)
    entered = anyio.Event()

    async def stuck(event: Any) -> None:
        entered.set()
        await anyio.sleep_forever()

    async with cvp_source(options, emit=stuck) as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        async with jms_peer(activemq) as peer:
            await peer.send(f"topic:{prefix}/cvp/calls/started", json.dumps(started(7)))
        with anyio.fail_after(30):
            await entered.wait()
        first_id = c.source.connection.stats["received"]
        assert first_id == 1 and c.source.connection.stats["acked"] == 0
    # ccbus went down with the event unrecorded; back up, the broker delivers it again
    async with cvp_source(options) as c:
        await wait_until(lambda: len(c.events) == 2, timeout=30)
        assert c.events[0].subject == "G00007"
        await c.source.connection.flush_acks()
        assert c.source.connection.stats["acked"] == 1
    # and once acknowledged it is gone for good
    async with cvp_source(options) as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        await anyio.sleep(1.0)  # give a wrong redelivery the time to show up
        assert c.events == []


async def test_broker_restart_mid_stream_reconnects_and_loses_nothing(
    activemq_factory: Any, jms_peer: Any, cvp_source: Any, tmp_path: Path,
) -> None:
    broker: ActiveMQBroker = activemq_factory(tls=False)
    prefix = "restart"
    options = jms_options(broker, prefix)

    async def slow_bus(event: Any) -> None:
        await anyio.sleep(0.005)  # the bus is busy: messages are still in flight at the stop

    topic = f"topic:{prefix}/cvp/calls/started"
    async with cvp_source(options, emit=slow_bus) as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        async with jms_peer(broker) as peer:
            await peer.bulk(topic, json.dumps(started(0, "A"))
                            .replace("A00000", "A%d"), 300, persistent=True)
        done_at_stop = sum(e.type == "cvp.call.started" for e in c.events)
        await anyio.to_thread.run_sync(broker.stop)
        await wait_until(lambda: c.states[-1] == "reconnecting", timeout=30)
        await anyio.to_thread.run_sync(broker.start)
        async with jms_peer(broker) as peer:
            await peer.bulk(topic, json.dumps(started(0, "B"))
                            .replace("B00000", "B%d"), 100, persistent=True)
        expected = {f"A{n}" for n in range(300)} | {f"B{n}" for n in range(100)}
        await wait_until(
            lambda: {e.subject for e in c.events if e.type == "cvp.call.started"} >= expected,
            timeout=120,
        )
        assert c.source.connection.stats["connects"] >= 2
        assert c.states.count("connected") >= 2
    assert done_at_stop < 300  # the stop really came mid-stream
    natives = [e for e in c.events if e.type == "cvp.call.started"]
    # at-least-once: anything delivered twice carries the same id, so the bus drops the copy
    by_subject: dict[str | None, set[str]] = {}
    for event in natives:
        by_subject.setdefault(event.subject, set()).add(event.id)
    assert all(len(ids) == 1 for ids in by_subject.values())


async def test_a_mapping_failure_is_kept_not_redelivered_forever(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_source: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in the mapping (injected here) must not restart the source on the same message."""
    from ccbus_cisco_cvp.mapping import Mapper

    calls = []
    original = Mapper._started

    def broken(self: Mapper, doc: dict[str, Any]) -> Any:
        calls.append(doc["callGuid"])
        if doc["callGuid"] == "G00001":
            raise KeyError("injected")
        return original(self, doc)

    monkeypatch.setattr(Mapper, "_started", broken)
    prefix = unique_name("cvp")
    async with cvp_source(jms_options(activemq, prefix)) as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        async with jms_peer(activemq) as peer:
            for n in (1, 2):
                await peer.send(f"topic:{prefix}/cvp/calls/started", json.dumps(started(n)))
        await wait_until(lambda: [e.subject for e in c.events] == ["G00002", "G00002"], timeout=30)
        assert c.source.rejected == {"mapping_error": 1}
        assert calls == ["G00001", "G00002"]  # not redelivered
    assert "cannot map a valid call.started" in caplog.text


async def test_a_poison_body_is_a_dead_letter_acked_and_counted_and_the_next_one_arrives(
    activemq: ActiveMQBroker, jms_peer: Any, cvp_bus: Any, cvp_source: Any, tmp_path: Path,
) -> None:
    """Valid JSON nested 100,000 levels deep (issue #17): refused, kept, counted on the bus's
    ``source_bad_input``, acknowledged; the source is not restarted and goes on."""
    prefix = unique_name("cvp")
    options = jms_options(activemq, prefix)
    poison = "[" * 100_000 + "]" * 100_000
    async with cvp_bus(options) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        async with jms_peer(activemq) as peer:
            await peer.send(f"topic:{prefix}/cvp/calls/started", poison)
            await peer.send(f"topic:{prefix}/cvp/calls/started", json.dumps(started(1)))
        await h.wait_until(lambda: {"cvp.call.started", "call.started"} <= set(h.recorder.types()),
                           timeout=30)
        source = h.source()
        await h.wait_until(lambda: source.dead_letters.written == 1, timeout=30)
        await source.connection.flush_acks()
        assert source.connection.stats["acked"] == 2  # the poison too
        runtime = h.bus.sources["cvp"]
        assert runtime.restarts == 0 and runtime.state == "connected"
        assert h.counter("source_restarts", source="cvp") == 0
        assert h.bad_input("invalid_json") == 1
        assert source.rejected == {"invalid_json": 1}
        [letter] = source.dead_letters.read()
        assert letter["reason"] == "invalid_json" and "nested too deeply" in letter["detail"]
        assert letter["topic"] == f"/topic/{prefix}/cvp/calls/started"
        assert letter["message"].startswith("[[[[") and letter["truncated"] is True
    assert [c.value for c in h.recorder.of("cvp.call.started")] == ["G00001"]
    # acknowledged: the durable subscription holds nothing for the next start
    async with cvp_source(options, tmp_path=tmp_path / "again") as c:
        await wait_until(lambda: "connected" in c.states, timeout=30)
        await anyio.sleep(1.0)  # give a wrong redelivery the time to show up
        assert c.events == [] and c.source.connection.stats["received"] == 0


async def test_a_syslog_message_that_breaks_the_parser_is_a_dead_letter_not_a_restart(
    tmp_path: Path, cvp_bus: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any exception while reading one message (a RecursionError injected into the syslog
    parser here) refuses that message; the source is not restarted and takes the next."""
    import socket

    from ccbus_cisco_cvp import source as source_module

    original = source_module.parse

    def parse(raw: bytes) -> dict[str, Any]:
        if b"poison" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return original(raw)

    monkeypatch.setattr(source_module, "parse", parse)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with cvp_bus({"syslog": {"udp": f"127.0.0.1:{port}"}}) as h:
        await h.wait_until(lambda: h.state() == "listening", timeout=30)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"<14>poison", ("127.0.0.1", port))
            await h.wait_until(lambda: h.source().dead_letters.written == 1, timeout=30)
            sock.sendto(b"<14>good", ("127.0.0.1", port))
        await h.wait_until(lambda: "cvp.syslog" in h.recorder.types(), timeout=30)
        assert h.bus.sources["cvp"].restarts == 0
        assert h.bad_input("unreadable") == 1
        [letter] = h.source().dead_letters.read()
        assert letter["reason"] == "unreadable" and letter["message"] == "<14>poison"
        assert letter["detail"].startswith("RecursionError")
    assert [c.value for c in h.recorder.of("cvp.syslog")] == ["good"]


async def test_a_syslog_only_source_needs_no_broker(tmp_path: Path, cvp_source: Any) -> None:
    async with cvp_source({"syslog": {"udp": "127.0.0.1:0"}}) as c:
        assert c.source.connection is None
        assert c.source.udp_port
        assert c.states == ["binding", "listening"]  # not ready until bound

