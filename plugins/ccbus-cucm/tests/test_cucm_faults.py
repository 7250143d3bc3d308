"""Errors, outages, retries and bad input: each with its outcome, log line and counter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
from ccbus_cucm.actions import run_command
from ccbus_cucm.options import CommandParams
from ccbus_cucm.protocol import COMMANDS, ERRORS
from ccbus_peers.activemq import ActiveMQBroker, unique_name

from ccbus import ActionContext, Event, PermanentActionError

pytestmark = pytest.mark.anyio

GET_STATE = next(spec for spec in COMMANDS if spec.command == "GetState")


async def test_every_documented_error_is_retried_or_fails_as_the_guide_says(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name) as emu, \
            cucm_bus(options_for(activemq, name)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.publish("test.cucm.login", agent="1001")
        await h.wait_until(lambda: h.counter("actions", action="cucm.login", outcome="ok") == 1,
                           timeout=30)
        ok = dead = 0
        for code in ERRORS:
            emu.fail_next(code, command="GetState")
            await h.publish("test.cucm.get_state", agent="1001")
            if ERRORS[code].retry:  # answered with the error, then resent and answered
                ok += 1
                await h.wait_until(lambda ok=ok: h.counter("actions", action="cucm.get_state",
                                                           outcome="ok") == ok, timeout=30)
            else:
                dead += 1
                await h.wait_until(lambda dead=dead: len(h.dead_letters()) == dead, timeout=30)
        await h.wait_until(lambda: len(h.recorder.results("GetState")) >= len(ERRORS) + ok,
                           timeout=30)
        letters = h.dead_letters()
    permanent = [c for c, spec in ERRORS.items() if not spec.retry]
    assert permanent == ["MISSING_EXTENSION", "WRONG_EXTENSION", "USER_NOT_FOUND"]
    assert sorted(d.reason.split(" with ")[1].split(":")[0] for d in letters) == sorted(permanent)
    retried = len(ERRORS) - len(permanent)
    # each retried code: the error answer, then a second GetState that succeeded
    assert emu.commands("GetState") == len(permanent) + 2 * retried
    outcomes = {o: h.counter("actions", action="cucm.get_state", outcome=o)
                for o in ("ok", "retry", "dead_letter")}
    assert outcomes == {"ok": retried, "retry": retried, "dead_letter": len(permanent)}
    errors = [r["errorType"] for r in h.recorder.results("GetState") if r["outcome"] == "error"]
    assert sorted(errors) == sorted(ERRORS)  # record actions may run out of order


async def test_bad_extensions_get_the_connectors_errors(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name) as emu, \
            cucm_bus(options_for(activemq, name), delivery={"attempts": 2}) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.publish("test.cucm.login", agent="10a1")
        await h.wait_until(lambda: len(h.dead_letters()) == 1, timeout=30)
        await h.publish("test.cucm.login", agent="1999")
        await h.wait_until(lambda: len(h.dead_letters()) == 2, timeout=30)
        await h.publish("test.cucm.login", agent="1001")
        await h.wait_until(lambda: h.counter("actions", action="cucm.login", outcome="ok") == 1,
                           timeout=30)
        await h.publish("test.cucm.make_call", agent="1001", number="")
        await h.wait_until(lambda: len(h.dead_letters()) == 3, timeout=30)
        await h.publish("test.cucm.make_call", agent="1001", number="0000")
        # INVALID_PARTY: "send the request again" -> retried, then out of attempts
        await h.wait_until(lambda: len(h.dead_letters()) == 4, timeout=30)
        # a '#' would change the command's shape: refused before anything is sent
        await h.publish("test.cucm.make_call", agent="1001", number="12#34")
        await h.wait_until(lambda: len(h.dead_letters()) == 5, timeout=30)
        reasons = [d.reason for d in h.dead_letters()]
    assert "answered Login#10a1 with WRONG_EXTENSION" in reasons[0]
    assert "answered Login#1999 with USER_NOT_FOUND" in reasons[1]
    assert "answered MakeCall#1001 with MISSING_EXTENSION" in reasons[2]
    assert "gave up after 2 attempt(s)" in reasons[3] and "INVALID_PARTY" in reasons[3]
    assert "contains '#'" in reasons[4]
    assert emu.commands("MakeCall") == 3  # "", "0000" twice; never "12#34"


async def test_out_of_service_refuses_commands_until_the_connector_is_back(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO)
    name = unique_name("Connector")
    async with emulator(activemq, name) as emu, cucm_bus(
        options_for(activemq, name), delivery={"attempts": 50}
    ) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.publish("test.cucm.login", agent="1001")
        await h.wait_until(lambda: h.counter("actions", action="cucm.login", outcome="ok") == 1,
                           timeout=30)
        await emu.set_in_service(False)
        await h.wait_until(lambda: h.state() == "out_of_service", timeout=30)
        await h.publish("test.cucm.get_state", agent="1001")
        await h.wait_until(lambda: h.counter("actions", action="cucm.get_state",
                                             outcome="retry") >= 2, timeout=30)
        # still saying Hello (every hello_interval: waited for, the retries above may be
        # quicker than one interval on a loaded machine), and the command never sent
        await h.wait_until(lambda: h.source().stats["hellos"] >= 2, timeout=30)
        assert emu.commands("GetState") == 0  # refused here, never sent
        await emu.set_in_service(True)
        await h.wait_until(lambda: h.counter("actions", action="cucm.get_state",
                                             outcome="ok") == 1, timeout=30)
        await h.wait_until(lambda: len(h.recorder.of("cucm.System")) >= 3, timeout=30)
        await h.recorder.wait_count(1, lambda c: c.event.type == "system.alert", timeout=30)
    assert emu.commands("GetState") == 1
    statuses = [c.event.data["status"] for c in h.recorder.of("cucm.System")]
    # in, out, in again (keepalives add more IN_SERVICE answers)
    assert statuses.count("IN_SERVICE") >= 2 and "OUT_OF_SERVICE" in statuses
    alerts = h.recorder.of("system.alert")
    assert alerts and alerts[0].event.data["component"] == "cucm-connector"
    assert any("GetState#1001 not sent: the CUCM Connector is OUT_OF_SERVICE" in r.getMessage()
               for r in caplog.records)


async def test_keepalives_and_an_outage_raise_device_status_and_alerts_once(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    """Every Hello is answered with a System event; only changes become canonical events."""
    name = unique_name("Connector")
    options = options_for(activemq, name, keepalive_interval=0.5)
    async with emulator(activemq, name) as emu, cucm_bus(options) as h:
        def answers(status: str) -> int:
            return sum(c.event.data["status"] == status for c in h.recorder.of("cucm.System"))

        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.wait_until(lambda: answers("IN_SERVICE") >= 4, timeout=60)  # keepalives answered
        await emu.set_in_service(False)
        await h.wait_until(lambda: answers("OUT_OF_SERVICE") >= 4, timeout=60)  # Hellos answered
        await emu.set_in_service(True)
        await h.wait_until(lambda: h.state() == "connected", timeout=60)
        back = answers("IN_SERVICE")
        await h.wait_until(lambda: answers("IN_SERVICE") >= back + 3, timeout=60)

    changes = [(c.event.data["status"], c.event.data.get("previousStatus"),
                c.event.data["nativeStatus"])
               for c in h.recorder.of("device.status_changed")]
    # record actions run concurrently: compare what was raised, not the order it was recorded in
    assert sorted(changes, key=str) == sorted([
        ("up", None, "IN_SERVICE"), ("down", "up", "OUT_OF_SERVICE"),
        ("up", "down", "IN_SERVICE"),
    ], key=str)
    alerts = sorted((c.event.data["severity"], c.event.data["message"])
                    for c in h.recorder.of("system.alert"))
    assert [severity for severity, _ in alerts] == ["info", "major"]
    assert "back IN_SERVICE" in alerts[0][1] and "is OUT_OF_SERVICE" in alerts[1][1]
    assert {c.event.data["component"] for c in h.recorder.of("system.alert")} == {"cucm-connector"}


async def test_a_late_answer_is_not_followed_by_a_second_send(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    """The first attempt gives up waiting; the retry waits for that send, not a new one."""
    name = unique_name("Connector")
    options = options_for(activemq, name, answer_timeout=0.3, command_ttl=8)
    async with emulator(activemq, name) as emu, cucm_bus(options) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        await h.publish("test.cucm.login", agent="1001")
        await h.wait_until(lambda: h.counter("actions", action="cucm.login", outcome="ok") == 1,
                           timeout=60)
        emu.delay = 1.5
        await h.publish("test.cucm.make_call", agent="1001", number="4930555")
        await h.wait_until(lambda: h.counter("actions", action="cucm.make_call",
                                             outcome="ok") == 1, timeout=30)
        assert h.counter("actions", action="cucm.make_call", outcome="retry") >= 1
        assert h.source().stats["waited_for_earlier"] >= 1
        assert h.source().stats["late_answers"] + h.source().stats["answers"] >= 1
    assert emu.commands("MakeCall") == 1
    assert len(h.recorder.results("MakeCall")) == 1


async def test_a_retry_after_an_answer_replays_it_even_after_a_restart(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    """The outbox may run a call again after it succeeded (a crash before it forgot it)."""
    name = unique_name("Connector")
    options = options_for(activemq, name)
    params = CommandParams(agent="1001")
    event = Event(type="test.cucm.get_state", source="test", data={})

    def context(attempt: int) -> ActionContext:
        return ActionContext(rule="r", event=event, idempotency_key=f"{event.id}:r:0",
                             log=logging.getLogger("test"), attempt=attempt)

    async with emulator(activemq, name) as emu:
        async with cucm_bus(options) as h:
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            await h.publish("test.cucm.login", agent="1001")
            await h.wait_until(lambda: h.counter("actions", action="cucm.login",
                                                 outcome="ok") == 1, timeout=30)
            first = await run_command(GET_STATE, params, context(1))
            again = await run_command(GET_STATE, params, context(2))
        assert emu.commands("GetState") == 1
        assert (first.replayed, again.replayed) == (False, True)
        assert again.correlation_id == first.correlation_id
        assert again.answer == first.answer
        async with cucm_bus(options) as h:  # same state directory: a restart
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            third = await run_command(GET_STATE, params, context(3))
            other = await run_command(GET_STATE, params, ActionContext(
                rule="r", event=event, idempotency_key="another-call",
                log=logging.getLogger("test")))
        assert third.replayed and third.correlation_id == first.correlation_id
        assert not other.replayed
        assert emu.commands("GetState") == 2


async def test_an_error_answer_is_not_replayed(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    async with emulator(activemq, name) as emu, \
            cucm_bus(options_for(activemq, name)) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        event = Event(type="x", source="test")
        ctx = ActionContext(rule="r", event=event, idempotency_key="k",
                            log=logging.getLogger("test"))
        with pytest.raises(PermanentActionError, match="USER_NOT_FOUND"):
            await run_command(next(s for s in COMMANDS if s.command == "Login"),
                              CommandParams(agent="1999"), ctx)
        emu.directory.add("1999")  # an admin fixed CUCM and retried the dead letter
        result = await run_command(next(s for s in COMMANDS if s.command == "Login"),
                                   CommandParams(agent="1999"), ctx)
    assert result.outcome == "ok" and not result.replayed
    assert emu.commands("Login") == 2


async def test_a_silent_connector_loses_the_session_and_a_new_one_is_handshaken(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    name = unique_name("Connector")
    options = options_for(activemq, name, keepalive_interval=0.6, keepalive_misses=2)
    async with cucm_bus(options) as h:
        async with emulator(activemq, name):
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
        # the connector is gone: keepalive Hellos go unanswered
        await h.wait_until(lambda: h.state() == "handshaking", timeout=30)
        assert h.source().stats["keepalive_missed"] >= 2
        async with emulator(activemq, name) as emu:
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            await h.publish("test.cucm.login", agent="1001")
            await h.wait_until(lambda: h.counter("actions", action="cucm.login",
                                                 outcome="ok") == 1, timeout=30)
        assert emu.stats["hellos"] >= 1


async def test_bad_input_is_logged_counted_and_the_session_carries_on(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
    caplog: Any,
) -> None:
    caplog.set_level(logging.WARNING)
    name = unique_name("Connector")
    options = options_for(activemq, name)
    client = f"/topic/{options['client_topic']}"
    bodies = {
        "": "empty_body",
        "{not json": "bad_json",
        "[1, 2]": "malformed",  # not an object, so not the JSON pattern
        '{"type": "Nope"}': "unknown_event",
        '{"agentId": "1001"}': "no_type",
        "1001#Bogus#x": "unknown_event",
        "no separators": "malformed",
        "System#": "malformed",
    }
    async with emulator(activemq, name) as emu, cucm_bus(options) as h:
        await h.wait_until(lambda: h.state() == "connected", timeout=30)
        conn = emu.connection
        for body in bodies:
            await conn.send(client, body)
        raw = conn._conn
        await anyio.to_thread.run_sync(
            lambda: raw.send(client, b"\xff\xfe#Error", headers={"content-length": "8"})
        )
        await conn.send(client, "1001#AgentState#NOT_READY#2026-11-22T10:00:00Z")
        await h.wait_until(lambda: h.recorder.of("agent.state_changed"), timeout=30)
        assert h.state() == "connected"
    expected: dict[str, int] = {}
    for reason in [*bodies.values(), "not_utf8"]:
        expected[reason] = expected.get(reason, 0) + 1
    assert {r: h.bad_input(r) for r in expected} == expected
    assert dict(h.source().ctx.refusals.counts) == expected
    assert h.recorder.of("agent.state_changed")[0].event.data["state"] == "not_ready"
    logged = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(logged) == sum(expected.values())
    assert any("(unknown_event) from destination" in m and "unknown event 'Bogus'" in m
               for m in logged)
    # every one is kept as a dead letter, with its reason and body, for an admin to read
    letters = h.source().ctx.refusals.dead_letters.read()
    assert sorted(d["reason"] for d in letters) == sorted(
        r for r, n in expected.items() for _ in range(n))
    assert {d["message"] for d in letters} >= set(bodies)
    assert all(d["destination"] == client for d in letters)


async def test_a_poison_message_is_a_dead_letter_acknowledged_and_the_next_one_arrives(
    tmp_path: Path, activemq: ActiveMQBroker, cucm_bus: Any, emulator: Any, options_for: Any,
) -> None:
    """JSON nested 100,000 levels deep, on a durable subscription: refused, kept, counted,
    acknowledged (a second bus on the same subscription does not get it again), and the
    good event behind it is emitted, all without the source restarting."""
    name = unique_name("Connector")
    options = options_for(activemq, name)
    options["broker"]["client_id"] = unique_name("ccbus-cucm-poison")
    client = f"/topic/{options['client_topic']}"
    poison = '{"type":' * 100_000 + '"AgentState"' + "}" * 100_000
    good = "1001#AgentState#NOT_READY#2026-11-22T10:00:00Z"
    async with emulator(activemq, name) as emu:
        async with cucm_bus(options) as h:
            await h.wait_until(lambda: h.state() == "connected", timeout=30)
            await emu.connection.send(client, poison)
            await emu.connection.send(client, good)
            await h.recorder.wait_count(1, lambda c: c.event.type == "agent.state_changed",
                                        timeout=30)
            await h.wait_until(lambda: h.bad_input("bad_json") == 1, timeout=30)
            conn = h.source().conn
            await conn.flush_acks()
            assert h.bus.sources["cucm"].restarts == 0
            assert conn.stats["connects"] == 1
            assert h.state() == "connected"
            letters = h.source().ctx.refusals.dead_letters.read()
            assert [d["reason"] for d in letters] == ["bad_json"]
            assert "nested too deeply" in letters[0]["detail"]
            assert letters[0]["destination"] == client
            assert letters[0]["message"].startswith('{"type":{"type":')
            assert letters[0]["truncated"] is True
        # the same durable subscription again: had the poison not been acknowledged,
        # the broker would hand it to this bus now
        async with cucm_bus(options) as again:
            await again.wait_until(lambda: again.state() == "connected", timeout=30)
            await emu.connection.send(client, good.replace("NOT_READY", "READY"))
            await again.recorder.wait_count(1, lambda c: c.event.type == "agent.state_changed",
                                            timeout=30)
            await anyio.sleep(0.5)
            assert again.bad_input("bad_json") == 0
            assert len(again.source().ctx.refusals.dead_letters.read()) == 1
    assert h.recorder.of("agent.state_changed")[0].event.data["state"] == "not_ready"
    assert again.recorder.of("agent.state_changed")[-1].event.data["state"] == "available"
