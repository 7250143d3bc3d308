"""The source and actions against the emulator, through a real bus, broker and rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ccbus_stomp.testing import ActiveMQBroker, unique_name

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
        assert h.recorder.of("cucm.System")[0]["data"]["status"] == "IN_SERVICE"

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
        started = h.recorder.of("call.started")
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
        assert [(r["command"], r.get("state")) for r in h.recorder.results()] == [
            ("Login", None), ("MakeCall", "INITIATING"), ("HoldCall", "HELD"),
            ("RetrieveCall", "ACTIVE"), ("ReleaseCall", "DROPPED"),
        ]
        assert h.recorder.of("call.ended")[0]["data"]["callId"] == call_id
        assert all(r["outcome"] == "ok" for r in h.recorder.results())
        assert h.outcomes("cucm.release_call")["ok"] == 1
        assert emu.commands("MakeCall") == 1
