"""The CVP Call Events AsyncAPI document (12.6.0) as data: channels, messages and checks.

Shared by the source (which validates what arrives), the simulator (which
publishes it) and the tests.  Every message's payload schema is transcribed
field by field from the document: type, enum, const and the required list
(``tests/test_protocol.py`` reads the document and compares, so a field
required here and not there, or the reverse, fails a test).  Checking is no
stricter than the document: it does not forbid extra properties, so unknown
fields are kept; an optional field sent as ``null`` is taken as absent (vendor
data is messy, and null says "no value"); an ``integer`` may arrive as
``12.0``, as JSON Schema allows.

``timestamp`` is ``format: date-time``, i.e. RFC 3339: a zone (``Z`` or
``±hh:mm``) is required, because a time without one is ambiguous by the
sender's UTC offset and rules (windows, ``for:``) would act on a wrong time.
The one liberty taken is RFC 3339's own note: a space may stand for the ``T``.

:func:`validate` returns :class:`Problem` values, each with a reason that is
also a counter label (``missing_field``, ``wrong_type``, ``bad_enum``,
``bad_timestamp``, ``unknown_event_type``, ``wrong_channel``,
``not_an_object``), so an admin can tell a broken publisher from a
misconfigured topic at a glance.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CHANNELS", "Channel", "Field", "Problem", "by_event_type", "validate"]


@dataclass(frozen=True, slots=True)
class Field:
    """One payload property: ``string``, ``integer``, ``number``, ``date-time`` or ``targets``."""

    kind: str = "string"
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Channel:
    """One AsyncAPI channel: its option key, its name (the default topic) and its message."""

    key: str
    name: str
    event_type: str
    message: str
    fields: dict[str, Field]
    required: tuple[str, ...]
    #: Fields tried in order for the event's subject (the correlation key).
    subject: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    detail: str


_S = Field()
_INT = Field("integer")
_NUM = Field("number")
_TS = Field("date-time")

_DEVICE_STATUS = ("online", "offline", "maintenance", "error")
_SERVICE_STATE = ("running", "stopped", "error")

CHANNELS: tuple[Channel, ...] = (
    Channel(
        "calls_started", "cvp/calls/started", "call.started", "CallStartedEvent",
        {"eventType": _S, "timestamp": _TS, "callGuid": _S, "callingNumber": _S,
         "calledNumber": _S, "callServerHostname": _S, "sipCallId": _S,
         "ingressGateway": _S, "matchedPattern": _S},
        ("eventType", "timestamp", "callGuid", "callingNumber", "calledNumber"),
        ("callGuid",),
    ),
    Channel(
        "calls_ended", "cvp/calls/ended", "call.ended", "CallEndedEvent",
        {"eventType": _S, "timestamp": _TS, "callGuid": _S, "callingNumber": _S,
         "calledNumber": _S,
         "callResult": Field("string", ("completed", "abandoned", "transferred", "error")),
         "callDuration": _INT, "selfServiceDuration": _INT, "queueDuration": _INT,
         "applicationName": _S, "terminationReason": _S, "sipResponseCode": _INT},
        ("eventType", "timestamp", "callGuid", "callResult"),
        ("callGuid",),
    ),
    Channel(
        "calls_transferred", "cvp/calls/transferred", "call.transferred",
        "CallTransferredEvent",
        {"eventType": _S, "timestamp": _TS, "callGuid": _S, "callingNumber": _S,
         "calledNumber": _S, "transferDestination": _S,
         "transferType": Field("string", ("blind", "consultation")),
         "icmLabel": _S, "skillGroup": _S},
        ("eventType", "timestamp", "callGuid", "transferDestination"),
        ("callGuid",),
    ),
    Channel(
        "calls_queued", "cvp/calls/queued", "call.queued", "CallQueuedEvent",
        {"eventType": _S, "timestamp": _TS, "callGuid": _S, "callingNumber": _S,
         "calledNumber": _S, "skillGroup": _S, "estimatedWaitTime": _INT,
         "queuePosition": _INT, "queueApplication": _S},
        ("eventType", "timestamp", "callGuid"),
        ("callGuid",),
    ),
    Channel(
        "calls_application_invoked", "cvp/calls/application-invoked",
        "call.application_invoked", "ApplicationInvokedEvent",
        {"eventType": _S, "timestamp": _TS, "callGuid": _S, "applicationName": _S,
         "vxmlServerHostname": _S, "sessionId": _S},
        ("eventType", "timestamp", "callGuid", "applicationName"),
        ("callGuid",),
    ),
    Channel(
        "calls_error", "cvp/calls/error", "call.error", "CallErrorEvent",
        {"eventType": _S, "timestamp": _TS, "callGuid": _S, "errorCode": _S,
         "errorMessage": _S,
         "errorCategory": Field("string", ("sip_failure", "vxml_error", "icm_communication",
                                           "application_error", "timeout", "system_error")),
         "serverHostname": _S, "sipResponseCode": _INT},
        ("eventType", "timestamp", "errorCode", "errorCategory"),
        ("callGuid", "serverHostname"),
    ),
    Channel(
        "device_status_changed", "cvp/system/device-status-changed",
        "system.device_status_changed", "DeviceStatusChangedEvent",
        {"eventType": _S, "timestamp": _TS, "deviceId": _S, "hostname": _S,
         "deviceType": Field("string", ("CallServer", "VXMLServer", "ReportingServer",
                                        "MediaServer")),
         "previousStatus": Field("string", _DEVICE_STATUS),
         "currentStatus": Field("string", _DEVICE_STATUS), "reason": _S},
        ("eventType", "timestamp", "deviceId", "previousStatus", "currentStatus"),
        ("deviceId",),
    ),
    Channel(
        "threshold_exceeded", "cvp/system/threshold-exceeded", "system.threshold_exceeded",
        "ThresholdExceededEvent",
        {"eventType": _S, "timestamp": _TS, "deviceId": _S, "hostname": _S,
         "metric": Field("string", ("concurrent_calls", "cpu_usage", "memory_usage",
                                    "disk_usage", "call_error_rate", "sip_response_time")),
         "thresholdValue": _NUM, "currentValue": _NUM,
         "severity": Field("string", ("warning", "critical"))},
        ("eventType", "timestamp", "metric", "thresholdValue", "currentValue", "severity"),
        ("hostname", "deviceId"),
    ),
    Channel(
        "service_state_changed", "cvp/system/service-state-changed",
        "system.service_state_changed", "ServiceStateChangedEvent",
        {"eventType": _S, "timestamp": _TS, "deviceId": _S, "hostname": _S,
         "serviceName": _S, "previousState": Field("string", _SERVICE_STATE),
         "currentState": Field("string", _SERVICE_STATE), "message": _S},
        ("eventType", "timestamp", "serviceName", "previousState", "currentState"),
        ("hostname", "deviceId", "serviceName"),
    ),
    Channel(
        "config_deployed", "cvp/deployment/config-deployed", "deployment.config_deployed",
        "ConfigDeployedEvent",
        {"eventType": _S, "timestamp": _TS, "operationId": _S,
         "status": Field("string", ("success", "partial_success", "failed")),
         "targetDevices": Field("targets"), "initiatedBy": _S},
        ("eventType", "timestamp", "operationId", "status"),
        ("operationId",),
    ),
)

_BY_TYPE = {c.event_type: c for c in CHANNELS}
_TARGET_FIELDS = {"deviceId": _S, "hostname": _S,
                  "status": Field("string", ("success", "failed")), "message": _S}
#: RFC 3339 date-time (the document's ``format: date-time``): fields in range, any number
#: of fraction digits, and a zone, ``Z`` or ``±hh:mm`` (not optional: see the module doc).
_DATE_TIME = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
    r"(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


def by_event_type(event_type: str) -> Channel | None:
    return _BY_TYPE.get(event_type)


def validate(doc: Any, channel: Channel | None = None) -> tuple[Channel | None, list[Problem]]:
    """Check a payload against its message schema; the channel it belongs to and the problems.

    ``channel`` is the channel the payload arrived on (None for an unknown
    topic): a payload whose ``eventType`` belongs to another channel is a
    ``wrong_channel`` problem, since rules rely on the type matching the topic.
    """
    if not isinstance(doc, dict):
        return channel, [Problem("not_an_object",
                                 f"payload is a JSON {type(doc).__name__}, not an object")]
    event_type = doc.get("eventType")
    if not isinstance(event_type, str):
        problem = ("missing_field", "missing required field 'eventType'") if event_type is None \
            else ("wrong_type", f"'eventType' must be a string, not {_kind(event_type)}")
        return channel, [Problem(*problem)]
    own = _BY_TYPE.get(event_type)
    if own is None:
        return channel, [Problem("unknown_event_type",
                                 f"unknown eventType {event_type!r} (not in the CVP document)")]
    if channel is not None and own is not channel:
        return channel, [Problem(
            "wrong_channel",
            f"eventType {event_type!r} belongs on {own.name!r}, not on {channel.name!r}",
        )]
    problems = [Problem("missing_field", f"{own.message}: missing required field {name!r}")
                for name in own.required if doc.get(name) is None]
    for name, fine, spec in _CHECKS[event_type]:
        value = doc.get(name)
        if value is None or fine(value):
            continue
        problems.extend(_check(f"{own.message}.{name}", value, spec))
    return own, problems


def _fine_check(spec: Field) -> Callable[[Any], bool]:
    """The common case, cheaply: a test that passes a valid value (``_check`` then
    explains an invalid one).

    Every event's every field passes through one of these, so each is made once per
    field, builds nothing, and branches on nothing but the value; ``type(x) is`` also
    keeps booleans out of integers and numbers, as JSON Schema does.
    """
    kind = spec.kind
    if kind == "string" and spec.enum:
        allowed = frozenset(spec.enum)
        return lambda value: type(value) is str and value in allowed
    if kind == "string":
        return lambda value: type(value) is str
    if kind == "integer":
        return lambda value: type(value) is int or (type(value) is float and value.is_integer())
    if kind == "number":
        return lambda value: type(value) is int or type(value) is float
    if kind == "date-time":
        match = _DATE_TIME.fullmatch
        return lambda value: type(value) is str and match(value) is not None
    return lambda value: False  # arrays: the full check


#: Per event type: ``(field, its quick test, its spec)`` for each field of the message.
_CHECKS = {
    c.event_type: tuple((name, _fine_check(spec), spec) for name, spec in c.fields.items())
    for c in CHANNELS
}


def _check(where: str, value: Any, spec: Field) -> list[Problem]:
    kind = spec.kind
    if kind in ("string", "date-time"):
        if not isinstance(value, str):
            return [Problem("wrong_type", f"{where} must be a string, not {_kind(value)}")]
        if kind == "date-time" and not _DATE_TIME.fullmatch(value):
            return [Problem("bad_timestamp", f"{where} {value!r} is not an RFC 3339 date-time")]
        if spec.enum and value not in spec.enum:
            return [Problem("bad_enum",
                            f"{where} {value!r} is not one of {', '.join(spec.enum)}")]
        return []
    if kind == "integer":
        whole = isinstance(value, float) and value.is_integer()
        if isinstance(value, bool) or not (isinstance(value, int) or whole):
            return [Problem("wrong_type", f"{where} must be an integer, not {_kind(value)}")]
        return []
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [Problem("wrong_type", f"{where} must be a number, not {_kind(value)}")]
        return []
    if kind == "targets":
        if not isinstance(value, list):
            return [Problem("wrong_type", f"{where} must be an array, not {_kind(value)}")]
        problems: list[Problem] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                problems.append(Problem("wrong_type",
                                        f"{where}[{i}] must be an object, not {_kind(item)}"))
                continue
            for name, field_spec in _TARGET_FIELDS.items():
                if item.get(name) is not None:
                    problems.extend(_check(f"{where}[{i}].{name}", item[name], field_spec))
        return problems
    raise AssertionError(kind)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
