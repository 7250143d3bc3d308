"""Native and canonical events for each payload, field by field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ccbus_cisco_cvp.mapping import Mapper
from ccbus_cisco_cvp.protocol import by_event_type

from ccbus import CANONICAL_EVENTS, Event

RECEIVED = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def run(mapper: Mapper, doc: dict[str, Any], n: int = 1) -> list[Event]:
    channel = by_event_type(doc["eventType"])
    assert channel is not None
    return mapper.map(doc, channel, event_id=f"ID:m-{n}", topic="cvp/x", received=RECEIVED)


def canonical(events: list[Event]) -> dict[str, dict[str, Any]]:
    return {e.type: e.data for e in events[1:]}


def test_native_event_envelope(payloads: dict[str, dict[str, Any]]) -> None:
    doc = payloads["calls_started"]
    native = run(Mapper("cvp-prod"), doc)[0]
    assert native.type == "cvp.call.started"
    assert native.id == "ID:m-1"
    assert native.source == "cvp-prod" and native.vendor == "cvp"
    assert native.subject == doc["callGuid"]
    assert native.time == datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
    assert native.data is doc  # as published
    assert native.extensions == {"topic": "cvp/x"}


def test_an_absurd_timestamp_falls_back_to_the_receive_time(
    payloads: dict[str, dict[str, Any]],
) -> None:
    doc = dict(payloads["calls_started"], timestamp="0001-01-01T00:00:00")
    assert run(Mapper("c"), doc)[0].time == RECEIVED


def test_a_call_answered_by_an_agent(payloads: dict[str, dict[str, Any]]) -> None:
    mapper = Mapper("c")
    started = canonical(run(mapper, payloads["calls_started"]))["call.started"]
    guid = payloads["calls_started"]["callGuid"]
    assert started == {"callId": guid, "caller": payloads["calls_started"]["callingNumber"],
                       "called": payloads["calls_started"]["calledNumber"], "channel": "voice",
                       "direction": "inbound", "nativeType": "cvp.call.started"}
    queued_doc = dict(payloads["calls_queued"], callGuid=guid)
    queued = canonical(run(mapper, queued_doc, 2))["call.queued"]
    assert queued == {"callId": guid, "queue": queued_doc["skillGroup"],
                      "caller": queued_doc["callingNumber"],
                      "position": queued_doc["queuePosition"], "nativeType": "cvp.call.queued"}
    moved = dict(payloads["calls_transferred"], callGuid=guid, transferType="consultation")
    moved.pop("skillGroup")
    transferred = canonical(run(mapper, moved, 3))["call.transferred"]
    assert transferred == {"callId": guid, "target": moved["transferDestination"],
                           "queue": queued_doc["skillGroup"],  # remembered from call.queued
                           "transferType": "consult", "nativeType": "cvp.call.transferred"}


def test_an_abandoned_call_gives_call_ended_and_call_abandoned_with_its_queue(
    payloads: dict[str, dict[str, Any]],
) -> None:
    mapper = Mapper("c")
    run(mapper, dict(payloads["calls_queued"], callGuid="A1", skillGroup="Billing"))
    ended_doc = {"eventType": "call.ended", "timestamp": "2026-11-22T09:05:00Z",
                 "callGuid": "A1", "callResult": "abandoned", "callDuration": 200,
                 "queueDuration": 150}
    events = run(mapper, ended_doc, 2)
    assert [e.type for e in events] == ["cvp.call.ended", "call.ended", "call.abandoned"]
    out = canonical(events)
    queued = payloads["calls_queued"]
    assert out["call.ended"] == {"callId": "A1", "caller": queued["callingNumber"],
                                 "called": queued["calledNumber"],
                                 "durationSeconds": 200.0, "result": "abandoned",
                                 "nativeType": "cvp.call.ended"}
    assert out["call.abandoned"] == {"callId": "A1",
                                     "caller": payloads["calls_queued"]["callingNumber"],
                                     "queue": "Billing", "waitSeconds": 150.0,
                                     "nativeType": "cvp.call.ended"}
    assert events[2].id == "ID:m-2:call.abandoned" and events[2].subject == "A1"
    assert "A1" not in mapper.calls  # forgotten once ended


def test_call_results_and_an_abandon_without_history() -> None:
    mapper = Mapper("c")
    base = {"eventType": "call.ended", "timestamp": "2026-11-22T09:05:00Z", "callGuid": "Z"}
    results = {r: canonical(run(mapper, dict(base, callResult=r)))["call.ended"]["result"]
               for r in ("completed", "transferred", "error")}
    assert results == {"completed": "completed", "transferred": "transferred", "error": "failed"}
    lonely = canonical(run(mapper, dict(base, callResult="abandoned")))["call.abandoned"]
    assert lonely == {"callId": "Z", "nativeType": "cvp.call.ended"}  # nothing to make up


def test_system_alerts(payloads: dict[str, dict[str, Any]]) -> None:
    mapper = Mapper("c")
    threshold = payloads["threshold_exceeded"]
    alert = canonical(run(mapper, threshold))["system.alert"]
    assert alert["component"] == threshold["hostname"]
    assert alert["severity"] == threshold["severity"]
    assert (alert["metric"], alert["value"], alert["threshold"]) == (
        "cpu_usage", float(threshold["currentValue"]), 85.0)
    assert f"exceeds the threshold 85 on {threshold['hostname']}" in alert["message"]

    error = canonical(run(mapper, payloads["calls_error"]))["system.alert"]
    assert error["severity"] == "major"  # icm_communication
    assert error["component"] == payloads["calls_error"]["serverHostname"]
    assert error["message"].startswith("CVP-ICM-0012: No response from ICM")
    assert payloads["calls_error"]["callGuid"] in error["message"]
    vxml = dict(payloads["calls_error"], errorCategory="vxml_error")
    vxml.pop("serverHostname")
    minor = canonical(run(mapper, vxml))["system.alert"]
    assert (minor["severity"], minor["component"]) == ("minor", "cvp")

    service = {"eventType": "system.service_state_changed", "timestamp": "2026-11-22T09:00:00Z",
               "serviceName": "CVP Reporting Service", "hostname": "cs-01",
               "previousState": "running", "currentState": "error", "message": "pool exhausted"}
    down = canonical(run(mapper, service))["system.alert"]
    assert down == {"component": "cs-01", "severity": "major",
                    "message": "service CVP Reporting Service on cs-01 is in error: "
                               "pool exhausted",
                    "nativeType": "cvp.system.service_state_changed"}
    assert canonical(run(mapper, dict(service, currentState="running"))) == {}

    deploy = dict(payloads["config_deployed"], status="failed")
    failed = canonical(run(mapper, deploy))["system.alert"]
    assert failed["severity"] == "warning"
    assert failed["message"] == (f"configuration deployment {deploy['operationId']} failed on "
                                 "cvp-cs-02.example.com")
    assert canonical(run(mapper, payloads["config_deployed"])) == {}  # partial_success


def test_device_status(payloads: dict[str, dict[str, Any]]) -> None:
    doc = {**payloads["device_status_changed"], "previousStatus": "online",
           "currentStatus": "offline"}
    events = run(Mapper("c"), doc)
    assert events[1].type == "device.status_changed"
    assert events[1].subject == doc["deviceId"]
    assert events[1].data == {"deviceId": doc["deviceId"], "status": "down",
                              "previousStatus": "up", "nativeStatus": "offline",
                              "deviceType": doc["deviceType"],
                              "nativeType": "cvp.system.device_status_changed"}


@pytest.mark.parametrize(
    ("previous", "current", "status", "before"),
    [
        ("offline", "online", "up", "down"),
        ("online", "maintenance", "down", "up"),  # serves no calls, planned or not
        ("online", "error", "down", "up"),
        ("maintenance", "online", "up", "down"),
    ],
)
def test_device_statuses_in_the_canonical_vocabulary(
    payloads: dict[str, dict[str, Any]], previous: str, current: str, status: str, before: str,
) -> None:
    doc = {**payloads["device_status_changed"], "previousStatus": previous,
           "currentStatus": current}
    data = canonical(run(Mapper("c"), doc))["device.status_changed"]
    assert (data["status"], data["previousStatus"], data["nativeStatus"]) == (
        status, before, current)


def test_cvp_and_cucm_say_the_same_status_for_the_same_meaning(
    payloads: dict[str, dict[str, Any]],
) -> None:
    """One rule (``status == "down"``) serves both vendors: the same canonical values."""
    cucm_mapping = pytest.importorskip("ccbus_cucm.mapping")
    cucm_protocol = pytest.importorskip("ccbus_cucm.protocol")

    def cvp(current: str) -> str:
        doc = {**payloads["device_status_changed"], "currentStatus": current,
               "previousStatus": "online" if current != "online" else "offline"}
        status: str = canonical(run(Mapper("c"), doc))["device.status_changed"]["status"]
        return status

    def cucm(body: str) -> str:
        events = cucm_mapping.to_events(cucm_protocol.parse_event(body), source="c",
                                        message_id="ID:1", received=RECEIVED, raw=body)
        [status] = [e.data["status"] for e in events if e.type == "device.status_changed"]
        return str(status)

    assert cvp("online") == cucm("System#IN_SERVICE") == cucm("1001#Terminal#CiscoTermInServiceEv")
    assert cvp("offline") == cucm("System#OUT_OF_SERVICE") == cucm(
        "1001#Terminal#CiscoTermOutServiceEv")
    vocabulary = {"up", "down", "degraded", "unknown"}
    assert {cvp(s) for s in ("online", "offline", "maintenance", "error")} <= vocabulary
    status_field = {f.name: f for f in CANONICAL_EVENTS["device.status_changed"].fields}
    assert "nativeStatus" in status_field
    assert all(value in status_field["status"].description for value in vocabulary)


def test_no_canonical_for_application_invoked(payloads: dict[str, dict[str, Any]]) -> None:
    events = run(Mapper("c"), payloads["calls_application_invoked"])
    assert [e.type for e in events] == ["cvp.call.application_invoked"]


def test_canonical_events_carry_only_documented_fields(
    payloads: dict[str, dict[str, Any]],
) -> None:
    mapper = Mapper("c")
    for n, doc in enumerate(payloads.values()):
        for event in run(mapper, doc, n)[1:]:
            spec = CANONICAL_EVENTS[event.type]
            known = {f.name for f in spec.fields} | {"nativeType"}
            assert set(event.data) <= known, (event.type, set(event.data) - known)
            for field in spec.fields:
                if field.required:
                    assert event.data.get(field.name), (event.type, field.name)
            assert event.subject == event.data[spec.key]


def test_the_call_table_is_bounded() -> None:
    mapper = Mapper("c", remember_calls=3)
    for n in range(10):
        run(mapper, {"eventType": "call.queued", "timestamp": "2026-11-22T09:00:00Z",
                     "callGuid": f"Q{n}", "skillGroup": "S"}, n)
    assert list(mapper.calls) == ["Q7", "Q8", "Q9"]
