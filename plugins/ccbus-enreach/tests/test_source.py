"""The ``enreach`` source in a real bus against the simulator: events, subscriptions and their
results, bad input, 401s, silent hubs, back-pressure, actions and the HTTP/CLI commands."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from ccbus_enreach.cli import enreach_group
from ccbus_enreach.scenarios import ANNA, BERT, CALLBACKS, CARLA, SALES
from ccbus_enreach.simulator import RteSimulator
from click.testing import CliRunner

from ccbus.testing import BusHarness

pytestmark = pytest.mark.anyio


def options(sim: RteSimulator, subscriptions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**sim.source_options(), "subscriptions": subscriptions, **extra}


async def connected(bus: BusHarness, sim: RteSimulator, count: int) -> None:
    await sim.wait_subscribed(count, within=20)
    await bus.wait_until(lambda: bus.state() == "connected", timeout=20)


def bad_input(bus: BusHarness) -> dict[str, float]:
    """``ccbus_source_bad_input_total{source="rte",reason}`` as the bus counts it, by reason."""
    return {
        labels["reason"]: value
        for name, labels, value in bus.bus.counters.snapshot()
        if name == "source_bad_input" and labels.get("source") == "rte"
    }


@pytest.mark.parametrize("wire_case", ["camel", "pascal"])
async def test_subscribed_events_go_through_a_rule(
    enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int, wire_case: str
) -> None:
    async with RteSimulator(wire_case=wire_case) as sim:
        async with enreach_bus(options(sim, subscriptions)) as bus:
            await connected(bus, sim, subscription_count)
            assert await sim.publish("UserStatus", ANNA, {"Talking": True}) == 1
            assert await sim.publish("QueueStatus", SALES, {"NbrOfQueuingRequesters": 3}) == 1
            assert await sim.publish("UserStatus", BERT) == 0  # not subscribed
            await bus.wait_until(lambda: len(bus.recorder.calls) == 4, timeout=20)
            calls = bus.recorder.calls
            assert [c.params["type"] for c in calls] == [
                "enreach.UserStatus",
                "agent.state_changed",
                "enreach.QueueStatus",
                "queue.status",
            ]
            assert [c.params["subject"] for c in calls] == [ANNA, ANNA, SALES, SALES]
            source = bus.source()
            assert source.active == set(source.wanted)
            assert source.status()["state"] == "connected"
            assert sim.stats.token_requests == 1


async def test_refused_subscriptions_are_reported_and_the_rest_carry_on(
    enreach_bus: Any,
    subscriptions: dict[str, Any],
    subscription_count: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with RteSimulator() as sim:
        sim.deny(CALLBACKS)
        async with enreach_bus(options(sim, subscriptions)) as bus:
            await connected(bus, sim, subscription_count - 1)
            assert bus.source().refused == {"Unauthorized": 1}
            assert (CALLBACKS, "CallbackChanged") not in bus.source().active
            assert len(bus.source().active) == subscription_count - 1
            assert await sim.publish("UserAvailability", BERT) == 1
            await bus.wait_until(
                lambda: "enreach.UserAvailability" in bus.recorder.types(), timeout=20
            )
    assert (
        f"enreach rte: the hub refused to subscribe {CALLBACKS} to CallbackChanged: Unauthorized"
        in caplog.text
    )
    assert "enreach rte: 5 of 6 subscription(s) active" in caplog.text


async def test_a_401_names_the_user_and_is_retried_with_a_fresh_token(
    enreach_bus: Any,
    subscriptions: dict[str, Any],
    subscription_count: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with RteSimulator(token_ttl=-60) as sim:  # every token is born expired
        async with enreach_bus(options(sim, subscriptions)) as bus:
            await bus.wait_until(lambda: bus.source().failures["unauthorized"] >= 3, timeout=20)
            assert sim.stats.hub_refusals >= 3
            assert sim.stats.token_requests >= 3  # a fresh token for every attempt
            assert bus.state() == "reconnecting"
            sim.token_ttl = 3600  # the vendor side is fixed: the source gets in by itself
            await connected(bus, sim, subscription_count)
    assert "enreach rte: unauthorized for user id 'me'" in caplog.text
    assert "refused the token" in caplog.text


async def test_wrong_credentials_say_whose(
    enreach_bus: Any, subscriptions: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with RteSimulator() as sim:
        async with enreach_bus(options(sim, subscriptions, secret="wrong")) as bus:
            await bus.wait_until(lambda: bus.source().failures["unauthorized"] >= 2, timeout=20)
            assert sim.stats.connections == 0
    assert (
        "the REST API refused the credentials of 'ccbus-demo' for user id 'me' "
        "(401 on GET /token/me/rte/)" in caplog.text
    )


async def test_malformed_frames_and_messages_are_counted_and_the_connection_survives(
    enreach_bus: Any,
    subscriptions: dict[str, Any],
    subscription_count: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with RteSimulator() as sim:
        async with enreach_bus(options(sim, subscriptions)) as bus:
            await connected(bus, sim, subscription_count)
            await sim.publish_raw("this is not JSON\x1e")
            await sim.publish_raw('{"type": 42}\x1e')
            await sim.publish_raw(
                json.dumps({"type": 1, "target": "MessageReceived", "arguments": ["x"]}) + "\x1e"
            )
            await sim.publish_raw(
                json.dumps(
                    {"type": 1, "target": "MessageReceived",
                     "arguments": [{"data": {"eventType": "UserMood", "id": "m-1"}}]}
                ) + "\x1e"
            )
            assert await sim.publish("UserStatus", ANNA) == 1
            await bus.wait_until(lambda: "enreach.UserStatus" in bus.recorder.types(), timeout=20)
            source = bus.source()
            refusals = source.ctx.refusals
            await bus.wait_until(lambda: refusals.counts["malformed_frame"] == 2, timeout=20)
            assert refusals.counts["malformed"] == 1
            assert source.intake.dropped["unknown_event"] == 1
            assert "enreach.UserMood" in bus.recorder.types()
            assert source.connections == 1  # the same connection all along
            await bus.wait_until(lambda: len(refusals.dead_letters.read()) == 3, timeout=20)
            reasons = [d["reason"] for d in refusals.dead_letters.read()]
            assert sorted(reasons) == ["malformed", "malformed_frame", "malformed_frame"]
            assert bad_input(bus) == {"malformed": 1, "malformed_frame": 2}
            assert source.status()["dropped"] == {
                "unknown_event": 1, "malformed": 1, "malformed_frame": 2,
            }
    assert "source rte: refused a message (malformed_frame)" in caplog.text
    assert "unreadable hub message" in caplog.text


async def test_a_poison_message_is_a_dead_letter_and_the_next_one_arrives(
    enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int
) -> None:
    """Valid JSON nested 100,000 levels deep, as a MessageReceived call: refused, counted on
    /metrics and kept; the same connection (no restart) delivers the good event after it."""
    deep = "[" * 100_000 + "]" * 100_000
    poison = '{"type":1,"target":"MessageReceived","arguments":[' + deep + "]}\x1e"
    async with RteSimulator() as sim:
        async with enreach_bus(options(sim, subscriptions)) as bus:
            await connected(bus, sim, subscription_count)
            source = bus.source()
            assert await sim.publish_raw(poison) == 1
            assert await sim.publish("UserStatus", ANNA, {"Talking": True}) == 1
            await bus.wait_until(lambda: "agent.state_changed" in bus.recorder.types(), timeout=20)
            assert bus.recorder.types() == ["enreach.UserStatus", "agent.state_changed"]
            # not restarted: the same source, the same connection, never reconnecting
            assert bus.source() is source
            assert bus.state() == "connected"
            assert source.connections == 1 and sim.stats.connections == 1
            assert bus.counter("source_reconnects", source="rte") == 0
            assert source.failures == {}
            # refused once, counted on /metrics, kept as a dead letter with its reason
            assert bad_input(bus) == {"malformed_frame": 1}
            [letter] = source.ctx.refusals.dead_letters.read()
            assert letter["reason"] == "malformed_frame"
            assert letter["detail"].startswith("unreadable hub message (")
            assert "JSON is nested too deeply" in letter["detail"]
            assert letter["message"].startswith('{"type":1,"target":"MessageReceived"')
            assert letter["truncated"] is True
            # dealt with once, not handed over again: later traffic finds nothing left of it
            assert await sim.publish("QueueStatus", SALES) == 1
            await bus.wait_until(lambda: "queue.status" in bus.recorder.types(), timeout=20)
            assert bad_input(bus) == {"malformed_frame": 1}
            assert len(source.ctx.refusals.dead_letters.read()) == 1
            assert source.connections == 1


async def test_a_silent_hub_is_noticed_and_left(
    enreach_bus: Any, subscriptions: dict[str, Any]
) -> None:
    async with RteSimulator(keepalive=3600) as sim:  # the hub never pings
        extra = {"server_timeout": 0.8, "ping_every": 0.2}
        async with enreach_bus(options(sim, subscriptions, **extra)) as bus:
            await bus.wait_until(lambda: bus.source().connections >= 2, timeout=20)
            assert bus.source().failures["Transient"] >= 1
            assert sim.stats.pings_received >= 2  # the source pinged all along


async def test_client_pings_keep_a_quiet_connection_open(
    enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int
) -> None:
    async with RteSimulator(client_timeout=2.0) as sim:
        async with enreach_bus(options(sim, subscriptions, ping_every=0.2)) as bus:
            await connected(bus, sim, subscription_count)
            # ~4 s, no other traffic
            await bus.wait_until(lambda: sim.stats.pings_received >= 20, timeout=20)
            assert sim.stats.client_timeouts == 0
            assert bus.source().connections == 1


async def test_back_pressure_stops_reading_instead_of_dropping(
    enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int
) -> None:
    slow = """
    rules:
      - name: slow
        on: enreach.UserStatus
        do: [record: {type: "{event.type}", id: "{event.id}"}]
    """
    async with RteSimulator() as sim:
        async with enreach_bus(options(sim, subscriptions, max_pending=5), rules=slow) as bus:
            await connected(bus, sim, subscription_count)
            source = bus.source()
            original = source.intake.batch
            waits: list[int] = []

            async def slow_batch(batch: list[Any]) -> None:
                await anyio.sleep(0.002 * len(batch))
                if source.session is not None:
                    waits.append(source.session.handoff.waits)
                await original(batch)

            source.intake.batch = slow_batch  # a slow consumer, as a busy bus would be
            result = await sim.blast(500)
            assert result["sent"] == 500
            await bus.wait_until(lambda: len(bus.recorder.calls) == 500, timeout=60)
            assert max(waits) > 0  # the receive thread waited for room
            # none lost, none doubled
            assert len({c.params["id"] for c in bus.recorder.calls}) == 500


RUNTIME_RULES = """
rules:
  - name: follow-the-answering-agent
    on: enreach.UserCallInArrived
    do:
      - enreach.subscribe: {entity: "{userId}", events: [UserStatus, UserWrapUpStarted]}
  - name: stop-following
    on: enreach.UserCallInDisconnected
    do:
      - enreach.unsubscribe: {entity: "{userId}", events: "UserStatus"}
  - name: bad-subscription
    on: enreach.QueueStatus
    do:
      - enreach.subscribe: {entity: "{entityId}", events: [UserStatus]}
  - name: record
    on: ["enreach.*"]
    do: [record: {type: "{event.type}", id: "{event.id}", subject: "{event.subject}"}]
"""


async def test_rules_subscribe_and_unsubscribe_at_run_time(
    enreach_bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    subscriptions = {
        "users": {CARLA: ["UserCallInArrived", "UserCallInDisconnected"]},
        "queues": {SALES: ["QueueStatus"]},
    }
    async with RteSimulator() as sim:
        opts = {**sim.source_options(), "subscriptions": subscriptions}
        async with enreach_bus(opts, rules=RUNTIME_RULES) as bus:
            await connected(bus, sim, 3)
            caplog.set_level(logging.INFO)
            assert await sim.publish("UserStatus", CARLA) == 0
            await sim.publish("UserCallInArrived", CARLA, {"CallId": "c1"})
            await sim.wait_subscribed(5)
            assert await sim.publish("UserStatus", CARLA) == 1
            await bus.wait_until(lambda: "enreach.UserStatus" in bus.recorder.types(), timeout=20)
            assert bus.source().wanted[(CARLA, "UserStatus")] == "runtime"
            # a rule's mistake: a queue is no user; the hub says so, the rule's call dead-letters
            await sim.publish("QueueStatus", SALES)
            await bus.wait_until(
                lambda: bus.source().refused["Invalid event name"] == 1, timeout=20
            )
            assert (SALES, "UserStatus") not in bus.source().wanted
            await sim.publish("UserCallInDisconnected", CARLA, {"CallId": "c1"})
            await sim.wait_for(lambda: sim.subscription_count() == 4)
            assert (CARLA, "UserStatus") not in bus.source().wanted
            assert await sim.publish("UserStatus", CARLA) == 0
    assert f"enreach.subscribe (rule follow-the-answering-agent): {CARLA} subscribed to" in (
        caplog.text
    )
    assert f"enreach rte: the hub refused to subscribe {SALES} to UserStatus" in caplog.text


async def test_unsubscribe_all_clears_the_hub_and_what_is_restored(
    enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int
) -> None:
    rules = """
    rules:
      - name: reset
        on: enreach.UserAvailability
        do: [enreach.unsubscribe_all: {}]
    """
    async with RteSimulator() as sim:
        async with enreach_bus(options(sim, subscriptions), rules=rules) as bus:
            await connected(bus, sim, subscription_count)
            await sim.publish("UserAvailability", BERT)
            await sim.wait_for(lambda: sim.subscription_count() == 0)
            assert bus.source().wanted == {}
            await sim.restart()
            await bus.wait_until(lambda: bus.source().connections == 2, timeout=20)
            await bus.wait_until(lambda: bus.state() == "connected", timeout=20)
            assert sim.subscription_count() == 0


async def test_ccbus_enreach_available_and_active_ask_the_running_source(
    tmp_path: Any, enreach_bus: Any, subscriptions: dict[str, Any], subscription_count: int
) -> None:
    async with RteSimulator() as sim:
        async with enreach_bus(options(sim, subscriptions), listen="127.0.0.1:0") as bus:
            await connected(bus, sim, subscription_count)
            await bus.wait_until(lambda: bus.bus.http_port is not None, timeout=20)
            url = f"http://127.0.0.1:{bus.bus.http_port}"
            runner = CliRunner()

            def run(*args: str) -> Any:
                return runner.invoke(enreach_group, list(args), catch_exceptions=False)

            available = await anyio.to_thread.run_sync(run, "available", "--url", url,
                                                       "--source", "rte")
            assert available.exit_code == 0, available.output
            assert available.output.splitlines() == sorted(available.output.splitlines())
            assert "UserStatus" in available.output.splitlines()
            assert "QueueStatus" in available.output.splitlines()
            active = await anyio.to_thread.run_sync(
                run, "active", "--url", url, "--source", "rte", "--json"
            )
            assert active.exit_code == 0, active.output
            items = json.loads(active.output)
            assert sorted((i["entityId"], i["eventType"]) for i in items) == sorted(
                bus.source().wanted
            )
            table = await anyio.to_thread.run_sync(run, "active", "-c",
                                                   str(tmp_path / "ccbus.yaml"), "--url", url)
            assert f"Queue     {SALES}  QueueStatus" in table.output
            missing = await anyio.to_thread.run_sync(run, "active", "--url", url,
                                                     "--source", "nope")
            assert missing.exit_code == 1
            assert "has no enreach source 'nope'" in missing.output
            await sim.restart()
            await bus.wait_until(lambda: bus.source().connections == 2, timeout=20)
            await connected(bus, sim, subscription_count)
            again = await anyio.to_thread.run_sync(
                run, "active", "--url", url, "--source", "rte", "--json"
            )
            assert len(json.loads(again.output)) == subscription_count


async def test_an_unreachable_rest_api_is_retried_and_said(
    enreach_bus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    opts = {"api_url": f"http://127.0.0.1:{port}", "username": "u", "secret": "s"}
    async with enreach_bus(opts) as bus:
        await bus.wait_until(lambda: bus.source().failures["Transient"] >= 3, timeout=20)
        assert bus.state() == "reconnecting"
        assert bus.source().connections == 0
    assert f"enreach rte: token request to http://127.0.0.1:{port}/token/me/rte/ failed" in (
        caplog.text
    )
    assert "reconnecting with a fresh token in" in caplog.text
