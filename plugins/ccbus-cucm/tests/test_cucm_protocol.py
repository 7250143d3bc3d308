"""The guide's wire format: both event patterns, the canonical mapping, the error table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from ccbus_cucm.mapping import DeviceStatuses, to_events
from ccbus_cucm.protocol import (
    COMMANDS,
    ERRORS,
    CucmMessage,
    ProtocolError,
    error_spec,
    parse_command_type,
    parse_event,
    render_event,
)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def events(body: str) -> list[tuple[str, dict[str, object]]]:
    mapped = to_events(parse_event(body), source="c", message_id="ID:1", received=NOW, raw=body)
    return [(e.type, e.data) for e in mapped]


@pytest.mark.parametrize(
    ("body", "kind", "agent", "fields"),
    [
        ("System#IN_SERVICE", "System", None, {"status": "IN_SERVICE"}),
        ("System#OUT_OF_SERVICE", "System", None, {"status": "OUT_OF_SERVICE"}),
        ("Terminal#CiscoTermInServiceEv", "Terminal", None, {"status": "CiscoTermInServiceEv"}),
        ("42031#DialogState#ACTIVE#2026-11-22T10:00:00Z", "DialogState", "42031",
         {"state": "ACTIVE", "stateChangeTimeString": "2026-11-22T10:00:00Z",
          "agentId": "42031"}),
        ("42031#DialogState#ACTIVE#t#52129051#42032,32033", "DialogState", "42031",
         {"state": "ACTIVE", "stateChangeTimeString": "t", "connectionID": "52129051",
          "participants": ["42032", "32033"], "agentId": "42031"}),
        ("InboundCall#ALERTING#t", "InboundCall", None, {"State": "ALERTING", "startTime": "t"}),
        ("42031#InboundCall#ALERTING#t#42032#52129051", "InboundCall", "42031",
         {"State": "ALERTING", "startTime": "t", "participants": ["42032"],
          "Connection": "52129051", "agentId": "42031"}),
        ("42031#AgentState#READY", "AgentState", "42031", {"state": "READY", "agentId": "42031"}),
        ("42031#Error#MISSING_EXTENSION", "Error", "42031",
         {"errorType": "MISSING_EXTENSION", "agentId": "42031"}),
        ("System#Error#PLEASE_RETRY", "Error", None, {"errorType": "PLEASE_RETRY"}),
        ("42031#DialogState#ACTIVE#t#1#2#surplus", "DialogState", "42031",
         {"state": "ACTIVE", "stateChangeTimeString": "t", "connectionID": "1",
          "participants": ["2"], "extra": ["surplus"], "agentId": "42031"}),
    ],
)
def test_default_pattern(body: str, kind: str, agent: str | None,
                         fields: dict[str, object]) -> None:
    message = parse_event(body)
    assert (message.kind, message.agent, message.fields, message.pattern) == (
        kind, agent, fields, "default")


@pytest.mark.parametrize(
    ("doc", "kind", "state", "connection", "participants"),
    [
        ({"type": "DialogState", "agentId": "42031", "state": "ACTIVE",
          "stateChangeTimeString": "t", "participants": [42032, 32033],
          "connectionID": 52129051}, "DialogState", "ACTIVE", "52129051", ["42032", "32033"]),
        ({"type": "InboundCall", "agentId": "42031", "State": "ALERTING", "startTime": "t",
          "participants": 42032, "Connection": 52129051}, "InboundCall", "ALERTING",
         "52129051", ["42032"]),
        ({"type": "AGENT_STATE", "agentId": "42031", "state": {"state": "TALKING"},
          "otherParticipants": [42032], "connectionID": 52129051}, "AgentState", "TALKING",
         "52129051", ["42032"]),
        ({"type": "System", "status": "IN_SERVICE"}, "System", "IN_SERVICE", None, []),
    ],
)
def test_json_pattern(doc: dict[str, object], kind: str, state: str, connection: str | None,
                      participants: list[str]) -> None:
    message = parse_event(json.dumps(doc))
    assert (message.kind, message.state, message.connection_id, message.participants) == (
        kind, state, connection, participants)
    assert message.fields == doc and message.pattern == "json"


def test_json_errors_name_the_code_in_either_field() -> None:
    assert parse_event('{"type":"Error","errorType":"WRONG_EXTENSION","message":"x"}'
                       ).error_code == "WRONG_EXTENSION"
    assert parse_event('{"type":"Error","message":"USER_NOT_FOUND"}').error_code == (
        "USER_NOT_FOUND")
    assert parse_event('{"type":"Error","message":"something odd"}').error_code is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [("", "empty_body"), ("   ", "empty_body"), ("{", "bad_json"), ('"x"', "malformed"),
     ('{"type": 5}', "no_type"), ('{"type": "Weather"}', "unknown_event"),
     ("1001#Weather#sunny", "unknown_event"), ("hello", "malformed"),
     ("1001#Error#", "malformed")],
)
def test_what_is_not_an_event_is_refused_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_event(body)
    assert caught.value.reason == reason


@pytest.mark.parametrize("pattern", ["default", "json"])
@pytest.mark.parametrize(
    "message",
    [
        CucmMessage("System", None, {"status": "IN_SERVICE"}),
        CucmMessage("DialogState", "1001", {"state": "HELD", "stateChangeTimeString": "t",
                                            "connectionID": "9", "participants": ["2", "3"]}),
        CucmMessage("InboundCall", "1001", {"State": "ALERTING", "startTime": "t",
                                            "participants": ["+49"], "Connection": "9"}),
        CucmMessage("AgentState", "1001", {"state": "READY", "stateChangeTimeString": "t"}),
        CucmMessage("Error", "1001", {"errorType": "INVALID_PARTY"}),
    ],
)
def test_the_emulators_rendering_reads_back(message: CucmMessage, pattern: str) -> None:
    back = parse_event(render_event(message, pattern))  # type: ignore[arg-type]
    assert (back.kind, back.agent, back.state, back.connection_id, back.participants,
            back.error_code) == (message.kind, message.agent, message.state,
                                 message.connection_id, message.participants, message.error_code)


def test_error_table_follows_the_guide() -> None:
    assert set(ERRORS) == {
        "MISSING_EXTENSION", "WRONG_EXTENSION", "USER_NOT_FOUND", "GENERAL_ERROR",
        "CF_GENERIC_UNSPECIFIED", "CF_INVALID_OBJECT_STATE", "PLEASE_RETRY", "INVALID_PARTY",
        "PRIVILLEGE_VIOLATION", "LICENSES_EXCEEDED"}
    # the three that ask the user for other input fail; "send the request again" retries
    assert {c for c, s in ERRORS.items() if not s.retry} == {
        "MISSING_EXTENSION", "WRONG_EXTENSION", "USER_NOT_FOUND"}
    # the guide spells one of them three ways
    for spelling in ("PREVILLEGE_VIOLATION", "PRIVILEGE_VIOLATION", "privillege_violation"):
        assert error_spec(spelling) is ERRORS["PRIVILLEGE_VIOLATION"]
    assert error_spec("NOT_A_CODE") is None


def test_commands_are_the_guides_twelve() -> None:
    assert [c.command for c in COMMANDS] == [
        "Login", "Logout", "MakeCall", "AnswerCall", "ReleaseCall", "HoldCall", "RetrieveCall",
        "Transfer_sst", "ConsultCall", "TransferCall", "Conferencecall", "GetState"]
    assert parse_command_type("Transfer_sst#1001") == ("Transfer_sst", "1001")
    assert parse_command_type("Hello#ccbus.cucm.a") == ("Hello", "ccbus.cucm.a")
    for bad in (None, "", "MakeCall"):
        with pytest.raises(ProtocolError):
            parse_command_type(bad)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("1001#AgentState#NOT_READY", [("agent.state_changed",
                                        {"agentId": "1001", "state": "not_ready",
                                         "nativeState": "NOT_READY"})]),
        ("1001#AgentState#SOMETHING_NEW", [("agent.state_changed",
                                            {"agentId": "1001", "state": "unknown",
                                             "nativeState": "SOMETHING_NEW"})]),
        ("1001#InboundCall#ALERTING#t#+4930#77", [("call.started", {
            "callId": "77", "caller": "+4930", "called": "1001", "channel": "voice",
            "direction": "inbound"})]),
        ("1001#InboundCall#ABANDONED#t#+4930#77", [("call.abandoned",
                                                    {"callId": "77", "caller": "+4930"})]),
        ("1001#DialogState#INITIATING#t#78#2002", [("call.started", {
            "callId": "78", "caller": "1001", "called": "2002", "channel": "voice",
            "direction": "outbound"})]),
        ("1001#DialogState#TRANSFERRED#t#78#3003", [("call.transferred", {
            "callId": "78", "target": "3003", "agent": "1001"})]),
        ("1001#DialogState#FAILED#t#78", [("call.ended", {
            "callId": "78", "agent": "1001", "result": "failed"})]),
        ("1001#DialogState#DROPPED#t#78", [("call.ended", {
            "callId": "78", "agent": "1001", "result": "completed"})]),
        ("1001#DialogState#ACTIVE#t#78", []),
        ("1001#DialogState#ACTIVE", []),  # no connection id: no call event
        ("System#IN_SERVICE", [("device.status_changed", {
            "deviceId": "cucm-connector", "status": "up", "nativeStatus": "IN_SERVICE",
            "deviceType": "connector"})]),
        ("1001#Terminal#CiscoTermOutServiceEv", [("device.status_changed", {
            "deviceId": "1001", "status": "down", "nativeStatus": "CiscoTermOutServiceEv",
            "deviceType": "phone"})]),
    ],
)
def test_canonical_mapping(body: str, expected: list[tuple[str, dict[str, object]]]) -> None:
    native, *canonical = events(body)
    assert native[0] == f"cucm.{parse_event(body).kind}"
    assert native[1]["raw"] == body
    want = [(kind, {**fields, "nativeType": native[0]}) for kind, fields in expected]
    assert canonical == want


def test_device_status_is_raised_on_a_change_only_and_an_outage_is_two_alerts() -> None:
    """Keepalive answers repeat IN_SERVICE, and OUT_OF_SERVICE answers every Hello."""
    devices = DeviceStatuses()
    raised: list[tuple[str, dict[str, object]]] = []
    bodies = ["System#IN_SERVICE"] * 3 + ["System#OUT_OF_SERVICE"] * 4 + ["System#IN_SERVICE"] * 3
    for n, body in enumerate(bodies):
        mapped = to_events(parse_event(body), source="c", message_id=f"ID:{n}", received=NOW,
                           raw=body, devices=devices)
        devices.record(mapped)
        raised += [(e.type, e.data) for e in mapped[1:]]
    assert [(kind, data.get("status"), data.get("previousStatus"), data.get("severity"))
            for kind, data in raised] == [
        ("device.status_changed", "up", None, None),
        ("device.status_changed", "down", "up", None),
        ("system.alert", None, None, "major"),
        ("device.status_changed", "up", "down", None),
        ("system.alert", None, None, "info"),
    ]
    assert "back IN_SERVICE" in str(raised[-1][1]["message"])


def test_an_event_not_emitted_is_raised_again_when_repeated() -> None:
    """The source records a status once its events were emitted: a failed emit is retried."""
    devices = DeviceStatuses()
    body = "1001#Terminal#CiscoTermInServiceEv"
    first = to_events(parse_event(body), source="c", message_id="ID:1", received=NOW, raw=body,
                      devices=devices)
    again = to_events(parse_event(body), source="c", message_id="ID:2", received=NOW, raw=body,
                      devices=devices)
    assert [e.type for e in first] == [e.type for e in again] == [
        "cucm.Terminal", "device.status_changed"]
    devices.record(again)
    assert [e.type for e in to_events(parse_event(body), source="c", message_id="ID:3",
                                      received=NOW, raw=body, devices=devices)] == [
        "cucm.Terminal"]


def test_out_of_service_is_also_an_alert_and_times_come_from_the_vendor() -> None:
    kinds = [kind for kind, _ in events("System#OUT_OF_SERVICE")]
    assert kinds == ["cucm.System", "device.status_changed", "system.alert"]
    body = "1001#AgentState#READY#2026-11-22T09:30:00.1234567Z"
    mapped = to_events(parse_event(body), source="c", message_id="ID:2", received=NOW, raw=body)
    assert {e.time for e in mapped} == {datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=UTC)}
    assert [e.id for e in mapped] == ["ID:2", "ID:2:agent.state_changed"]
    bad = "1001#AgentState#READY#0001-01-01T00:00:00"
    mapped = to_events(parse_event(bad), source="c", message_id="ID:3", received=NOW, raw=bad)
    assert mapped[0].time == NOW


def test_a_protocol_error_is_the_cores_refused_input() -> None:
    """Raised inside ``ctx.convert``, it is a dead letter with its own reason (issue #16)."""
    from ccbus_cucm.errors import ProtocolError as Error

    from ccbus import RefusedInput

    assert Error is ProtocolError and issubclass(ProtocolError, RefusedInput)
    with pytest.raises(RefusedInput) as caught:
        parse_event("")
    assert (caught.value.reason, caught.value.detail) == ("empty_body", "empty event body")
