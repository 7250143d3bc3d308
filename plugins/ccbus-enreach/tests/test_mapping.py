"""From MessageReceived payloads to events: every event of the document, both spellings,
the canonical mapping, and what is dropped (duplicates, expired, malformed) with counters."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ccbus_enreach.intake import Intake
from ccbus_enreach.mapping import user_status_state
from ccbus_enreach.options import EnreachOptions
from ccbus_enreach.protocol import EVENT_ALIASES, EVENTS, example_payload

from ccbus import CANONICAL_EVENTS, Event, RefusedInput, SourceContext

USER = "a1eeb030-ff4b-ea11-ac9c-00155d4fdcf3"
QUEUE = "c9eeb030-ff4b-ea11-ac9c-00155d4fdcf3"
DOC_NAMES = sorted(n for n in EVENTS if n not in EVENT_ALIASES)


def camel(doc: dict[str, Any]) -> dict[str, Any]:
    return {k[:1].lower() + k[1:]: v for k, v in doc.items()}


def message(name: str, *, pascal: bool = True, **fields: Any) -> list[Any]:
    """A MessageReceived argument list with the document's example for ``name``."""
    data = example_payload(name)
    data.update(
        {
            "Id": str(uuid.uuid4()),
            "Timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "EntityId": QUEUE if EVENTS[name].entity_type == "Queue" else USER,
        }
    )
    data.update(fields)
    subscription = {"id": str(uuid.uuid4()), "eventType": name, "entityId": data["EntityId"]}
    return [{"subscription": subscription, "data": data if pascal else camel(data)}]


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    async def emit(event: Event) -> None:  # pragma: no cover - batch() is not used here
        raise AssertionError

    ctx = SourceContext(
        name="rte",
        options=EnreachOptions(api_url="http://x", username="u", secret="s"),
        emit=emit,
        log=logging.getLogger("ccbus.source.rte"),
        state_dir=tmp_path,
    )
    return Intake(ctx)


def check_canonical(event: Event) -> None:
    """A canonical event has its type's required fields, with their types."""
    spec = CANONICAL_EVENTS[event.type]
    types = {"str": str, "int": int, "float": float}
    for item in spec.fields:
        if item.required:
            assert item.name in event.data, (event.type, item.name)
        if item.name in event.data:
            assert isinstance(event.data[item.name], types[item.type]), (event.type, item.name)
    assert event.subject == event.data[spec.key]
    assert event.vendor == "enreach"


@pytest.mark.parametrize("pascal", [True, False], ids=["PascalCase", "camelCase"])
@pytest.mark.parametrize("name", DOC_NAMES)
def test_every_event_of_the_document_becomes_a_native_event(
    intake: Intake, name: str, pascal: bool
) -> None:
    arguments = message(name, pascal=pascal)
    data = arguments[0]["data"]
    events = intake.events(arguments)
    native = events[0]
    assert native.type == f"enreach.{name}"
    assert native.id == (data.get("Id") or data.get("id"))
    assert native.subject == (data.get("EntityId") or data.get("entityId"))
    assert native.data is data  # the hub's payload, untouched
    assert abs((native.time - datetime.now(UTC)).total_seconds()) < 60
    for event in events[1:]:
        check_canonical(event)
        assert event.data["nativeType"] == native.type


def test_the_terminal_status_event_is_known_by_both_of_its_names(intake: Intake) -> None:
    [event] = intake.events(message("UserTerminalStatus"))
    assert event.type == "enreach.UserTerminalStatus"  # what its payload's EventType says
    assert intake.dropped["unknown_event"] == 0


@pytest.mark.parametrize("pascal", [True, False])
def test_call_lifecycle_maps_to_canonical_calls(intake: Intake, pascal: bool) -> None:
    call = str(uuid.uuid4())
    common = {"CallId": call, "CallerNumber": "+358401", "TargetNumber": "+358202", "UserId": USER}
    arrived = intake.events(message("UserCallInArrived", pascal=pascal, **common))
    coming = intake.events(message("UserCallInComing", pascal=pascal, **common))
    ended = intake.events(
        message("UserCallInDisconnected", pascal=pascal, Reason="remote", **common)
    )
    assert [e.type for e in arrived] == ["enreach.UserCallInArrived", "call.started"]
    started = arrived[1]
    assert started.data == {
        "callId": call,
        "caller": "+358401",
        "called": "+358202",
        "channel": "voice",
        "direction": "inbound",
        "agent": USER,
        "nativeType": "enreach.UserCallInArrived",
    }
    # one call, one call.started id: the bus drops the second as a duplicate
    assert coming[1].id == started.id == f"enreach-call:{call}:call.started"
    assert ended[1].type == "call.ended"
    assert ended[1].data["result"] == "remote"
    assert ended[1].subject == call
    out = intake.events(
        message("UserCallOutGoing", CallId=call + "x", CallAsNumber="+358999", CallerNumber="1")
    )
    assert out[1].data["direction"] == "outbound"
    assert out[1].data["caller"] == "+358999"


def test_overflow_into_a_queue_is_queued_and_elsewhere_transferred(intake: Intake) -> None:
    call = str(uuid.uuid4())
    queued = intake.events(
        message(
            "UserCallInOverflow",
            CallId=call,
            TechQueueId=QUEUE,
            TechQueueName="Support",
            OverflowReason="NoAnswer",
        )
    )
    assert queued[1].type == "call.queued"
    assert queued[1].data["queue"] == "Support"
    assert queued[1].data["reason"] == "NoAnswer"
    elsewhere = intake.events(
        message("UserCallInOverflow", CallId=call, TechQueueId=None, TechNumber="+35850")
    )
    assert elsewhere[1].type == "call.transferred"
    assert elsewhere[1].data["target"] == "+35850"
    assert elsewhere[1].data["transferType"] == "overflow"
    user_overflow = intake.events(message("UserCallInUserOverflow", CallId=call, Target="+3585"))
    assert user_overflow[1].data["target"] == "+3585"
    connected = intake.events(
        message("UserCallInTransferConnected", CallId=call, ConnectedTarget="+3586")
    )
    assert connected[1].type == "call.transferred"
    assert connected[1].data["transferType"] == "transfer"
    started = intake.events(message("UserCallInTransferStarted", CallId=call))
    assert len(started) == 1  # a started transfer may be cancelled: no canonical event


def test_queue_status_maps_to_queue_status(intake: Intake) -> None:
    events = intake.events(
        message(
            "QueueStatus",
            pascal=False,
            QueueId=QUEUE,
            QueueName="Sales",
            NbrOfQueuingRequesters=4,
            NbrOfAgentsImmediatelyFree=1,
            MaxWaitTime=95,
        )
    )
    assert events[1].type == "queue.status"
    assert events[1].data == {
        "queueId": QUEUE,
        "name": "Sales",
        "waiting": 4,
        "agentsAvailable": 1,
        "longestWaitSeconds": 95.0,
        "openStatus": 0,
        "nativeType": "enreach.QueueStatus",
    }


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"Talking": True, "CanBeAllocatedTo": False}, "busy"),
        ({"WrapUpEnd": "2026-01-01T12:00:30Z", "Schedule": True}, "after_call_work"),
        ({"Schedule": False, "Available": False}, "logged_out"),
        ({"Schedule": True, "Available": False}, "not_ready"),
        ({"Schedule": True, "Available": True, "CanBeAllocatedTo": True}, "available"),
        ({"Schedule": True, "Available": True, "CanBeAllocatedTo": False}, "not_ready"),
        ({}, "unknown"),
    ],
)
def test_user_status_flags_give_the_agent_state(fields: dict[str, Any], state: str) -> None:
    assert user_status_state(fields) == state
    assert user_status_state(camel(fields)) == state


@pytest.mark.parametrize(
    ("availability", "state"),
    [("Available", "available"), ("Busy", "busy"), ("DoNotDisturb", "not_ready"),
     ("OffWork", "logged_out"), ("BRB", "not_ready"), ("Away", "not_ready"),
     ("Example Availability", "unknown")],
)
def test_user_availability_gives_the_agent_state(
    intake: Intake, availability: str, state: str
) -> None:
    events = intake.events(message("UserAvailability", Availability=availability, UserId=USER))
    assert events[1].data["state"] == state
    assert events[1].data["nativeState"] == availability
    assert events[1].subject == USER


def test_duplicates_are_dropped_and_counted(intake: Intake) -> None:
    arguments = message("UserStatus")
    assert len(intake.events(arguments)) == 2
    assert intake.events(arguments) == []
    assert intake.dropped["duplicate"] == 1


def test_events_older_than_their_ttl_are_dropped_and_counted(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    old = (datetime.now(UTC) - timedelta(seconds=90)).isoformat()
    assert intake.events(message("UserStatus", MessageTTLSeconds=60, Timestamp=old)) == []
    assert intake.dropped["expired"] == 1
    assert "enreach rte: expired: UserStatus" in caplog.text
    assert "(MessageTTLSeconds 60)" in caplog.text
    # -1 means no TTL; a young event is kept; an unparsable time cannot be judged: kept
    assert intake.events(message("UserStatus", MessageTTLSeconds=-1, Timestamp=old))
    assert intake.events(message("UserStatus", MessageTTLSeconds=60))
    assert intake.events(message("UserStatus", MessageTTLSeconds=60, Timestamp="0001-01-01"))
    assert intake.dropped["expired"] == 1


def test_unknown_events_are_emitted_and_counted(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    arguments = [{"subscription": {}, "data": {"eventType": "UserMood", "id": "m1"}}]
    [event] = intake.events(arguments)
    assert event.type == "enreach.UserMood"
    assert intake.dropped["unknown_event"] == 1
    assert "event 'UserMood' is not in the RTE document" in caplog.text


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["text"],
        [{"subscription": {}, "data": "text"}],
        [{"subscription": {}, "data": {}}],
        [{"data": {"EventType": "Drop table"}}],
        [{"data": {"EventType": "UserStatus"}}, {"data": {}}],
    ],
)
@pytest.mark.anyio
async def test_malformed_messages_are_refused_counted_and_kept(
    intake: Intake, arguments: list[Any], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with pytest.raises(RefusedInput) as refused:
        intake.events(arguments)
    assert refused.value.reason == "malformed"
    await intake.batch([arguments])  # inside ctx.convert: refused, not raised
    refusals = intake.ctx.refusals
    assert refusals.counts == {"malformed": 1}
    assert intake.dropped == {}
    assert "source rte: refused a message (malformed) from method MessageReceived" in caplog.text
    [letter] = refusals.dead_letters.read()
    assert letter["reason"] == "malformed"
    assert json.loads(str(letter["message"])) == arguments
    assert (tmp_path / "dead-letters.jsonl").exists()


@pytest.mark.anyio
async def test_a_mapping_that_raises_refuses_that_message_and_the_next_is_mapped(
    intake: Intake,
) -> None:
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    intake.ctx.emit = emit
    original = intake.mapper.map

    def buggy(name: str, event_id: str, *args: Any) -> Any:  # a mapping bug on one payload
        if event_id == "bad-1":
            raise KeyError("Talking")
        return original(name, event_id, *args)

    intake.mapper.map = buggy  # type: ignore[method-assign]
    bad = message("UserStatus", Id="bad-1")
    await intake.batch([bad, message("UserStatus", Id="good-1")])
    assert intake.ctx.refusals.counts == {"unreadable": 1}
    [letter] = intake.ctx.refusals.dead_letters.read()
    assert letter["reason"] == "unreadable"
    assert letter["detail"] == "KeyError: 'Talking'"
    assert json.loads(str(letter["message"])) == bad
    assert {e.type for e in emitted} == {"enreach.UserStatus", "agent.state_changed"}
    assert intake.messages == 2
    assert intake.emitted == len(emitted) == 2
