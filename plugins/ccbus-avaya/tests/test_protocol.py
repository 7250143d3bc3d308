"""The AsyncAPI messages: the document's own examples validate; schema breaks are named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ccbus_avaya.protocol import (
    BODY_EVENTS,
    AuthStatus,
    ServerMessage,
    authentication_message,
    authentication_response,
    classify_server_message,
    ping_message,
    validate_authentication,
    validate_notification,
    validate_ping,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_document_lists_thirteen_body_events() -> None:
    assert BODY_EVENTS == (
        "AgentState",
        "AgentParticipant",
        "AutomationParticipant",
        "ExternalParticipant",
        "EngagementPrerouted",
        "InboundEngagementCreated",
        "MatchOffered",
        "OutboundEngagementCreated",
        "SingleStepTransfer",
        "SingleStepTransferError",
        "ChannelReady",
        "AfterContactWorkActivated",
        "AfterContactWorkCompleted",
    )
    assert sorted(p.stem for p in FIXTURES.glob("[A-Z]*.json")) == sorted(BODY_EVENTS)


@pytest.mark.parametrize("event", BODY_EVENTS)
def test_every_example_of_the_document_is_valid(event: str, notification: Any) -> None:
    # the examples contradict the schema in places (reasonCode 514, attributes as an
    # object, engagementParameters with a field): a validator must accept them
    assert validate_notification(notification(event)) == []


def test_authentication_example_and_the_messages_we_build() -> None:
    example = json.loads((FIXTURES / "authentication.json").read_text())
    assert validate_authentication(example) == []
    ours = json.loads(authentication_message("sub-1", "tok"))
    assert ours == {"event": "authentication", "subscriptionId": "sub-1", "token": "tok"}
    assert validate_authentication(ours) == []
    assert json.loads(ping_message()) == {"event": "ping"}
    assert validate_ping(json.loads(ping_message("sub-1"))) == []
    response = json.loads(authentication_response(AuthStatus.CONFIRMED, "s", ping_interval=300))
    documented = json.loads((FIXTURES / "authenticationResponse.json").read_text())
    assert set(response) <= set(documented)


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        (lambda d: d["body"].update(mood="grumpy"), "unknown_field", "AgentState: undeclared"),
        (lambda d: d.update(region="eu"), "unknown_field", "notification: undeclared"),
        (lambda d: d["body"].update(event="AgentTeleported"), "unknown_event", "AgentTeleported"),
        (lambda d: d["body"].pop("event"), "missing_field", "body.event is missing"),
        (lambda d: d.pop("body"), "missing_field", "notification.body"),
        (lambda d: d.update(body=[1]), "wrong_type", "expected an object, got array"),
        (lambda d: d["body"].update(agentId={"id": 1}), "wrong_type", "AgentState.agentId"),
        (lambda d: d["body"].update(timestamp="yesterday"), "wrong_type", "epoch milliseconds"),
        (lambda d: d.update(accountId=["DYNNUG"]), "wrong_type", "notification.accountId"),
    ],
)
def test_schema_breaks_are_named(notification: Any, change: Any, reason: str, detail: str) -> None:
    doc = notification("AgentState")
    change(doc)
    problems = validate_notification(doc)
    assert [p.reason for p in problems] == [reason]
    assert detail in problems[0].detail


def test_nested_objects_are_closed_too(notification: Any) -> None:
    doc = notification("EngagementPrerouted")
    doc["body"]["queue"]["colour"] = "blue"
    doc["body"]["customerIdentifiers"] = {"phoneNumbers": ["+1"], "shoeSize": ["44"]}
    details = [p.detail for p in validate_notification(doc)]
    assert details == [
        "EngagementPrerouted.queue: undeclared field(s) colour",
        "EngagementPrerouted.customerIdentifiers: undeclared field(s) shoeSize",
    ]
    offered = notification("MatchOffered")
    offered["body"]["offeredQueue"] = {"rank": "first", "offeredAgentData": {"agentId": 7}}
    assert [p.reason for p in validate_notification(offered)] == ["wrong_type"]


def test_non_strict_tolerates_undeclared_fields_only(notification: Any) -> None:
    doc = notification("AgentState")
    doc["body"]["mood"] = "grumpy"
    assert validate_notification(doc, strict=False) == []
    doc["body"]["event"] = "AgentTeleported"
    assert [p.reason for p in validate_notification(doc, strict=False)] == ["unknown_event"]


def test_not_an_object() -> None:
    assert [p.reason for p in validate_notification([1, 2])] == ["not_an_object"]


def test_client_messages_are_checked_as_the_simulator_needs() -> None:
    assert [p.reason for p in validate_authentication({"event": "ping"})] == [
        "wrong_event",
        "missing_field",
        "missing_field",
    ]
    extra = {"event": "authentication", "subscriptionId": "s", "token": "t", "x": 1}
    assert [p.reason for p in validate_authentication(extra)] == ["unknown_field"]
    assert [p.reason for p in validate_ping({"event": "ping", "x": 1})] == ["unknown_field"]


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        ({"event": "pong"}, ServerMessage.PONG),
        ({"event": "authenticationResponse", "status": "X"}, ServerMessage.AUTHENTICATION_RESPONSE),
        ({"correlationId": "c", "body": {}}, ServerMessage.NOTIFICATION),
        ({"event": "surprise"}, ServerMessage.UNKNOWN),
        ({"correlationId": "c"}, ServerMessage.UNKNOWN),
        ([1], ServerMessage.UNKNOWN),
    ],
)
def test_server_messages_are_told_apart_by_shape(doc: Any, kind: ServerMessage) -> None:
    assert classify_server_message(doc) is kind
