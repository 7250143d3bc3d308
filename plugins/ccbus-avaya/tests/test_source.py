"""The WebSocket source against the simulator, through a real bus and a rule.

Each fault test breaks the connection one way, waits for the source to
recover on its own, then publishes new notifications and asserts they all
arrive: recovery is proven by events, not by the source's say-so.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from ccbus_avaya import scenarios
from ccbus_avaya.protocol import AuthStatus
from ccbus_avaya.source import _too_big
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

pytestmark = pytest.mark.anyio

CONFIRMED = AuthStatus.CONFIRMED


async def publish_numbers(sim: Any, agent_body: Any, numbers: range) -> None:
    for n in numbers:
        await sim.publish(agent_body(n))


async def assert_delivered(harness: Any, numbers: range, within: float = 5.0) -> None:
    """Every numbered AgentState arrived (natively and canonically), each once."""
    wanted = [str(n) for n in numbers]
    await harness.wait_until(
        lambda: set(wanted) <= set(harness.recorder.numbers()), timeout=within
    )
    got = [n for n in harness.recorder.numbers() if n in wanted]
    assert sorted(got, key=int) == wanted, "each notification exactly once"


async def test_confirmed_connection_delivers_native_and_canonical_events(
    simulator: Any, avaya_bus: Any, agent_body: Any, caplog: Any, fast: Any
) -> None:
    caplog.set_level(logging.INFO, logger="ccbus.runtime.bus")
    async with simulator() as sim:
        async with avaya_bus({**sim.source_options(), **fast}) as h:
            await sim.wait_connected()
            await h.wait_until(lambda: h.state() == "connected", timeout=5)
            correlation = await sim.publish(agent_body(1, "NOT_READY"))
            await h.wait_until(lambda: len(h.recorder.calls) == 2, timeout=5)
        # the bus stopped and the source closed its connection (the simulator is still up)
        await sim.wait_for(lambda: not sim.sessions, within=3)
    native, canonical = h.recorder.calls
    assert (native.params["type"], native.params["id"], native.params["subject"]) == (
        "avaya.AgentState",
        correlation,
        "agent-1",
    )
    assert (canonical.params["type"], canonical.params["id"]) == (
        "agent.state_changed",
        f"{correlation}:agent.state_changed",
    )
    assert sim.stats.auth == {CONFIRMED: 1}
    states = [r.getMessage() for r in caplog.records if r.getMessage().startswith("source av:")]
    states = [s for s in states if s != "source av: running"]  # the bus's own, before the source's
    assert states[:3] == ["source av: connecting", "source av: subscribed", "source av: connected"]


@pytest.mark.parametrize(
    ("status", "tokens", "subscriptions"),
    [
        # a refused token is replaced at once; the subscription is kept
        (AuthStatus.INVALID_TOKEN, 2, 1),
        # an unknown subscription is replaced at once; the token is kept
        (AuthStatus.UNKNOWN_SUBSCRIPTION, 1, 2),
        # a server error: back off, then the same token and subscription again
        (AuthStatus.INTERNAL_SERVER_ERROR, 1, 1),
    ],
)
async def test_each_failed_authentication_status_recovers(
    simulator: Any,
    avaya_bus: Any,
    agent_body: Any,
    status: AuthStatus,
    tokens: int,
    subscriptions: int,
    fast: Any,
) -> None:
    async with simulator() as sim:
        sim.force_auth_status(status, count=1)
        async with avaya_bus({**sim.source_options(), **fast}) as h:
            await sim.wait_connected()
            await publish_numbers(sim, agent_body, range(5))
            await assert_delivered(h, range(5))
    assert sim.stats.auth == {status: 1, CONFIRMED: 1}
    assert sim.stats.tokens_issued == tokens
    assert sim.stats.subscriptions_created == subscriptions
    assert h.source().auth_statuses == {status: 1, CONFIRMED: 1}


async def test_internal_server_errors_back_off(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    options = {**fast, "backoff_initial": 0.2, "backoff_cap": 0.4}
    async with simulator() as sim:
        sim.force_auth_status(AuthStatus.INTERNAL_SERVER_ERROR, count=3)
        async with avaya_bus({**sim.source_options(), **options}) as h:
            started = time.monotonic()
            await sim.wait_connected(within=5)
            took = time.monotonic() - started
            await publish_numbers(sim, agent_body, range(3))
            await assert_delivered(h, range(3))
    # three jittered delays of at least 0.1, 0.2 and 0.2 s: no tight loop
    assert took >= 0.45
    assert sim.stats.auth[AuthStatus.INTERNAL_SERVER_ERROR] == 3
    assert h.source().failures["Transient"] == 3


async def test_constraint_violation_is_a_configuration_error_said_once_and_retried_slowly(
    simulator: Any, avaya_bus: Any, agent_body: Any, caplog: Any, fast: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="ccbus.source.av")
    async with simulator() as sim:
        sim.force_auth_status(AuthStatus.CONSTRAINT_VIOLATION, count=3)
        async with avaya_bus({**sim.source_options(), **fast}) as h:
            await h.wait_until(lambda: h.state() == "misconfigured", timeout=3)
            started = time.monotonic()
            await sim.wait_connected(within=5)
            took = time.monotonic() - started
            await publish_numbers(sim, agent_body, range(3))
            await assert_delivered(h, range(3))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "CONNECTION_FAILED_CONSTRAINT_VIOLATION" in message
    assert "forced by the simulator" in message  # the server's own words (its close reason)
    # three refusals, each followed by misconfigured_retry (0.4 s): slow, not spinning
    assert sim.stats.auth[AuthStatus.CONSTRAINT_VIOLATION] == 3
    assert took >= 0.7
    assert h.source().failures["misconfigured"] == 3


async def test_dropped_connection_reconnects_to_the_same_subscription(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        await publish_numbers(sim, agent_body, range(3))
        await assert_delivered(h, range(3))
        assert sim.drop_connections() == 1
        await sim.wait_connected(count=2)
        await publish_numbers(sim, agent_body, range(3, 8))
        await assert_delivered(h, range(8))
    assert sim.stats.subscriptions_created == 1
    assert sim.stats.tokens_issued == 1
    assert h.source().failures["Transient"] >= 1


async def test_expired_subscription_is_replaced(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        assert sim.expire_subscriptions() == 1
        await sim.wait_connected(count=2)
        await publish_numbers(sim, agent_body, range(4))
        await assert_delivered(h, range(4))
    # reconnecting to the expired one was refused, then a new one was created
    assert sim.stats.auth[AuthStatus.UNKNOWN_SUBSCRIPTION] == 1
    assert sim.stats.subscriptions_created == 2


async def test_subscription_is_renewed_before_expiry_without_losing_events(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    options = {**fast, "renew_before": 0.5}
    async with (
        simulator(expires_in=1.2) as sim,
        avaya_bus({**sim.source_options(), **options}) as h,
    ):
        await sim.wait_connected()
        # publish steadily across two renewals (at ~0.7 s and ~1.4 s)
        for n in range(60):
            await sim.publish(agent_body(n))
            await anyio.sleep(0.03)
        await assert_delivered(h, range(60))
    assert sim.stats.subscriptions_created >= 2
    # make-before-break: never refused, never expired under the client
    assert set(sim.stats.auth) == {CONFIRMED}
    assert sim.stats.undelivered == 0


async def test_token_rejected_mid_session_is_replaced(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        assert sim.reject_tokens() == 1
        await sim.wait_connected(count=2)
        await publish_numbers(sim, agent_body, range(4))
        await assert_delivered(h, range(4))
    assert sim.stats.tokens_issued == 2
    assert h.source().auth_statuses[AuthStatus.INVALID_TOKEN] == 1  # the mid-session notice
    assert sim.stats.subscriptions_created == 1


async def test_pings_follow_the_servers_ping_interval_and_get_pongs(
    simulator: Any, avaya_bus: Any, fast: Any
) -> None:
    # ping_every is 30 s, but the server wants a ping every second: it must win
    async with (
        simulator(ping_interval=1) as sim,
        avaya_bus({**sim.source_options(), **fast}) as h,
    ):
        await sim.wait_connected()
        await h.wait_until(lambda: h.source().pongs >= 2, timeout=3)
    assert sim.stats.pings >= 2
    assert sim.stats.closed_no_ping == 0
    assert sim.stats.connections == 1


async def test_missing_pong_means_a_dead_connection(
    simulator: Any, avaya_bus: Any, agent_body: Any, caplog: Any, fast: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="ccbus.source.av")
    options = {**fast, "ping_every": 0.1, "pong_timeout": 0.2}
    async with simulator() as sim, avaya_bus({**sim.source_options(), **options}) as h:
        await sim.wait_connected()
        sim.set_pongs(False)
        await h.wait_until(lambda: sim.stats.connections >= 2, timeout=3)
        sim.set_pongs(True)
        await sim.wait_connected(count=2)
        await publish_numbers(sim, agent_body, range(3))
        await assert_delivered(h, range(3))
        # the dead connection was closed by the source, not left half-open
        await sim.wait_for(lambda: len(sim.sessions) == 1, within=3)
    assert any("no pong within 0.2s" in r.getMessage() for r in caplog.records)


async def test_schema_breaking_messages_are_counted_logged_and_kept(
    simulator: Any,
    avaya_bus: Any,
    agent_body: Any,
    notification: Any,
    caplog: Any,
    fast: Any,
) -> None:
    caplog.set_level(logging.WARNING, logger="ccbus.source.av")
    extra_field = notification("AgentState")
    extra_field["body"]["mood"] = "grumpy"
    extra_envelope = notification("ChannelReady")
    extra_envelope["region"] = "eu"
    unknown_event = notification("AgentState")
    unknown_event["body"]["event"] = "AgentTeleported"
    wrong_type = notification("AgentParticipant")
    wrong_type["body"]["agentInitiatedDisconnect"] = "no"
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        for doc in (extra_field, extra_envelope, unknown_event, wrong_type):
            await sim.publish_notification(doc)
        await sim.publish_raw("{not json")
        await sim.publish_raw("[1, 2]")
        await sim.publish_raw('{"event": "surprise"}')
        await publish_numbers(sim, agent_body, range(2))
        await assert_delivered(h, range(2))
        refusals = h.source().ctx.refusals
        rejected = dict(refusals.counts)
        letters = refusals.dead_letters.read()
        counted = {r: h.bad_input(r) for r in rejected}
    assert rejected == {
        "unknown_field": 2,
        "unknown_event": 1,
        "wrong_type": 1,
        "invalid_json": 1,
        "unknown_message": 2,
    }
    assert [letter["reason"] for letter in letters] == [
        "unknown_field",
        "unknown_field",
        "unknown_event",
        "wrong_type",
        "invalid_json",
        "unknown_message",
        "unknown_message",
    ]
    assert "AgentState: undeclared field(s) mood" in letters[0]["detail"]
    assert '"mood": "grumpy"' in letters[0]["message"]
    assert letters[4]["message"] == "{not json"
    assert counted == rejected  # on /metrics: ccbus_source_bad_input_total{source,reason}
    assert h.source().connections == 1  # none of it cost the connection
    assert h.recorder.types().count("avaya.AgentState") == 2  # only the valid ones
    logged = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(logged) == 7 and "(unknown_event)" in logged[2]


async def test_duplicates_are_processed_once(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        body = agent_body(7)
        for _ in range(3):
            await sim.publish(body, correlation_id="c0ffee00-0000-4000-8000-000000000007")
        await publish_numbers(sim, agent_body, range(8, 9))
        await assert_delivered(h, range(7, 9))
        duplicates = h.bus.pipeline.duplicates
    assert h.recorder.numbers() == ["7", "8"]
    assert h.recorder.types().count("agent.state_changed") == 2
    assert duplicates == 4  # two copies, each native + canonical
    assert h.source().intake.notifications == 4  # the source passed all on: the core dropped them


async def test_all_thirteen_body_events_travel_the_wire(
    simulator: Any, avaya_bus: Any, all_doc_notifications: Any, fast: Any
) -> None:
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        for doc in all_doc_notifications.values():
            await sim.publish(doc["body"])
        await h.wait_until(
            lambda: len({t for t in h.recorder.types() if t.startswith("avaya.")}) == 13,
            timeout=5,
        )
    assert {t for t in h.recorder.types() if t.startswith("avaya.")} == {
        f"avaya.{name}" for name in all_doc_notifications
    }
    assert h.source().ctx.refusals.counts == {}


async def test_a_caller_who_hangs_up_while_another_party_is_only_invited_abandoned(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    """Issue #17 item 10, over the wire: ADDED caller, INVITED party, REMOVED caller."""
    call = scenarios.Call("+15550101")
    invitee = scenarios.Call("+15550202", engagement_id=call.engagement_id)
    steps = [
        scenarios.external_participant(call, "ADDED"),
        scenarios.prerouted(call, scenarios.BILLING),
        scenarios.external_participant(invitee, "INVITED"),
        scenarios.external_participant(call, "REMOVED", customer_left=True),
        scenarios.external_participant(invitee, "REMOVED", customer_left=False),
    ]
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        for step in steps:
            await sim.publish(step.body)
        await publish_numbers(sim, agent_body, range(1))  # a marker: everything before it is in
        await assert_delivered(h, range(1))
    calls = [c for c in h.recorder.calls if c.params["type"].startswith("call.")]
    assert [(c.params["type"], c.params["subject"]) for c in calls] == [
        ("call.queued", call.engagement_id),
        ("call.abandoned", call.engagement_id),
        ("call.ended", call.engagement_id),
    ]
    assert h.source().ctx.refusals.counts == {}


async def test_an_oversized_message_is_counted_dead_lettered_and_the_source_reconnects(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    """Issue #17 item 7: websockets closes with 1009 before the pump sees the message."""
    options = {**fast, "max_message_bytes": 4096}
    async with (
        simulator() as sim,
        avaya_bus({**sim.source_options(), **options}) as h,
    ):
        await sim.wait_connected()
        await publish_numbers(sim, agent_body, range(2))
        await assert_delivered(h, range(2))
        big = agent_body(99)
        big["profileId"] = "p" * 10_000  # compressed to far less: inflating it crosses the limit
        await sim.publish(big)
        await sim.wait_connected(count=2, within=10)
        await publish_numbers(sim, agent_body, range(2, 5))
        await assert_delivered(h, range(2, 5), within=10)
        rejected = dict(h.source().ctx.refusals.counts)
        letters = h.source().ctx.refusals.dead_letters.read()
        counted = h.bad_input("message_too_big")
    assert rejected == {"message_too_big": 1} and counted == 1
    [letter] = letters
    assert letter["reason"] == "message_too_big"
    # the simulator compresses (permessage-deflate): the size is known only up to the limit
    detail = str(letter["detail"])
    assert "a message of more than 4096 bytes once decompressed exceeds max_message_bytes" in detail
    assert letter["at"] and letter["message"] == ""
    assert "99" not in h.recorder.numbers()
    assert sim.stats.subscriptions_created == 1  # the same subscription, reconnected


@pytest.mark.parametrize(("fragments", "expected"), [(0, 5000), (3000, 8000)])
async def test_an_uncompressed_oversized_message_is_dead_lettered_with_its_size(
    fragments: int, expected: int
) -> None:
    """Without compression websockets knows the size from the frame header: it is kept."""
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN, max_size=4096)
    if fragments:
        protocol.receive_data(Frame(Opcode.TEXT, b"x" * fragments, fin=False).serialize(mask=False))
    protocol.receive_data(Frame(Opcode.CONT, b"x" * 5000).serialize(mask=False))
    protocol.receive_eof()
    problem = _too_big(protocol.close_exc, 4096)
    assert problem is not None and problem.reason == "message_too_big"
    assert problem.detail.startswith(f"a message of {expected} bytes exceeds max_message_bytes")
    compressed = _too_big(protocol.close_exc, 4096, compressed=True)
    assert compressed is not None and f"{expected} compressed bytes" in compressed.detail


async def test_pings_keep_their_period_while_a_pong_is_outstanding(
    simulator: Any, avaya_bus: Any, agent_body: Any, caplog: Any, fast: Any
) -> None:
    """Issue #17 item 9: a half-dead server (no pongs) still gets pings at the cadence, and the
    source, not the server's pingInterval, ends the connection, within that interval."""
    caplog.set_level(logging.WARNING, logger="ccbus.source.av")
    # ping every 0.5 s; pong_timeout (10 s) is capped by the server's pingInterval: 4 - 0.5
    options = {**fast, "ping_every": 0.5, "pong_timeout": 10}
    async with (
        simulator(ping_interval=4) as sim,
        avaya_bus({**sim.source_options(), **options}) as h,
    ):
        await sim.wait_connected()
        await h.wait_until(lambda: h.source().pongs >= 1, timeout=5)
        sim.set_pongs(False)
        silenced, pings = time.monotonic(), sim.stats.pings
        await h.wait_until(lambda: h.source().failures["Transient"] >= 1, timeout=20)
        noticed_after = time.monotonic() - silenced
        pings_unanswered = sim.stats.pings - pings
        sim.set_pongs(True)
        await sim.wait_connected(count=2, within=10)
        await publish_numbers(sim, agent_body, range(3))
        await assert_delivered(h, range(3), within=10)
    assert pings_unanswered >= 3  # about seven: one every 0.5 s for 3.5 s
    assert sim.stats.closed_no_ping == 0  # the server never went without a ping
    assert any("no pong within 3.5s" in r.getMessage() for r in caplog.records)
    assert noticed_after < 4 + 3  # within pingInterval (4 s), with room for a busy machine
    assert sim.stats.subscriptions_created == 1


async def test_one_lost_pong_does_not_cost_the_subscription(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    """Issue #17 item 9 as reported: default ping_every and pong_timeout, a short pingInterval."""
    options = {key: value for key, value in fast.items() if key != "pong_timeout"}
    async with (
        simulator(ping_interval=5) as sim,
        avaya_bus({**sim.source_options(), **options}) as h,
    ):
        await sim.wait_connected()
        sim.set_pongs(False)
        await sim.wait_for(lambda: sim.stats.pings >= 1, within=10)  # ~4 s: 80 % of 5 s
        sim.set_pongs(True)  # that one ping's pong is lost, and only that one
        await sim.wait_connected(count=2, within=15)
        await publish_numbers(sim, agent_body, range(3))
        await assert_delivered(h, range(3), within=10)
    assert sim.stats.closed_no_ping == 0
    assert AuthStatus.UNKNOWN_SUBSCRIPTION not in sim.stats.auth
    assert sim.stats.subscriptions_created == 1


#: Valid JSON nested 100,000 levels deep, inside a notification's body (issue #17 item 2).
DEEP = "[" * 100_000 + "]" * 100_000
POISON = '{"correlationId": "poison", "body": {"event": "AgentState", "deep": ' + DEEP + "}}"


async def test_a_poison_message_is_dead_lettered_counted_and_the_next_one_arrives(
    simulator: Any, avaya_bus: Any, agent_body: Any, fast: Any
) -> None:
    """Issue #17 items 2 and 6: a body too deep to decode is one dead letter, counted on
    /metrics; the source is not restarted, the connection stays, the next notification
    arrives."""
    async with simulator() as sim, avaya_bus({**sim.source_options(), **fast}) as h:
        await sim.wait_connected()
        await h.wait_until(lambda: h.state() == "connected", timeout=5)
        assert await sim.publish_raw(POISON) == 1
        await publish_numbers(sim, agent_body, range(1))
        await assert_delivered(h, range(1))
        letters = h.source().ctx.refusals.dead_letters.read()
        counted = h.bad_input("invalid_json")
        runtime = h.bus.sources["av"]
        restarts, state = runtime.restarts, runtime.state
    [letter] = letters
    assert letter["reason"] == "invalid_json"
    assert "nested too deeply" in str(letter["detail"])
    assert letter["message"] == POISON[: 64 * 1024] and letter["truncated"] is True
    assert counted == 1  # ccbus_source_bad_input_total{source="av",reason="invalid_json"}
    assert (restarts, state) == (0, "connected")  # run() never raised
    # nothing to redeliver: the message was taken, the connection and subscription kept
    assert h.source().connections == 1 and sim.stats.connections == 1
    assert sim.stats.subscriptions_created == 1
    assert h.recorder.numbers() == ["0"]
