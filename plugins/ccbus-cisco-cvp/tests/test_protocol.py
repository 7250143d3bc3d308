"""The document's schema checks: every channel, every kind of problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ccbus_cisco_cvp.options import CvpOptions, Topics
from ccbus_cisco_cvp.protocol import CHANNELS, by_event_type, validate

#: A copy of the vendor document the plugin is written to.
SPEC = Path(__file__).parent / "fixtures" / "cisco-cvp-call-events-asyncapi.txt"


def test_ten_channels_each_with_its_topic_option() -> None:
    assert len(CHANNELS) == 10
    assert {c.key for c in CHANNELS} == set(Topics.model_fields)
    assert {c.name for c in CHANNELS} == {
        getattr(Topics(), key) for key in Topics.model_fields
    }


def test_channels_and_messages_are_the_documents() -> None:
    text = SPEC.read_text()
    for channel in CHANNELS:
        assert f"\n{channel.name}:\n" in text
        assert f"const: {channel.event_type}\n" in text
        assert f"\n{channel.message}:\n" in text


def test_every_valid_payload_passes(payloads: dict[str, dict[str, Any]]) -> None:
    assert set(payloads) == {c.key for c in CHANNELS}
    for key, payload in payloads.items():
        channel = next(c for c in CHANNELS if c.key == key)
        own, problems = validate(payload, channel)
        assert problems == [], (key, problems)
        assert own is channel


@pytest.mark.parametrize(
    ("key", "change", "reason", "words"),
    [
        ("calls_started", {"callingNumber": None}, "missing_field",
         "CallStartedEvent: missing required field 'callingNumber'"),
        ("calls_ended", {"callResult": "hung_up"}, "bad_enum",
         "CallEndedEvent.callResult 'hung_up' is not one of completed, abandoned"),
        ("calls_ended", {"callDuration": "12"}, "wrong_type",
         "CallEndedEvent.callDuration must be an integer, not a string ('12')"),
        ("calls_ended", {"callDuration": True}, "wrong_type", "not a boolean"),
        ("calls_queued", {"timestamp": "yesterday"}, "bad_timestamp",
         "CallQueuedEvent.timestamp 'yesterday' is not an RFC 3339 date-time"),
        ("threshold_exceeded", {"currentValue": "high"}, "wrong_type", "must be a number"),
        ("threshold_exceeded", {"severity": "info"}, "bad_enum", "not one of warning, critical"),
        ("device_status_changed", {"deviceType": "Router"}, "bad_enum", "deviceType 'Router'"),
        ("service_state_changed", {"currentState": 3}, "wrong_type", "currentState must be a str"),
        ("config_deployed", {"targetDevices": [{"status": "meh"}]}, "bad_enum",
         "ConfigDeployedEvent.targetDevices[0].status 'meh'"),
        ("config_deployed", {"targetDevices": {"a": 1}}, "wrong_type", "must be an array"),
        ("calls_application_invoked", {"applicationName": None}, "missing_field",
         "'applicationName'"),
        ("calls_error", {"errorCategory": "oops"}, "bad_enum", "errorCategory 'oops'"),
        ("calls_transferred", {"transferType": "warm"}, "bad_enum", "transferType 'warm'"),
    ],
)
def test_problems_name_the_message_field_and_reason(
    payloads: dict[str, dict[str, Any]], key: str, change: dict[str, Any], reason: str,
    words: str,
) -> None:
    payload = copy.deepcopy(payloads[key])
    for name, value in change.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    channel = next(c for c in CHANNELS if c.key == key)
    _, problems = validate(payload, channel)
    assert [p.reason for p in problems] == [reason]
    assert words in problems[0].detail


def test_type_topic_and_shape_problems(payloads: dict[str, dict[str, Any]]) -> None:
    started = next(c for c in CHANNELS if c.key == "calls_started")
    assert validate([1], started)[1][0].reason == "not_an_object"
    assert validate({"timestamp": "x"}, started)[1][0].reason == "missing_field"
    assert validate({"eventType": 5}, started)[1][0].reason == "wrong_type"
    unknown = validate({"eventType": "call.parked"}, started)[1][0]
    assert unknown.reason == "unknown_event_type" and "call.parked" in unknown.detail
    wrong = validate(payloads["calls_ended"], started)[1][0]
    assert wrong.reason == "wrong_channel"
    assert "belongs on 'cvp/calls/ended', not on 'cvp/calls/started'" in wrong.detail
    # without a channel (strict_channel off), the payload's own type decides
    own, problems = validate(payloads["calls_ended"], None)
    assert problems == [] and own is by_event_type("call.ended")


def test_extra_fields_are_kept_not_rejected(payloads: dict[str, dict[str, Any]]) -> None:
    payload = dict(payloads["calls_started"], customerTier="gold")
    assert validate(payload, by_event_type("call.started"))[1] == []


def test_options_need_a_client_id_for_durable_subscriptions() -> None:
    with pytest.raises(ValueError, match="client_id"):
        CvpOptions.model_validate({"broker": {"url": "stomp://h:1"}})
    assert CvpOptions.model_validate({"broker": {"url": "stomp://h:1"}, "durable": False})
    with pytest.raises(ValueError, match="set 'broker'"):
        CvpOptions.model_validate({})
    with pytest.raises(ValueError, match="expected host:port"):
        CvpOptions.model_validate({"syslog": {"udp": "514"}})
    off = {key: None for key in Topics.model_fields}
    with pytest.raises(ValueError, match="every topic is null"):
        CvpOptions.model_validate({"broker": {"url": "stomp://h:1"}, "durable": False,
                                   "topics": off})
