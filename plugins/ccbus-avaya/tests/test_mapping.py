"""Native and canonical events from notifications: types, subjects, times, fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ccbus_avaya.mapping import Mapper
from ccbus_avaya.protocol import BODY_EVENTS, validate_notification
from ccbus_avaya.scenarios import contact_center

from ccbus import CANONICAL_EVENTS, Event

RECEIVED = datetime(2026, 11, 5, 13, 0, 0, tzinfo=UTC)

#: (native type, subject) of each document example: engagement id, or agent id for agents.
ENGAGEMENT = "15bcf682-3edf-4c79-b083-07864fa1fb55"
EXPECTED_SUBJECTS = {
    "AgentState": "4a785201-73b8-4842-abf7-36f5e572d310",
    "AgentParticipant": ENGAGEMENT,
    "AutomationParticipant": ENGAGEMENT,
    "ExternalParticipant": ENGAGEMENT,
    "EngagementPrerouted": ENGAGEMENT,
    "InboundEngagementCreated": ENGAGEMENT,
    "MatchOffered": ENGAGEMENT,
    "OutboundEngagementCreated": ENGAGEMENT,
    "SingleStepTransfer": ENGAGEMENT,
    "SingleStepTransferError": ENGAGEMENT,
    "ChannelReady": "zz3tDKfrQx-Mv78Q_AIpGG",
    "AfterContactWorkActivated": "zz3tDKfrQx-Mv78Q_AIpGG",
    "AfterContactWorkCompleted": "zz3tDKfrQx-Mv78Q_AIpGG",
}

#: The canonical events each document example yields on its own (no earlier context).
EXPECTED_CANONICAL = {
    "AgentState": ["agent.state_changed"],
    "EngagementPrerouted": ["call.queued"],
    "InboundEngagementCreated": ["call.started"],
    "OutboundEngagementCreated": ["call.started"],
    "SingleStepTransfer": ["call.transferred"],
    "SingleStepTransferError": ["system.alert"],
    "AfterContactWorkActivated": ["agent.state_changed"],
}


def check_canonical(event: Event) -> None:
    """A canonical event has its catalogue's required fields, only its fields, and its key."""
    spec = CANONICAL_EVENTS[event.type]
    names = {f.name for f in spec.fields}
    required = {f.name for f in spec.fields if f.required}
    assert required <= set(event.data), (event.type, event.data)
    assert set(event.data) - names == {"nativeType"}, (event.type, event.data)
    assert event.data["nativeType"].startswith("avaya.")
    assert event.subject == event.data[spec.key]
    for field in spec.fields:
        if field.name in event.data:
            kind = {"str": str, "int": int, "float": (int, float)}[field.type]
            assert isinstance(event.data[field.name], kind), (event.type, field.name)
    assert event.vendor == "avaya"


@pytest.mark.parametrize("name", BODY_EVENTS)
def test_every_body_event_maps_to_its_native_type_and_subject(name: str, notification: Any) -> None:
    doc = notification(name)
    doc["correlationId"] = f"corr-{name}"
    events = Mapper("av").map(doc, RECEIVED)
    native = events[0]
    assert native.type == f"avaya.{name}"
    assert native.subject == EXPECTED_SUBJECTS[name]
    assert native.id == f"corr-{name}"
    assert native.source == "av" and native.vendor == "avaya"
    # Long.MAX_VALUE milliseconds, as in every example: unknown, so the receive time
    assert native.time == RECEIVED
    # the envelope is kept, the body too, and the body's fields are lifted for rules
    assert native.data["accountId"] == "DYNNUG"
    assert native.data["sentAt"] == "2020-08-24T08:20:23.395Z"
    assert native.data["body"] == doc["body"]
    assert native.data["event"] == name
    canonical = events[1:]
    assert [e.type for e in canonical] == EXPECTED_CANONICAL.get(name, [])
    for event in canonical:
        check_canonical(event)
        assert event.id == f"corr-{name}:{event.type}"
        assert event.time == native.time


def test_envelope_fields_win_over_lifted_body_fields(notification: Any) -> None:
    doc = notification("SingleStepTransfer")
    native = Mapper("av").map(doc, RECEIVED)[0]
    assert native.data["correlationId"] == "a425851d-5225-4b76-8ca0-4fa31ecfd5db"
    assert native.data["body"]["correlationId"] == "d3c8400d-c44f-4451-8316-e75c4efb8bb2"
    assert native.data["initiatingLoginId"] == "agent.one@example.com"


def test_real_epoch_milliseconds_become_the_event_time(notification: Any) -> None:
    doc = notification("AgentState")
    doc["body"]["timestamp"] = 1793883602114
    assert Mapper("av").map(doc, RECEIVED)[0].time == datetime(
        2026, 11, 5, 13, 0, 2, 114000, tzinfo=UTC
    )
    doc["body"]["timestamp"] = "1793883602114"  # the schema says string (format long)
    assert Mapper("av").map(doc, RECEIVED)[0].time.second == 2


def test_an_id_is_found_without_a_correlation_id(notification: Any) -> None:
    doc = notification("AgentState")
    del doc["correlationId"]
    assert Mapper("av").map(doc, RECEIVED)[0].id == "d3c8400d-c44f-4451-8316-e75c4efb8bb2"
    del doc["body"]["id"]
    first = Mapper("av").map(doc, RECEIVED, b"raw-1")[0].id
    assert first.startswith("sha1-") and first == Mapper("av").map(doc, RECEIVED, b"raw-1")[0].id


@pytest.mark.parametrize(
    ("state", "canonical"),
    [
        ("READY", "available"),
        ("NOT_READY", "not_ready"),
        ("LOGGED_IN", "logged_in"),
        ("LOGGED_OUT", "logged_out"),
        ("BUSY_ELSEWHERE", "unknown"),
    ],
)
def test_agent_states(state: str, canonical: str, notification: Any) -> None:
    doc = notification("AgentState")
    doc["body"]["state"] = state
    event = Mapper("av").map(doc, RECEIVED)[1]
    assert event.data["state"] == canonical
    assert event.data["nativeState"] == state
    assert event.data["reason"] == "514 (RONA)"


def test_after_contact_work_is_a_state(notification: Any) -> None:
    event = Mapper("av").map(notification("AfterContactWorkActivated"), RECEIVED)[1]
    assert event.data == {
        "agentId": "zz3tDKfrQx-Mv78Q_AIpGG",
        "state": "after_call_work",
        "nativeState": "AfterContactWorkActivated",
        "nativeType": "avaya.AfterContactWorkActivated",
    }


def notify(mapper: Mapper, body: dict[str, Any], at: datetime) -> list[Event]:
    doc = {"correlationId": f"c-{len(mapper.engagements)}-{at.timestamp()}", "body": body}
    assert validate_notification(doc) == []
    body.setdefault("timestamp", int(at.timestamp() * 1000))
    return mapper.map(doc, at)


def canonical_of(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in events if not e.type.startswith("avaya.")]


def inbound_call(mapper: Mapper, start: datetime, channel: str = "Voice") -> None:
    base = {"engagementId": "e1", "channelId": channel}
    notify(
        mapper,
        {
            "event": "InboundEngagementCreated",
            **base,
            "connectionId": "k1",
            "externalParticipantId": "+1555",
            "callingNumber": "+1555",
            "dialledNumber": "+1800",
        },
        start,
    )
    notify(
        mapper,
        {
            "event": "EngagementPrerouted",
            **base,
            "queue": {"queueId": "q1", "queueName": "BillingQ"},
        },
        start + timedelta(seconds=10),
    )


def customer_leaves(
    mapper: Mapper, at: datetime, *, initiated: bool = True, channel: str = "Voice"
) -> list[Event]:
    return notify(
        mapper,
        {
            "event": "ExternalParticipant",
            "engagementId": "e1",
            "channelId": channel,
            "action": "REMOVED",
            "connectionId": "k1",
            "externalParticipantId": "+1555",
            "externalParticipantInitiatedDisconnect": initiated,
        },
        at,
    )


def test_a_caller_who_hangs_up_in_the_queue_abandoned(notification: Any) -> None:
    mapper = Mapper("av")
    start = RECEIVED
    inbound_call(mapper, start)
    events = customer_leaves(mapper, start + timedelta(seconds=52.5))
    assert canonical_of(events) == [
        (
            "call.abandoned",
            {
                "callId": "e1",
                "caller": "+1555",
                "queue": "BillingQ",
                "waitSeconds": 42.5,
                "nativeType": "avaya.ExternalParticipant",
            },
        ),
        (
            "call.ended",
            {
                "callId": "e1",
                "caller": "+1555",
                "called": "+1800",
                "durationSeconds": 52.5,
                "result": "abandoned",
                "nativeType": "avaya.ExternalParticipant",
            },
        ),
    ]
    for event in events[1:]:
        check_canonical(event)
    assert mapper.engagements == {}  # forgotten once ended


def test_an_answered_call_completes_with_its_last_agent() -> None:
    mapper = Mapper("av")
    inbound_call(mapper, RECEIVED)
    for agent in ("a1", "a2"):
        notify(
            mapper,
            {
                "event": "AgentParticipant",
                "engagementId": "e1",
                "action": "ADDED",
                "agentId": agent,
                "channelId": "Voice",
            },
            RECEIVED,
        )
    notify(
        mapper,
        {
            "event": "AgentParticipant",
            "engagementId": "e1",
            "action": "OBSERVING",
            "agentId": "supervisor",
            "channelId": "Voice",
        },
        RECEIVED,
    )
    [(kind, data)] = canonical_of(customer_leaves(mapper, RECEIVED + timedelta(seconds=90)))
    assert (kind, data["result"], data["agent"], data["durationSeconds"]) == (
        "call.ended",
        "completed",
        "a2",
        90.0,
    )


def second_party(mapper: Mapper, action: str, at: datetime) -> list[Event]:
    """A second external party (k2, +1666) on engagement e1: invited, joined or removed."""
    return notify(
        mapper,
        {
            "event": "ExternalParticipant",
            "engagementId": "e1",
            "channelId": "Voice",
            "action": action,
            "connectionId": "k2",
            "externalParticipantId": "+1666",
            "externalParticipantInitiatedDisconnect": False,
        },
        at,
    )


def test_parties_only_invited_do_not_keep_a_call_alive() -> None:
    """Issue #17 item 10: the caller hangs up in the queue while others are only ringing."""
    mapper = Mapper("av")
    inbound_call(mapper, RECEIVED)
    assert canonical_of(second_party(mapper, "INVITED", RECEIVED + timedelta(seconds=20))) == []
    invited_agent = {
        "event": "AgentParticipant",
        "engagementId": "e1",
        "action": "INVITED",
        "agentId": "a1",
        "channelId": "Voice",
    }
    assert canonical_of(notify(mapper, invited_agent, RECEIVED + timedelta(seconds=25))) == []
    events = customer_leaves(mapper, RECEIVED + timedelta(seconds=30))
    assert [(kind, data.get("result")) for kind, data in canonical_of(events)] == [
        ("call.abandoned", None),
        ("call.ended", "abandoned"),
    ]
    assert canonical_of(events)[0][1]["waitSeconds"] == 20.0
    for event in events[1:]:
        check_canonical(event)
    # the invitation is withdrawn, or answered too late: the call has ended once already
    later = RECEIVED + timedelta(seconds=31)
    assert canonical_of(second_party(mapper, "ADDED", later)) == []
    assert canonical_of(second_party(mapper, "REMOVED", later)) == []
    assert mapper.engagements == {}


def test_an_invited_party_who_joins_keeps_the_call_alive_and_it_ends_once() -> None:
    mapper = Mapper("av")
    inbound_call(mapper, RECEIVED)
    second_party(mapper, "INVITED", RECEIVED)
    second_party(mapper, "ADDED", RECEIVED)  # answered: now on the call
    assert canonical_of(customer_leaves(mapper, RECEIVED + timedelta(seconds=40))) == []
    [(kind, data)] = canonical_of(second_party(mapper, "REMOVED", RECEIVED + timedelta(seconds=60)))
    assert (kind, data["result"], data["durationSeconds"]) == ("call.ended", "failed", 60.0)
    assert canonical_of(customer_leaves(mapper, RECEIVED + timedelta(seconds=61))) == []


def test_a_system_disconnect_in_the_queue_is_not_abandoned() -> None:
    mapper = Mapper("av")
    inbound_call(mapper, RECEIVED)
    [(kind, data)] = canonical_of(customer_leaves(mapper, RECEIVED, initiated=False))
    assert (kind, data["result"]) == ("call.ended", "failed")


def test_a_call_that_started_before_we_listened_ends_with_what_is_known() -> None:
    assert canonical_of(customer_leaves(Mapper("av"), RECEIVED)) == [
        ("call.ended", {"callId": "e1", "nativeType": "avaya.ExternalParticipant"})
    ]


def test_other_channels_are_not_calls_unless_configured() -> None:
    chat = Mapper("av")
    inbound_call(chat, RECEIVED, channel="Chat")
    assert canonical_of(customer_leaves(chat, RECEIVED, channel="Chat")) == []
    every = Mapper("av", call_channels=["*"])
    inbound_call(every, RECEIVED, channel="Chat")
    assert [t for t, _ in canonical_of(customer_leaves(every, RECEIVED, channel="Chat"))] == [
        "call.abandoned",
        "call.ended",
    ]


def test_transfer_errors_are_alerts(notification: Any) -> None:
    event = Mapper("av").map(notification("SingleStepTransferError"), RECEIVED)[1]
    assert event.type == "system.alert"
    assert event.data["severity"] == "info"  # CANCELLED
    assert event.data["message"] == (
        "single-step transfer of engagement 15bcf682-3edf-4c79-b083-07864fa1fb55 to USER "
        "db9c8c9b-cb3a-42c9-8078-7a347726f016 cancelled: Engagement no longer active; "
        "The current engagement has terminated (agent ab8f46f8-fd79-4380-8d0e-ce739ca481db)"
    )


def test_the_demo_scenario_yields_valid_canonical_events_only() -> None:
    mapper = Mapper("av")
    kinds: list[str] = []
    clock = RECEIVED
    for step in contact_center():
        clock += timedelta(seconds=step.delay)
        doc = {"correlationId": f"c{len(kinds)}", **step.envelope, "body": dict(step.body)}
        doc["body"]["timestamp"] = int(clock.timestamp() * 1000)
        assert validate_notification(doc) == []
        for event in mapper.map(doc, clock)[1:]:
            check_canonical(event)
            kinds.append(event.type)
    assert sorted(set(kinds)) == [
        "agent.state_changed",
        "call.abandoned",
        "call.ended",
        "call.queued",
        "call.started",
        "call.transferred",
        "system.alert",
    ]
    assert kinds.count("call.ended") == 3 and kinds.count("call.abandoned") == 1
    assert {s.body["event"] for s in contact_center()} == set(BODY_EVENTS)


def test_engagement_memory_is_bounded() -> None:
    mapper = Mapper("av", max_engagements=3)
    for n in range(10):
        notify(mapper, {"event": "InboundEngagementCreated", "engagementId": f"e{n}"}, RECEIVED)
    assert list(mapper.engagements) == ["e7", "e8", "e9"]
