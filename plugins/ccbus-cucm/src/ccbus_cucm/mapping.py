"""Connector events as ccbus events: the native ``cucm.<Kind>`` and the canonical ones.

Native events keep the vendor's field names (``data`` is the JSON pattern's
object, or the default pattern's fields under the same names plus ``raw``).
Their id is the JMS message id, so a message the broker redelivers (after a
crash before its ack) is deduplicated by the bus; canonical events derive
their ids from it.

Canonical mapping (documented in ``docs/plugins/cucm.md``):

=====================  ===============================  ==========================
native                 state                            canonical
=====================  ===============================  ==========================
``cucm.AgentState``    any                              ``agent.state_changed``
``cucm.InboundCall``   ALERTING, RINGING, OFFERED        ``call.started`` (inbound)
``cucm.InboundCall``   ABANDONED                        ``call.abandoned``
``cucm.InboundCall``   DROPPED, DISCONNECTED            ``call.ended``
``cucm.DialogState``   INITIATING, INITIATED, DIALING   ``call.started`` (outbound)
``cucm.DialogState``   TRANSFERRED                      ``call.transferred``
``cucm.DialogState``   DROPPED, DISCONNECTED, FAILED    ``call.ended``
``cucm.System``        IN_SERVICE / OUT_OF_SERVICE      ``device.status_changed``
                                                        (up / down) on a change;
                                                        ``system.alert`` when it
                                                        goes out and when it is back
``cucm.Terminal``      CiscoTermIn/OutServiceEv         ``device.status_changed``
                                                        (up / down) on a change
=====================  ===============================  ==========================

The connector answers every Hello, keepalives included, with a System event,
so :class:`DeviceStatuses` remembers what was last reported per device and
``device.status_changed`` is raised only when the status changes: an outage
is one ``system.alert`` (major) when it begins and one (info) when it ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ccbus import Event, parse_timestamp

from .protocol import CucmMessage

__all__ = ["AGENT_STATES", "CONNECTOR", "DEVICE_STATUSES", "DeviceStatuses", "to_events"]

#: The connector's agent states -> canonical ``agent.state_changed`` states.
AGENT_STATES = {
    "READY": "available",
    "AVAILABLE": "available",
    "IDLE": "available",
    "NOT_READY": "not_ready",
    "TALKING": "busy",
    "BUSY": "busy",
    "ACTIVE": "busy",
    "HOLD": "busy",
    "HELD": "busy",
    "RESERVED": "busy",
    "ALERTING": "busy",
    "WORK": "after_call_work",
    "WORK_READY": "after_call_work",
    "WRAP_UP": "after_call_work",
    "LOGIN": "logged_in",
    "LOGGED_IN": "logged_in",
    "LOGOUT": "logged_out",
    "LOGGED_OUT": "logged_out",
}

#: The connector's System statuses and the Terminal events -> ``device.status_changed``
#: status (upper case); anything else is ``unknown``.
DEVICE_STATUSES = {
    "IN_SERVICE": "up",
    "OUT_OF_SERVICE": "down",
    "CISCOTERMINSERVICEEV": "up",
    "CISCOTERMOUTSERVICEEV": "down",
}
#: The ``deviceId`` (and alert ``component``) of the connector itself.
CONNECTOR = "cucm-connector"


class DeviceStatuses:
    """The status last reported per device, so a repeated one raises nothing.

    Kept by the source for as long as it lives (across broker reconnects and
    restarts of its ``run()``): a session that is re-established finds the
    connector as it was, and says nothing new.  One entry per device the
    connector reports (itself and the phones), so it stays small.
    """

    def __init__(self) -> None:
        self._status: dict[str, str] = {}

    def get(self, device: str) -> str | None:
        """The status last reported for ``device``; None before the first."""
        return self._status.get(device)

    def record(self, events: list[Event]) -> None:
        """Remember what ``events`` reported; called once they were emitted, so an
        event the bus did not take is raised again when the connector repeats it."""
        for event in events:
            if event.type == "device.status_changed":
                self._status[event.data["deviceId"]] = event.data["status"]


_RINGING = {"ALERTING", "RINGING", "OFFERED", "NEW"}
_DIALING = {"INITIATING", "INITIATED", "DIALING"}
_ENDED = {"DROPPED", "DISCONNECTED", "FAILED"}


def to_events(
    message: CucmMessage, *, source: str, message_id: str, received: datetime, raw: str,
    devices: DeviceStatuses | None = None,
) -> list[Event]:
    """The native event for ``message`` and the canonical events it implies.

    ``devices`` holds the statuses reported so far (none given: nothing known yet);
    a device status it already holds raises no canonical event.
    """
    data = dict(message.fields)
    if message.pattern == "default":
        data["raw"] = raw
    moment = _moment(message, received)
    subject = message.agent or message.connection_id
    native = Event(
        type=f"cucm.{message.kind}",
        source=source,
        id=message_id,
        subject=subject,
        data=data,
        time=moment,
        vendor="cucm",
        receivedat=received,
    )
    events = [native]
    for kind, fields in _canonical(message, devices or DeviceStatuses()):
        fields["nativeType"] = native.type
        key = next(iter(fields.values()))
        events.append(
            Event(
                type=kind,
                source=source,
                id=f"{message_id}:{kind}",
                subject=str(key),
                data=fields,
                time=moment,
                vendor="cucm",
                receivedat=received,
            )
        )
    return events


def _moment(message: CucmMessage, received: datetime) -> datetime:
    for name in ("stateChangeTimeString", "startTime"):
        value = message.fields.get(name)
        if value not in (None, ""):
            parsed = parse_timestamp(value)
            if parsed is not None:
                return parsed
    return received


def _canonical(message: CucmMessage, devices: DeviceStatuses
               ) -> list[tuple[str, dict[str, Any]]]:
    state = (message.state or "").upper()
    agent = message.agent
    call = message.connection_id
    others = message.participants
    if message.kind == "AgentState" and agent:
        return [("agent.state_changed", {
            "agentId": agent, "state": AGENT_STATES.get(state, "unknown"),
            "nativeState": message.state or "",
        })]
    if message.kind == "InboundCall" and call:
        caller = others[0] if others else None
        if state in _RINGING:
            return [("call.started", _drop_none({
                "callId": call, "caller": caller, "called": agent, "channel": "voice",
                "direction": "inbound",
            }))]
        if state == "ABANDONED":
            return [("call.abandoned", _drop_none({"callId": call, "caller": caller}))]
        if state in _ENDED:
            return [("call.ended", _drop_none({
                "callId": call, "caller": caller, "called": agent, "agent": agent,
                "result": "failed" if state == "FAILED" else "completed",
            }))]
    if message.kind == "DialogState" and call:
        other = others[0] if others else None
        if state in _DIALING:
            return [("call.started", _drop_none({
                "callId": call, "caller": agent, "called": other, "channel": "voice",
                "direction": "outbound",
            }))]
        if state == "TRANSFERRED":
            return [("call.transferred", _drop_none({
                "callId": call, "target": other, "agent": agent,
            }))]
        if state in _ENDED:
            return [("call.ended", _drop_none({
                "callId": call, "agent": agent,
                "result": "failed" if state == "FAILED" else "completed",
            }))]
    if message.kind == "System" and state in ("IN_SERVICE", "OUT_OF_SERVICE"):
        return _connector(state, devices.get(CONNECTOR))
    if message.kind == "Terminal" and state:
        device = agent or "terminal"
        changed = _device_change(device, message.state or state, "phone", devices.get(device))
        return [changed] if changed else []
    return []


def _device_change(device: str, native: str, kind: str, previous: str | None
                   ) -> tuple[str, dict[str, Any]] | None:
    """``device.status_changed`` for ``native``, or None when the status is ``previous``."""
    status = DEVICE_STATUSES.get(native.upper(), "unknown")
    if status == previous:
        return None
    return ("device.status_changed", _drop_none({
        "deviceId": device, "status": status, "previousStatus": previous,
        "nativeStatus": native, "deviceType": kind,
    }))


def _connector(native: str, previous: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The connector's status on a change, with an alert when an outage begins or ends."""
    changed = _device_change(CONNECTOR, native, "connector", previous)
    if changed is None:
        return []
    events = [changed]
    if changed[1]["status"] == "down":
        events.append(("system.alert", {
            "component": CONNECTOR, "severity": "major",
            "message": "CUCM Connector is OUT_OF_SERVICE: it is not connected to CUCM "
                       "and does not process commands",
        }))
    elif previous == "down":
        events.append(("system.alert", {
            "component": CONNECTOR, "severity": "info",
            "message": "CUCM Connector is back IN_SERVICE: the OUT_OF_SERVICE outage "
                       "is over and commands are processed again",
        }))
    return events


def _drop_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
