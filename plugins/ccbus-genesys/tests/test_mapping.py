"""The mapping on its own: names, keys, times, and the canonical events of whole scenarios."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ccbus_genesys.catalogue import (
    AGENT_STATE,
    AGENT_STATE_EVENTS,
    ALL_EVENTS,
    CALL_THREAD,
    CALL_THREAD_EVENTS,
)
from ccbus_genesys.mapping import Key, Mapper, NativeRecord, event_time, parse_key
from ccbus_genesys.scenarios import contact_center

from ccbus import CANONICAL_EVENTS

RECEIVED = datetime(2026, 11, 7, 15, 0, tzinfo=UTC)


def where(kind: str, key: bytes | None, offset: int = 0, timestamp: int | None = None) -> Any:
    topic = "voice-agentstate" if kind == AGENT_STATE else "voice-callthread"
    return NativeRecord(topic=topic, kind=kind, partition=2, offset=offset, timestamp=timestamp,
                        key=parse_key(key))


def test_the_documents_42_names_are_known_on_their_topics() -> None:
    assert len(AGENT_STATE_EVENTS) == 21 and len(CALL_THREAD_EVENTS) == 21
    assert len(ALL_EVENTS) == 42
    mapper = Mapper("gen")
    for kind, names in ((AGENT_STATE, AGENT_STATE_EVENTS), (CALL_THREAD, CALL_THREAD_EVENTS)):
        for offset, name in enumerate(names):
            mapped = mapper.map(name, {"id": name}, where(kind, b"t1:x1", offset), RECEIVED)
            native = mapped.events[0]
            assert mapped.known, name
            assert native.type == f"genesys.{name}"
            assert native.id == f"{native.extensions['kafkatopic']}-2-{offset}"
            assert native.subject == "x1" and native.extensions["tenant"] == "t1"
            assert native.vendor == "genesys" and native.data == {"id": name}
            for canonical in mapped.events[1:]:
                assert canonical.type in CANONICAL_EVENTS


def test_unknown_names_pass_through_marked_unknown() -> None:
    mapped = Mapper("gen").map("EventUserEvent", {"id": "EventUserEvent"},
                               where(CALL_THREAD, b"t1:c1"), RECEIVED)
    assert not mapped.known
    assert [e.type for e in mapped.events] == ["genesys.EventUserEvent"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"tenant-1:agent-7", Key("tenant-1", "agent-7", "tenant-1:agent-7", True)),
        (b"t:sip:7001@host", Key("t", "sip:7001@host", "t:sip:7001@host", True)),
        (b"no-colon", Key(None, None, "no-colon", False)),
        (b":agent", Key(None, None, ":agent", False)),
        (b"tenant:", Key(None, None, "tenant:", False)),
        (b"\xff\xfe:x", Key(None, None, "\ufffd\ufffd:x", False)),
        (None, Key(None, None, None, False)),
    ],
)
def test_keys(raw: bytes | None, expected: Key) -> None:
    assert parse_key(raw) == expected


def test_times() -> None:
    tlib = {"time": {"TimeinSecs": 1794063600, "TimeinuSecs": 412000}}
    assert event_time(tlib, None) == datetime(2026, 11, 7, 15, 0, 0, 412000, tzinfo=UTC)
    assert event_time({"time": "2026-11-07T15:00:00.1234567Z"}, None) == datetime(
        2026, 11, 7, 15, 0, 0, 123456, tzinfo=UTC)
    kafka_ms = 1794063600000
    assert event_time({}, kafka_ms) == datetime(2026, 11, 7, 15, 0, tzinfo=UTC)
    # absurd or broken payload times fall back to the record's timestamp, then to "unknown"
    assert event_time({"time": {"TimeinSecs": 0}}, kafka_ms) == datetime(
        2026, 11, 7, 15, 0, tzinfo=UTC)
    assert event_time({"time": "0001-01-01T00:00:00"}, None) is None
    assert event_time({"time": {"TimeinSecs": "x"}}, -1) is None


def canonical(mapper: Mapper, name: str, kind: str, key: bytes, **fields: Any) -> list[Any]:
    mapped = mapper.map(name, {"id": name, **fields}, where(kind, key), RECEIVED)
    return [(e.type, e.data) for e in mapped.events[1:]]


def test_agent_states() -> None:
    m = Mapper("gen")
    key = b"t1:5001"
    assert canonical(m, "EventAgentLogin", AGENT_STATE, key) == [
        ("agent.state_changed", {"agentId": "5001", "state": "logged_in",
                                 "nativeState": "EventAgentLogin",
                                 "nativeType": "genesys.EventAgentLogin"})]
    assert canonical(m, "EventAgentReady", AGENT_STATE, key)[0][1]["state"] == "available"
    acw = canonical(m, "EventAgentNotReady", AGENT_STATE, key, AgentWorkMode="AfterCallWork")
    assert acw[0][1]["state"] == "after_call_work"
    lunch = canonical(m, "EventAgentNotReady", AGENT_STATE, key, AgentWorkMode="AuxWork",
                      Reasons={"ReasonCode": "Lunch"})
    assert lunch[0][1] | {} == {"agentId": "5001", "state": "not_ready", "reason": "Lunch",
                                "nativeState": "EventAgentNotReady",
                                "nativeType": "genesys.EventAgentNotReady"}
    assert canonical(m, "EventAgentLogout", AGENT_STATE, key)[0][1]["state"] == "logged_out"
    # DN and other agent-topic events have no canonical event, except out/back in service
    assert canonical(m, "EventQueueLogout", AGENT_STATE, key) == []
    assert canonical(m, "EventDNDOn", AGENT_STATE, key) == []
    down = canonical(m, "EventDNOutOfService", AGENT_STATE, key, ThisDN="7001")
    assert down == [("device.status_changed", {"deviceId": "7001", "status": "down",
                                               "deviceType": "dn",
                                               "nativeType": "genesys.EventDNOutOfService"})]
    up = canonical(m, "EventDNBackInService", AGENT_STATE, key, ThisDN="7001")
    assert up[0][1]["status"] == "up" and up[0][1]["previousStatus"] == "down"


def test_the_contact_center_scenario_maps_to_a_coherent_call_story() -> None:
    mapper = Mapper("gen")
    story: list[tuple[str, dict[str, Any]]] = []
    for offset, step in enumerate(contact_center(tenant="t1")):
        received = RECEIVED.replace(second=offset)  # one second per step
        mapped = mapper.map(step.payload["id"], step.payload,
                            where(step.kind, step.key.encode(), offset), received)
        story += [(e.type, e.data) for e in mapped.events[1:] if e.type.startswith("call.")]
    types = [t for t, _ in story]
    assert types == [
        "call.started", "call.queued", "call.transferred",   # routed to Anna's DN (diverted)
        "call.started", "call.queued", "call.abandoned", "call.ended",   # caller gave up
        "call.transferred",                                  # Anna transfers to Ben
        "call.ended",                                        # Ben's leg is released
    ]
    started = story[0][1]
    assert started == {"callId": started["callId"], "caller": "4155550199",
                       "called": "8005550123", "channel": "voice", "direction": "inbound",
                       "nativeType": "genesys.EventRouteRequest"}
    assert story[2][1]["transferType"] == "diverted" and story[2][1]["target"] == "7001"
    abandoned = story[5][1]
    assert abandoned["queue"] == "8100" and abandoned["waitSeconds"] == 1.0
    assert story[6][1]["result"] == "abandoned"
    transfer = story[7][1]
    assert transfer["target"] == "7002" and transfer["agent"] == "5001"
    assert transfer["transferType"] == "transfer"
    ended = story[8][1]
    assert ended["agent"] == "5002" and ended["result"] == "completed"
    assert ended["durationSeconds"] == 15.0  # route request at step 4, last release at 19


def test_canonical_ids_are_derived_and_distinct() -> None:
    mapper = Mapper("gen")
    mapped = mapper.map("EventAbandoned", {"id": "EventAbandoned", "ThisQueue": "8100"},
                        where(CALL_THREAD, b"t1:c9", 41), RECEIVED)
    assert [e.id for e in mapped.events] == [
        "voice-callthread-2-41", "voice-callthread-2-41:canonical",
        "voice-callthread-2-41:canonical:2",
    ]
    assert all(e.extensions["tenant"] == "t1" for e in mapped.events)
    assert all(e.subject == "c9" for e in mapped.events)


def test_call_memory_is_bounded() -> None:
    mapper = Mapper("gen", max_calls=50)
    for n in range(500):
        mapper.map("EventRinging", {"id": "EventRinging"}, where(CALL_THREAD, f"t:c{n}".encode()),
                   RECEIVED)
    assert len(mapper.calls) == 50


def test_the_catalogue_names_pass_the_name_check_on_their_own() -> None:
    """valid_event_name takes the document's names without the pattern: they must pass it."""
    from ccbus_genesys.mapping import _NAME, ALL_EVENTS, valid_event_name

    assert all(_NAME.match(name) for name in ALL_EVENTS)
    assert valid_event_name("EventAgentReady") and valid_event_name("EventSomethingNew")
    assert not valid_event_name("Event Bad") and not valid_event_name({"id": 1})
