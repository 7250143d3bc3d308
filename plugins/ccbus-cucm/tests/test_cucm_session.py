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
    tmp_path: Path, activemq: ActiveMQBroker, bus_with: Any, emulator: Any, options_for: Any,
    pattern: str,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name, pattern=pattern) as emu, \
            bus_with(tmp_path, options_for(activemq, name)) as h:
        await h.wait_for(lambda: h.state == "connected")
        assert emu.stats["hellos"] >= 1
        assert (await h.recorded("cucm.System"))[0]["data"]["status"] == "IN_SERVICE"

        await h.command("cucm.login", agent="1001")
        await h.wait_for(lambda: h.recorder.results("Login"))
        login = h.recorder.results("Login")[0]
        assert login["outcome"] == "ok" and login["agent"] == "1001"
        assert login["answerType"] == "AgentInfo"
        await h.wait_for(lambda: any(c["data"]["state"] == "available"
                                     for c in h.recorder.of("agent.state_changed")))

        await h.command("cucm.make_call", agent="1001", number="4930123")
        await h.wait_for(lambda: h.recorder.results("MakeCall"))
        dialled = h.recorder.results("MakeCall")[0]
        assert (dialled["answerType"], dialled["state"]) == ("DialogState", "INITIATING")
        call_id = dialled["connectionId"]
        started = await h.recorded("call.started")
        assert [c["data"]["callId"] for c in started] == [call_id]
        assert started[0]["data"]["direction"] == "outbound"
        assert started[0]["data"]["called"] == "4930123"
        await h.wait_for(lambda: any(c["data"].get("state") == "ACTIVE"
                                     for c in h.recorder.of("cucm.DialogState")))

        await h.command("cucm.hold_call", agent="1001", connection_id=call_id)
        await h.wait_for(lambda: h.recorder.results("HoldCall"))
        await h.command("cucm.retrieve_call", agent="1001", connection_id=call_id)
        await h.wait_for(lambda: h.recorder.results("RetrieveCall"))
        await h.command("cucm.release_call", agent="1001", connection_id=call_id)
        await h.wait_for(lambda: h.recorder.of("call.ended"))
        await h.results("ReleaseCall")
        await h.wait_for(lambda: h.outcomes("cucm.release_call")["ok"] == 1)
        assert [(r["command"], r.get("state")) for r in h.recorder.results()] == [
            ("Login", None), ("MakeCall", "INITIATING"), ("HoldCall", "HELD"),
            ("RetrieveCall", "ACTIVE"), ("ReleaseCall", "DROPPED"),
        ]
        assert h.recorder.of("call.ended")[0]["data"]["callId"] == call_id
        assert all(r["outcome"] == "ok" for r in h.recorder.results())
        assert emu.commands("MakeCall") == 1


async def test_inbound_call_answer_consult_transfer_conference_and_blind_transfer(
    tmp_path: Path, activemq: ActiveMQBroker, bus_with: Any, emulator: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name, pattern="json") as emu, \
            bus_with(tmp_path, options_for(activemq, name)) as h:
        await h.wait_for(lambda: h.state == "connected")
        await h.command("cucm.login", agent="1002")
        await h.wait_for(lambda: h.outcomes("cucm.login")["ok"] == 1)

        async def done(action: str, n: int = 1) -> None:
            await h.wait_for(lambda: h.outcomes(action)["ok"] == n)

        first = await emu.ring("1002", "+4930111")
        await h.wait_for(lambda: h.recorder.of("call.started"))
        started = h.recorder.of("call.started")[0]["data"]
        assert (started["callId"], started["caller"], started["direction"]) == (
            first, "+4930111", "inbound")
        await h.command("cucm.answer_call", agent="1002", connection_id=first)
        await done("cucm.answer_call")
        await h.command("cucm.consult_call", agent="1002", target="2001", connection_id=first)
        await done("cucm.consult_call")
        await h.wait_for(lambda: len(emu.agents["1002"].calls) == 2
                         and all(c.state in ("HELD", "ACTIVE")
                                 for c in emu.agents["1002"].calls.values())
                         and any(c.state == "ACTIVE" for c in emu.agents["1002"].calls.values()))
        await h.command("cucm.conference_call", agent="1002", connection_id=first)
        await done("cucm.conference_call")
        conference = (await h.results("Conferencecall"))[0]
        assert conference["state"] == "CONFERENCED"
        assert conference["answer"]["participants"] == ["+4930111", "2001"]
        await h.command("cucm.blind_transfer", agent="1002", target="3003", connection_id=first)
        await done("cucm.blind_transfer")
        await h.wait_for(lambda: h.recorder.of("call.transferred"))
        moved = h.recorder.of("call.transferred")[0]["data"]
        assert (moved["callId"], moved["target"]) == (first, "3003")

        second = await emu.ring("1002", "+4930222")
        await h.command("cucm.answer_call", agent="1002", connection_id=second)
        await done("cucm.answer_call", 2)
        await h.command("cucm.consult_call", agent="1002", target="2001", connection_id=second)
        await done("cucm.consult_call", 2)
        await h.wait_for(lambda: any(c.state == "ACTIVE" and c.main == second
                                     for c in emu.agents["1002"].calls.values()))
        await h.command("cucm.transfer_call", agent="1002", connection_id=second)
        await done("cucm.transfer_call")
        await h.command("cucm.get_state", agent="1002")
        await done("cucm.get_state")
        await h.command("cucm.logout", agent="1002")
        await done("cucm.logout")
        await h.results("GetState")
        await h.wait_for(lambda: any(c["data"]["state"] == "logged_out"
                                     for c in h.recorder.of("agent.state_changed")))
    states = [c["data"]["state"] for c in h.recorder.of("agent.state_changed")]
    # record actions run concurrently: compare what arrived, not the order it was recorded in
    assert {"logged_in", "available", "busy", "logged_out"} <= set(states)
    assert h.recorder.results("GetState")[0]["state"] == "READY"
    assert emu.agents == {}


async def test_broker_restart_mid_session_recovers_and_commands_complete(
    tmp_path: Path, activemq_factory: Any, bus_with: Any, emulator: Any, options_for: Any,
) -> None:
    broker = activemq_factory(tls=False)
    name = unique_name("Connector")
    async with emulator(broker, name) as emu, bus_with(tmp_path, options_for(broker, name)) as h:
        await h.wait_for(lambda: h.state == "connected", within=60)
        await h.command("cucm.login", agent="1001")
        await h.wait_for(lambda: h.outcomes("cucm.login")["ok"] == 1)
        hellos = emu.stats["hellos"]
        await anyio.to_thread.run_sync(broker.restart)
        await h.wait_for(lambda: h.source.conn.stats["losses"] >= 1, within=60)
        await h.wait_for(lambda: h.state == "connected", within=120)
        assert emu.stats["hellos"] > hellos  # a new handshake after the reconnect
        await h.command("cucm.make_call", agent="1001", number="4930999")
        await h.wait_for(lambda: h.outcomes("cucm.make_call")["ok"] == 1, within=60)
        assert (await h.results("MakeCall"))[0]["state"] == "INITIATING"
    assert emu.commands("MakeCall") == 1


async def test_the_next_action_of_a_rule_uses_the_answer_as_previous(
    tmp_path: Path, activemq: ActiveMQBroker, bus_with: Any, emulator: Any, options_for: Any,
) -> None:
    """MakeCall's answer carries the new call's id; the rule's next action holds that call."""
    name = unique_name("Connector")
    async with emulator(activemq, name) as emu, \
            bus_with(tmp_path, options_for(activemq, name)) as h:
        await h.wait_for(lambda: h.state == "connected")
        await h.command("cucm.login", agent="1001")
        await h.results("Login")
        await h.command("dial_then_hold", agent="1001", number="4930777")
        # the call may still be INITIATING when the hold arrives: the connector answers
        # CF_INVALID_OBJECT_STATE, which the guide says to retry, until it is ACTIVE
        await h.wait_for(lambda: any(r["outcome"] == "ok" for r in h.recorder.results("HoldCall")))
        (dialled,) = h.recorder.results("MakeCall")
        holds = h.recorder.results("HoldCall")
        assert dialled["connectionId"]
        assert all(r["arguments"] == [dialled["connectionId"]] for r in holds)
        assert holds[-1]["state"] == "HELD"
        assert emu.commands("MakeCall") == 1  # the answered MakeCall is never sent again
