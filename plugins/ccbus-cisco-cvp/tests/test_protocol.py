"""The document's schema checks: every channel, every kind of problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ccbus_cisco_cvp.options import CvpOptions, Topics
from ccbus_cisco_cvp.protocol import _TARGET_FIELDS, CHANNELS, Channel, by_event_type, validate

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
        # the document's ConfigDeployedEvent lists status under required
        ("config_deployed", {"status": None}, "missing_field",
         "ConfigDeployedEvent: missing required field 'status'"),
        ("calls_ended", {"queueDuration": 12.5}, "wrong_type", "must be an integer"),
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


# -- the schema is the document's, no stricter ------------------------------------------


def document_messages() -> dict[str, tuple[list[tuple[str, str, tuple[str, ...]]], list[str]]]:
    """Each message of the document: its properties in order (nested ones included) as
    (name, kind, enum), and its payload's required list.

    The stored copy has lost its indentation, so nesting is not visible; the order is,
    and a property is a ``name:`` line followed by ``type:``.
    """
    lines = SPEC.read_text().split("\ncomponents:\nmessages:\n", 1)[1].splitlines()
    messages: dict[str, tuple[list[tuple[str, str, tuple[str, ...]]], list[str]]] = {}
    props: list[tuple[str, str, tuple[str, ...]]] = []
    required: list[str] = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following == f"name: {line.removesuffix(':')}":
            props, required = [], []
            messages[line.removesuffix(":")] = (props, required)
        elif line.endswith(":") and following.startswith("type: ") and line not in (
            "payload:", "items:"
        ):
            kind = following.removeprefix("type: ")
            rest = lines[i + 2:]
            if rest and rest[0] == "format: date-time":
                kind = "date-time"
            enum: list[str] = []
            if rest and rest[0] == "enum:":
                enum = [v.removeprefix("- ") for v in _items(rest[1:])]
            props.append((line.removesuffix(":"), "targets" if kind == "array" else kind,
                          tuple(enum)))
        elif line == "required:":
            required[:] = [v.removeprefix("- ") for v in _items(lines[i + 1:])]
    return messages


def _items(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if not line.startswith("- "):
            break
        out.append(line)
    return out


def ours(channel: Channel) -> list[tuple[str, str, tuple[str, ...]]]:
    """The plugin's transcription, flattened the same way (array items after the array)."""
    flat = []
    for name, spec in channel.fields.items():
        flat.append((name, spec.kind, spec.enum))
        if spec.kind == "targets":
            flat += [(n, s.kind, s.enum) for n, s in _TARGET_FIELDS.items()]
    return flat


def test_fields_types_enums_and_required_lists_are_the_documents() -> None:
    messages = document_messages()
    assert set(messages) == {c.message for c in CHANNELS}
    for channel in CHANNELS:
        props, required = messages[channel.message]
        assert ours(channel) == props, channel.message
        assert list(channel.required) == required, channel.message


def minimal(channel: Channel) -> dict[str, Any]:
    """A payload with only the fields the document requires, each a valid value."""
    samples = {"string": "x", "integer": 1, "number": 0.5,
               "date-time": "2026-11-22T09:00:00Z"}
    _, required = document_messages()[channel.message]
    doc: dict[str, Any] = {}
    for name in required:
        spec = channel.fields[name]
        doc[name] = spec.enum[0] if spec.enum else samples[spec.kind]
    doc["eventType"] = channel.event_type
    return doc


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.message)
def test_only_what_the_document_requires_is_required(channel: Channel) -> None:
    doc = minimal(channel)
    assert validate(doc, channel) == (channel, [])
    # optional fields sent as null count as absent
    nulls = {name: None for name in channel.fields if name not in doc}
    assert validate({**doc, **nulls}, channel) == (channel, [])
    # and each required one is needed
    for name in channel.required:
        missing = {k: v for k, v in doc.items() if k != name}
        reasons = [p.reason for p in validate(missing, channel)[1]]
        assert reasons == ["missing_field"], (name, reasons)


@pytest.mark.parametrize(
    "stamp",
    ["2026-11-22T09:00:00Z", "2026-11-22T09:00:00.1234567+01:00", "2026-11-22t09:00:00z",
     "2026-11-22 09:00:00-05:30", "2026-12-31T23:59:60Z", "2026-11-22T09:00:00.5+00:00"],
)
def test_rfc3339_timestamps_pass(stamp: str) -> None:
    channel = CHANNELS[0]
    assert validate(dict(minimal(channel), timestamp=stamp), channel)[1] == []


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-22T09:00:00",  # no zone: ambiguous by the sender's offset
        "2026-11-22T09:00:00.123",
        "2026-11-22T09:00:00+0100",  # RFC 3339 offsets have a colon
        "2026-11-22T09:00Z",  # seconds are not optional
        "2026-11-22",
        "2026-13-01T00:00:00Z",
        "2026-11-32T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T09:00:00Z\n",
        "２０２６-11-22T09:00:00Z",  # fullwidth digits
        "1793611234567",
    ],
)
def test_other_timestamps_are_bad_timestamp(stamp: str) -> None:
    channel = CHANNELS[0]
    problems = validate(dict(minimal(channel), timestamp=stamp), channel)[1]
    assert [p.reason for p in problems] == ["bad_timestamp"]
    assert "is not an RFC 3339 date-time" in problems[0].detail


def test_an_integer_may_arrive_as_a_whole_float(payloads: dict[str, dict[str, Any]]) -> None:
    ended = by_event_type("call.ended")
    doc = dict(payloads["calls_ended"], callDuration=312.0, sipResponseCode=200.0)
    assert validate(doc, ended)[1] == []
