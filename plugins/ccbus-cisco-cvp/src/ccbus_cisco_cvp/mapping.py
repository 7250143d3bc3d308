"""From a validated CVP payload to ccbus events: one native event, plus canonical ones.

Native: ``cvp.<eventType>`` (``cvp.call.started``, ``cvp.system.threshold_exceeded``)
with ``id`` = the JMS message id (stable across a broker's redelivery, so the
core's duplicate window drops a message delivered twice), ``subject`` = the
call GUID (device, host or operation id for system events), ``time`` = the
payload's ``timestamp``, ``data`` = the payload as sent, and the extension
``topic`` = the topic it arrived on.

Canonical (the plugin's doc page has the table and its limits):

=============================  ==========================================
``cvp.call.started``           ``call.started``
``cvp.call.queued``            ``call.queued``
``cvp.call.transferred``       ``call.transferred``
``cvp.call.ended``             ``call.ended``; also ``call.abandoned`` when
                               ``callResult`` is ``abandoned``
``cvp.call.error``             ``system.alert`` (severity by category)
``cvp.system.threshold_exceeded``  ``system.alert`` (the payload's severity)
``cvp.system.service_state_changed``  ``system.alert`` when it enters ``error``
``cvp.deployment.config_deployed``    ``system.alert`` when ``failed``
``cvp.system.device_status_changed``  ``device.status_changed`` (status in
                               the canonical vocabulary: :data:`DEVICE_STATUSES`)
=============================  ==========================================

``call.ended`` carries no skill group, so the mapper remembers, per call
GUID, the caller and the queue from ``call.started``/``call.queued`` to fill
in ``call.abandoned`` (a bounded LRU table: memory stays flat).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ccbus import Event, parse_timestamp

from .protocol import Channel

__all__ = ["CALL_ERROR_SEVERITY", "DEVICE_STATUSES", "Mapper", "VENDOR"]

VENDOR = "cvp"

#: CallErrorEvent.errorCategory -> system.alert severity.
CALL_ERROR_SEVERITY = {
    "system_error": "major",
    "icm_communication": "major",
    "sip_failure": "minor",
    "vxml_error": "minor",
    "application_error": "minor",
    "timeout": "minor",
}

#: DeviceStatusChangedEvent's statuses -> the canonical ``device.status_changed`` status,
#: which says whether the device serves calls: a device in maintenance or in error does
#: not (``nativeStatus`` keeps CVP's word, so a rule can tell planned from not).
DEVICE_STATUSES = {"online": "up", "offline": "down", "maintenance": "down", "error": "down"}

#: CallEndedEvent.callResult -> call.ended result.
CALL_RESULTS = {"completed": "completed", "abandoned": "abandoned",
                "transferred": "transferred", "error": "failed"}

#: The key field of each canonical type (its value is the event's subject).
_KEYS = {"call.started": "callId", "call.queued": "callId", "call.transferred": "callId",
         "call.ended": "callId", "call.abandoned": "callId", "system.alert": "component",
         "device.status_changed": "deviceId"}

Canonical = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Call:
    caller: str | None = None
    called: str | None = None
    queue: str | None = None


class Mapper:
    def __init__(self, source: str, *, remember_calls: int = 10_000) -> None:
        self.source = source
        self.remember_calls = remember_calls
        self.calls: OrderedDict[str, Call] = OrderedDict()
        self.canonical: dict[str, Callable[[dict[str, Any]], list[Canonical]]] = {
            "call.started": self._started,
            "call.queued": self._queued,
            "call.transferred": self._transferred,
            "call.ended": self._ended,
            "call.error": self._error,
            "system.threshold_exceeded": self._threshold,
            "system.device_status_changed": self._device,
            "system.service_state_changed": self._service,
            "deployment.config_deployed": self._deployed,
        }

    def map(
        self,
        doc: dict[str, Any],
        channel: Channel,
        *,
        event_id: str,
        topic: str | None,
        received: datetime,
    ) -> list[Event]:
        """The native event, then its canonical events, for one valid payload."""
        event_type = channel.event_type
        moment = parse_timestamp(doc.get("timestamp")) or received
        subject = None
        for name in channel.subject:
            subject = _text(doc.get(name))
            if subject:
                break
        native = Event(
            type=f"{VENDOR}.{event_type}",
            source=self.source,
            id=event_id,
            subject=subject,
            time=moment,
            vendor=VENDOR,
            receivedat=received,
            data=doc,
            extensions={"topic": topic} if topic else {},
        )
        events = [native]
        canonical = self.canonical.get(event_type)
        if canonical is not None:
            for type_, fields in canonical(doc):
                fields = {k: v for k, v in fields.items() if v is not None}
                fields["nativeType"] = native.type
                events.append(
                    Event(
                        type=type_,
                        source=self.source,
                        id=f"{event_id}:{type_}",
                        subject=_text(fields.get(_KEYS[type_])),
                        time=moment,
                        vendor=VENDOR,
                        receivedat=received,
                        data=fields,
                    )
                )
        return events

    # -- calls ------------------------------------------------------------------------

    def _call(self, guid: str) -> Call:
        call = self.calls.get(guid)
        if call is None:
            call = self.calls[guid] = Call()
            if len(self.calls) > self.remember_calls:
                self.calls.popitem(last=False)
        else:
            self.calls.move_to_end(guid)
        return call

    def _started(self, doc: dict[str, Any]) -> list[Canonical]:
        call = self._call(doc["callGuid"])
        call.caller = _text(doc.get("callingNumber"))
        call.called = _text(doc.get("calledNumber"))
        return [("call.started", {
            "callId": doc["callGuid"], "caller": call.caller, "called": call.called,
            "channel": "voice", "direction": "inbound",
        })]

    def _queued(self, doc: dict[str, Any]) -> list[Canonical]:
        call = self._call(doc["callGuid"])
        call.queue = _text(doc.get("skillGroup")) or call.queue
        call.caller = _text(doc.get("callingNumber")) or call.caller
        call.called = _text(doc.get("calledNumber")) or call.called
        return [("call.queued", {
            "callId": doc["callGuid"], "queue": call.queue, "caller": call.caller,
            "position": doc.get("queuePosition"),
        })]

    def _transferred(self, doc: dict[str, Any]) -> list[Canonical]:
        call = self._call(doc["callGuid"])
        kind = doc.get("transferType")
        return [("call.transferred", {
            "callId": doc["callGuid"], "target": _text(doc.get("transferDestination")),
            "queue": _text(doc.get("skillGroup")) or call.queue,
            "transferType": "consult" if kind == "consultation" else kind,
        })]

    def _ended(self, doc: dict[str, Any]) -> list[Canonical]:
        guid = doc["callGuid"]
        call = self.calls.pop(guid, None) or Call()
        caller = _text(doc.get("callingNumber")) or call.caller
        result = doc["callResult"]
        duration = doc.get("callDuration")
        out: list[Canonical] = [("call.ended", {
            "callId": guid, "caller": caller,
            "called": _text(doc.get("calledNumber")) or call.called,
            "durationSeconds": float(duration) if duration is not None else None,
            "result": CALL_RESULTS.get(result, result),
        })]
        if result == "abandoned":
            wait = doc.get("queueDuration")
            out.append(("call.abandoned", {
                "callId": guid, "caller": caller, "queue": call.queue,
                "waitSeconds": float(wait) if wait is not None else None,
            }))
        return out

    # -- system -----------------------------------------------------------------------

    def _error(self, doc: dict[str, Any]) -> list[Canonical]:
        code = doc["errorCode"]
        text = _text(doc.get("errorMessage"))
        call = _text(doc.get("callGuid"))
        message = f"{code}: {text}" if text else f"CVP error {code}"
        if call:
            message += f" (call {call})"
        return [("system.alert", {
            "component": _text(doc.get("serverHostname")) or "cvp",
            "severity": CALL_ERROR_SEVERITY.get(doc["errorCategory"], "minor"),
            "message": message,
        })]

    def _threshold(self, doc: dict[str, Any]) -> list[Canonical]:
        component = _text(doc.get("hostname")) or _text(doc.get("deviceId")) or "cvp"
        metric = doc["metric"]
        value, threshold = doc["currentValue"], doc["thresholdValue"]
        return [("system.alert", {
            "component": component, "severity": doc["severity"],
            "message": f"{metric} {value:g} exceeds the threshold {threshold:g} on {component}",
            "metric": metric, "value": float(value), "threshold": float(threshold),
        })]

    def _device(self, doc: dict[str, Any]) -> list[Canonical]:
        current = doc["currentStatus"]
        return [("device.status_changed", {
            "deviceId": doc["deviceId"], "status": _device_status(current),
            "previousStatus": _device_status(doc["previousStatus"]), "nativeStatus": current,
            "deviceType": _text(doc.get("deviceType")),
        })]

    def _service(self, doc: dict[str, Any]) -> list[Canonical]:
        if doc["currentState"] != "error":
            return []
        component = _text(doc.get("hostname")) or _text(doc.get("deviceId")) or "cvp"
        detail = _text(doc.get("message"))
        message = f"service {doc['serviceName']} on {component} is in error"
        return [("system.alert", {
            "component": component, "severity": "major",
            "message": f"{message}: {detail}" if detail else message,
        })]

    def _deployed(self, doc: dict[str, Any]) -> list[Canonical]:
        if doc["status"] != "failed":
            return []
        failed = [
            _text(t.get("hostname")) or _text(t.get("deviceId")) or "?"
            for t in doc.get("targetDevices") or []
            if isinstance(t, dict) and t.get("status") == "failed"
        ]
        message = f"configuration deployment {doc['operationId']} failed"
        if failed:
            message += f" on {', '.join(failed)}"
        return [("system.alert", {
            "component": "cvp-deployment", "severity": "warning", "message": message,
        })]


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _device_status(native: Any) -> str:
    return DEVICE_STATUSES.get(str(native).lower(), "unknown")
