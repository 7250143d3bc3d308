"""The source and actions against the emulator, through a real bus, broker and rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from ccbus_peers.activemq import ActiveMQBroker, unique_name

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("pattern", ["default", "json"])
async def test_handshake_login_and_a_call_from_dial_to_release(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
    pattern: str,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name, pattern=pattern) as emu, \
            cucm_bus(options_for(activemq, name)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        assert emu.stats["hellos"] >= 1
        assert (await h.recorder.wait_count(1, lambda c: c.event.type == "cucm.System",
                                            timeout=30))[0].event.data["status"] == "IN_SERVICE"

        await h.publish("test.cucm.login", agent="1001")
        await h.wait_until(lambda: h.recorder.results("Login"), timeout=30)
        login = h.recorder.results("Login")[0]
        assert login["outcome"] == "ok" and login["agent"] == "1001"
        assert login["answerType"] == "AgentInfo"
        await h.wait_until(lambda: any(c.event.data["state"] == "available"
                                       for c in h.recorder.of("agent.state_changed")), timeout=30)

        await h.publish("test.cucm.make_call", agent="1001", number="4930123")
        await h.wait_until(lambda: h.recorder.results("MakeCall"), timeout=30)
        dialled = h.recorder.results("MakeCall")[0]
        assert (dialled["answerType"], dialled["state"]) == ("DialogState", "INITIATING")
        call_id = dialled["connectionId"]
        started = await h.recorder.wait_count(1, lambda c: c.event.type == "call.started",
                                              timeout=30)
        assert [c.event.data["callId"] for c in started] == [call_id]
        assert started[0].event.data["direction"] == "outbound"
        assert started[0].event.data["called"] == "4930123"
        await h.wait_until(lambda: any(c.event.data.get("state") == "ACTIVE"
                                       for c in h.recorder.of("cucm.DialogState")), timeout=30)

        await h.publish("test.cucm.hold_call", agent="1001", connection_id=call_id)
        await h.wait_until(lambda: h.recorder.results("HoldCall"), timeout=30)
        await h.publish("test.cucm.retrieve_call", agent="1001", connection_id=call_id)
        await h.wait_until(lambda: h.recorder.results("RetrieveCall"), timeout=30)
        await h.publish("test.cucm.release_call", agent="1001", connection_id=call_id)
        await h.wait_until(lambda: h.recorder.of("call.ended"), timeout=30)
        await h.recorder.wait_results("ReleaseCall")
        await h.wait_until(lambda: h.counter("actions", action="cucm.release_call",
                                             outcome="ok") == 1, timeout=30)
        assert [(r["command"], r.get("state")) for r in h.recorder.results()] == [
            ("Login", None), ("MakeCall", "INITIATING"), ("HoldCall", "HELD"),
            ("RetrieveCall", "ACTIVE"), ("ReleaseCall", "DROPPED"),
        ]
        assert h.recorder.of("call.ended")[0].event.data["callId"] == call_id
        assert all(r["outcome"] == "ok" for r in h.recorder.results())
        assert emu.commands("MakeCall") == 1


async def test_inbound_call_answer_consult_transfer_conference_and_blind_transfer(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name, pattern="json") as emu, \
            cucm_bus(options_for(activemq, name)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.publish("test.cucm.login", agent="1002")
        await h.wait_until(lambda: h.counter("actions", action="cucm.login", outcome="ok") == 1,
                           timeout=30)

        async def done(action: str, n: int = 1) -> None:
            await h.wait_until(lambda: h.counter("actions", action=action, outcome="ok") == n,
                               timeout=30)

        first = await emu.ring("1002", "+4930111")
        await h.wait_until(lambda: h.recorder.of("call.started"), timeout=30)
        started = h.recorder.of("call.started")[0].event.data
        assert (started["callId"], started["caller"], started["direction"]) == (
            first, "+4930111", "inbound")
        await h.publish("test.cucm.answer_call", agent="1002", connection_id=first)
        await done("cucm.answer_call")
        await h.publish("test.cucm.consult_call", agent="1002", target="2001", connection_id=first)
        await done("cucm.consult_call")
        await h.wait_until(lambda: len(emu.agents["1002"].calls) == 2
                           and all(c.state in ("HELD", "ACTIVE")
                                   for c in emu.agents["1002"].calls.values())
                           and any(c.state == "ACTIVE" for c in emu.agents["1002"].calls.values()),
                           timeout=30)
        await h.publish("test.cucm.conference_call", agent="1002", connection_id=first)
        await done("cucm.conference_call")
        conference = (await h.recorder.wait_results("Conferencecall"))[0]
        assert conference["state"] == "CONFERENCED"
        assert conference["answer"]["participants"] == ["+4930111", "2001"]
        await h.publish("test.cucm.blind_transfer", agent="1002", target="3003",
                        connection_id=first)
        await done("cucm.blind_transfer")
        await h.wait_until(lambda: h.recorder.of("call.transferred"), timeout=30)
        moved = h.recorder.of("call.transferred")[0].event.data
        assert (moved["callId"], moved["target"]) == (first, "3003")

        second = await emu.ring("1002", "+4930222")
        await h.publish("test.cucm.answer_call", agent="1002", connection_id=second)
        await done("cucm.answer_call", 2)
        await h.publish("test.cucm.consult_call", agent="1002", target="2001", connection_id=second)
        await done("cucm.consult_call", 2)
        await h.wait_until(lambda: any(c.state == "ACTIVE" and c.main == second
                                       for c in emu.agents["1002"].calls.values()), timeout=30)
        await h.publish("test.cucm.transfer_call", agent="1002", connection_id=second)
        await done("cucm.transfer_call")
        await h.publish("test.cucm.get_state", agent="1002")
        await done("cucm.get_state")
        await h.publish("test.cucm.logout", agent="1002")
        await done("cucm.logout")
        await h.recorder.wait_results("GetState")
        await h.wait_until(lambda: any(c.event.data["state"] == "logged_out"
                                       for c in h.recorder.of("agent.state_changed")), timeout=30)
    states = [c.event.data["state"] for c in h.recorder.of("agent.state_changed")]
    # record actions run concurrently: compare what arrived, not the order it was recorded in
    assert {"logged_in", "available", "busy", "logged_out"} <= set(states)
    assert h.recorder.results("GetState")[0]["state"] == "READY"
    assert emu.agents == {}


async def test_broker_restart_mid_session_recovers_and_commands_complete(
    tmp_path: Path, activemq_factory: Any, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    broker = activemq_factory(tls=False)
    name = unique_name("Connector")
    async with emulator(broker, name) as emu, cucm_bus(options_for(broker, name)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=60)
        await h.publish("test.cucm.login", agent="1001")
        await h.wait_until(lambda: h.counter("actions", action="cucm.login", outcome="ok") == 1,
                           timeout=30)
        hellos = emu.stats["hellos"]
        await anyio.to_thread.run_sync(broker.restart)
        await h.wait_until(lambda: h.source().conn.stats["losses"] >= 1, timeout=60)
        await h.wait_until(lambda: h.state() == "connected", timeout=120)
        assert emu.stats["hellos"] > hellos  # a new handshake after the reconnect
        await h.publish("test.cucm.make_call", agent="1001", number="4930999")
        await h.wait_until(lambda: h.counter("actions", action="cucm.make_call",
                                             outcome="ok") == 1, timeout=60)
        assert (await h.recorder.wait_results("MakeCall"))[0]["state"] == "INITIATING"
    assert emu.commands("MakeCall") == 1


async def test_the_next_action_of_a_rule_uses_the_answer_as_previous(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    """MakeCall's answer carries the new call's id; the rule's next action holds that call."""
    name = unique_name("Connector")
    async with emulator(activemq, name) as emu, \
            cucm_bus(options_for(activemq, name)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.publish("test.cucm.login", agent="1001")
        await h.recorder.wait_results("Login")
        await h.publish("test.dial_then_hold", agent="1001", number="4930777")
        # the call may still be INITIATING when the hold arrives: the connector answers
        # CF_INVALID_OBJECT_STATE, which the guide says to retry, until it is ACTIVE
        await h.wait_until(
            lambda: any(r["outcome"] == "ok" for r in h.recorder.results("HoldCall")), timeout=30
        )
        (dialled,) = h.recorder.results("MakeCall")
        holds = h.recorder.results("HoldCall")
        assert dialled["connectionId"]
        assert all(r["arguments"] == [dialled["connectionId"]] for r in holds)
        assert holds[-1]["state"] == "HELD"
        assert emu.commands("MakeCall") == 1  # the answered MakeCall is never sent again
