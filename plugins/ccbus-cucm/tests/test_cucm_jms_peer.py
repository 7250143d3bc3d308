"""Interop with a Java JMS peer playing the CUCM Connector on the connector queue.

The peer is a plain JMS 1.1 application (ActiveMQ's own client over
OpenWire): what it reports is what the real connector would see.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from ccbus_cucm.protocol import COMMANDS
from ccbus_peers.activemq import ActiveMQBroker, JmsMessage, unique_name

pytestmark = pytest.mark.anyio


def assert_command(seen: JmsMessage, jms_type: str, body: str, client_topic: str,
                   ttl: float) -> None:
    """A command as the guide wants it: a TextMessage with every JMS header set."""
    now = time.time() * 1000
    assert seen.message_class == "TextMessage"
    assert seen.type == jms_type
    assert seen.body == body
    assert seen.correlation_id
    assert seen.reply_to == f"topic://{client_topic}"
    # JMSExpiration: about now + ttl (it was sent moments ago)
    assert now - 5_000 < seen.expiration - ttl * 1000 <= now + 1_000


async def handshake(peer: Any, client_topic: str) -> JmsMessage:
    hello: JmsMessage = await peer.next_message(60)
    assert_command(hello, f"Hello#{client_topic}", "", client_topic, ttl=5)
    await peer.reply(hello, "System#IN_SERVICE")
    return hello


async def test_commands_reach_a_jms_connector_with_every_header_and_its_answer_completes_them(
    tmp_path: Path, activemq: ActiveMQBroker, jms_peer: Any, cucm_bus: Any, options_for: Any,
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO)
    name = unique_name("Connector")
    options = options_for(activemq, name)
    client_topic = options["client_topic"]
    async with jms_peer(activemq) as peer:
        await peer.consume(f"queue:{name}")
        async with cucm_bus(options) as h:
            await handshake(peer, client_topic)
            await h.wait_until(lambda: h.state() == "connected", timeout=30)

            await h.publish("test.cucm.make_call", agent="1001", number="+4930123")
            seen = await peer.next_message(30)
            while seen.type.startswith("Hello#"):  # keepalives may come in between
                await peer.reply(seen, "System#IN_SERVICE")
                seen = await peer.next_message(30)
            assert_command(seen, "MakeCall#1001", "+4930123", client_topic, ttl=5)
            make_call = seen
            assert seen.delivery_mode == "persistent"
            await peer.reply(seen, "1001#DialogState#INITIATING#2026-11-22T10:00:00Z#777#+4930123")
            await h.wait_until(lambda: h.recorder.results("MakeCall"), timeout=30)
            await h.wait_until(lambda: h.counter("actions", action="cucm.make_call",
                                                 outcome="ok") == 1, timeout=30)

            await h.publish("test.cucm.blind_transfer", agent="1001", target="2002",
                            connection_id="777")
            seen = await peer.next_message(30)
            while seen.type.startswith("Hello#"):
                await peer.reply(seen, "System#IN_SERVICE")
                seen = await peer.next_message(30)
            assert_command(seen, "Transfer_sst#1001", "2002,777", client_topic, ttl=5)
            await peer.reply(seen, "1001#Error#INVALID_PARTY")
            await h.wait_until(lambda: h.recorder.results("Transfer_sst"), timeout=30)
            await h.wait_until(lambda: h.counter("actions", action="cucm.blind_transfer",
                                                 outcome="retry") >= 1, timeout=30)
            await h.recorder.wait_count(1, lambda c: c.event.type == "call.started", timeout=30)

    result = h.recorder.results("MakeCall")[0]
    assert result["correlationId"] == make_call.correlation_id
    assert (result["outcome"], result["state"], result["connectionId"]) == ("ok", "INITIATING",
                                                                            "777")
    assert h.recorder.of("call.started")[0].event.data["callId"] == "777"
    failed = h.recorder.results("Transfer_sst")[0]
    assert (failed["outcome"], failed["errorType"]) == ("error", "INVALID_PARTY")
    logs = [r.getMessage() for r in caplog.records]
    assert any("cucm.make_call (rule do-cucm.make_call, attempt 1): MakeCall#1001 -> "
               "DialogState INITIATING" in m for m in logs)
    assert any("answered Transfer_sst#1001 with INVALID_PARTY" in m for m in logs)


async def next_command(peer: Any) -> JmsMessage:
    """The next command on the connector queue, answering the keepalive Hellos on the way."""
    seen: JmsMessage = await peer.next_message(30)
    while (seen.type or "").startswith("Hello#"):
        await peer.reply(seen, "System#IN_SERVICE")
        seen = await peer.next_message(30)
    return seen


#: Beyond the BMP (emoji, a CJK extension ideograph) next to plain non-ASCII: a Java
#: TextMessage carries these as surrogate halves in modified UTF-8.
AGENT_NAME = "Zo\u00eb \U0001f600 \U00020bb7"
DETAIL = "trunk \U0001f4de down\x00code 7"  # and a NUL, which Java sends as C0 80


async def test_emoji_and_nul_from_the_java_connector_reach_the_bus_as_sent(
    tmp_path: Path, activemq: ActiveMQBroker, jms_peer: Any, cucm_bus: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    options = options_for(activemq, name)
    client_topic = options["client_topic"]
    json_error = {"type": "Error", "agentId": "1002", "errorType": "PLEASE_RETRY",
                  "errorMessage": "SIP \U0001f6a8 503"}
    async with jms_peer(activemq) as peer:
        await peer.consume(f"queue:{name}")
        async with cucm_bus(options) as h:
            await handshake(peer, client_topic)
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            events = f"topic:{client_topic}"
            await peer.send(events, f"1001#AgentInfo#{AGENT_NAME}")
            await peer.send(events, f"1001#Error#PLEASE_RETRY#{DETAIL}")
            await peer.send(events, json.dumps(json_error, ensure_ascii=False))
            await h.recorder.wait_count(1, lambda c: c.event.type == "cucm.AgentInfo", timeout=30)
            errors = await h.recorder.wait_count(2, lambda c: c.event.type == "cucm.Error",
                                                 timeout=30)
            assert h.bad_input("not_utf8") == 0
    info = h.recorder.of("cucm.AgentInfo")[0].event.data
    assert info["agentName"] == AGENT_NAME
    by_agent = {e.event.subject: e.event.data for e in errors}
    assert by_agent["1001"]["message"] == DETAIL
    assert by_agent["1001"]["raw"] == f"1001#Error#PLEASE_RETRY#{DETAIL}"
    assert by_agent["1002"]["errorMessage"] == json_error["errorMessage"]


async def test_a_command_with_text_beyond_the_bmp_reaches_the_java_connector_intact(
    tmp_path: Path, activemq: ActiveMQBroker, jms_peer: Any, cucm_bus: Any, options_for: Any,
) -> None:
    """Java reads a STOMP body as modified UTF-8 and refuses 4-byte UTF-8: ccbus sends the
    Java form."""
    name = unique_name("Connector")
    options = options_for(activemq, name)
    number = "sip:\U0001f600-desk@example.com"
    async with jms_peer(activemq) as peer:
        await peer.consume(f"queue:{name}")
        async with cucm_bus(options) as h:
            await handshake(peer, options["client_topic"])
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            await h.publish("test.cucm.make_call", agent="1001", number=number)
            seen = await next_command(peer)
            assert (seen.message_class, seen.type, seen.body) == (
                "TextMessage", "MakeCall#1001", number)
            await peer.reply(seen, "1001#DialogState#INITIATING#t#778")
            await h.wait_until(lambda: h.counter("actions", action="cucm.make_call",
                                                 outcome="ok") == 1, timeout=30)


#: A copy of the vendor's guide the plugin is written to.
GUIDE = Path(__file__).parent / "fixtures" / "cucm-connector-activemq-guide.txt"


def guide_command_names() -> list[str]:
    """The command names of the guide's ``JMS-Type | <Name>#<...> |`` rows, as spelt there."""
    return re.findall(r"^JMS-Type \| ([A-Za-z_]+)#", GUIDE.read_text(encoding="utf-8"), re.M)


async def test_every_command_reaches_the_java_connector_spelt_as_the_guide_spells_it(
    tmp_path: Path, activemq: ActiveMQBroker, jms_peer: Any, cucm_bus: Any, options_for: Any,
) -> None:
    """A connector comparing JMSType as Java strings do knows only the guide's spelling
    (``Conferencecall``, not ``ConferenceCall``): match case-sensitively, every command."""
    guide = guide_command_names()
    assert len(guide) == len(COMMANDS) + 1 and guide[0] == "Hello"  # the table was read
    name = unique_name("Connector")
    options = options_for(activemq, name)
    params = {"number": "2002", "connection_id": "777", "target": "2002"}
    sent: list[str] = []
    async with jms_peer(activemq) as peer:
        await peer.consume(f"queue:{name}")
        async with cucm_bus(options) as h:
            hello = await handshake(peer, options["client_topic"])
            sent.append((hello.type or "").partition("#")[0])
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            for spec in COMMANDS:
                await h.publish(f"test.{spec.action}", agent="1001",
                                **{arg: params[arg] for arg in spec.args})
                seen = await next_command(peer)
                sent.append((seen.type or "").partition("#")[0])
                await peer.reply(seen, "1001#DialogState#ACTIVE#t#777")
                await h.wait_until(lambda spec=spec: h.counter("actions", action=spec.action,
                                                               outcome="ok") == 1, timeout=30)
    assert sent == guide
