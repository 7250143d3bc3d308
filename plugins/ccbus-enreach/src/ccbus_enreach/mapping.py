"""From one ``MessageReceived`` payload to ccbus events: the native one, plus canonical ones.

Native: ``enreach.<EventType>``, ``subject`` = the entity id (user, queue or
call list), ``id`` = the event's ``Id``, ``time`` = its ``Timestamp``, ``data``
= the event data exactly as the hub sent it (either spelling).

Canonical (docs/plugins/enreach.md has the table and its limits):

===============================  ==================================================
``UserCallInComing``             ``call.started`` (inbound, a direct call)
``UserCallInArrived``            ``call.started`` (inbound, a service call for the user)
``UserCallOutGoing``             ``call.started`` (outbound)
``UserCallInOverflow``           ``call.queued`` when it overflows into a queue
                                 (``TechQueueId`` set), else ``call.transferred``
``UserCallInUserOverflow``       ``call.transferred`` (``transferType`` overflow)
``UserCallInTransferConnected``  ``call.transferred`` (``transferType`` transfer)
``UserCallInDisconnected``       ``call.ended`` (inbound)
``UserCallOutDisconnected``      ``call.ended`` (outbound)
``QueueStatus``                  ``queue.status``
``UserStatus``                   ``agent.state_changed`` (derived from its flags)
``UserAvailability``             ``agent.state_changed`` (from ``Availability``)
===============================  ==================================================

A call's ``call.started`` takes its id from the call (``enreach-call:<CallId>``),
so ``UserCallInComing`` and ``UserCallInArrived`` for one call, or the same
call seen through several subscribed users, start it once (the bus drops the
repeat as a duplicate).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ccbus import Event, parse_timestamp

from .protocol import field

__all__ = ["AVAILABILITY_STATES", "CANONICAL_BY_EVENT", "Mapper", "user_status_state"]

VENDOR = "enreach"

#: UserAvailability.Availability -> canonical agent state.
AVAILABILITY_STATES = {
    "available": "available",
    "busy": "busy",
    "donotdisturb": "not_ready",
    "brb": "not_ready",
    "away": "not_ready",
    "offwork": "logged_out",
}

Canonical = tuple[str, dict[str, Any]]


def user_status_state(data: dict[str, Any]) -> str:
    """The canonical state a UserStatus describes, most specific first.

    Talking wins (a call in progress), then wrap-up, then the availability
    flags: ``Schedule`` false is OffWork, ``Available`` false is DND and the
    like, and ``CanBeAllocatedTo`` is the hub's own "can take a call" verdict.
    """
    if field(data, "Talking") is True:
        return "busy"
    if field(data, "WrapUpStart") or field(data, "WrapUpEnd"):
        return "after_call_work"
    if field(data, "Schedule") is False:
        return "logged_out"
    if field(data, "Available") is False:
        return "not_ready"
    if field(data, "CanBeAllocatedTo") is True:
        return "available"
    if field(data, "CanBeAllocatedTo") is False:
        return "not_ready"
    return "unknown"


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _drop_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _call_started(direction: str) -> Callable[[dict[str, Any]], list[Canonical]]:
    def mapper(data: dict[str, Any]) -> list[Canonical]:
        call_id = _text(field(data, "CallId"))
        if call_id is None:
            return []
        caller = field(data, "CallerNumber")
        if direction == "outbound":
            caller = field(data, "CallAsNumber") or caller
        return [
            (
                "call.started",
                _drop_none(
                    {
                        "callId": call_id,
                        "caller": _text(caller),
                        "called": _text(field(data, "TargetNumber")),
                        "channel": "voice",
                        "direction": direction,
                        "agent": _text(field(data, "UserId")),
                    }
                ),
            )
        ]

    return mapper


def _call_ended(direction: str) -> Callable[[dict[str, Any]], list[Canonical]]:
    def mapper(data: dict[str, Any]) -> list[Canonical]:
        call_id = _text(field(data, "CallId"))
        if call_id is None:
            return []
        return [
            (
                "call.ended",
                _drop_none(
                    {
                        "callId": call_id,
                        "caller": _text(field(data, "CallerNumber")),
                        "called": _text(field(data, "TargetNumber")),
                        "agent": _text(field(data, "UserId")),
                        "result": _text(field(data, "Reason")) or "completed",
                        "direction": direction,
                    }
                ),
            )
        ]

    return mapper


def _overflow(data: dict[str, Any]) -> list[Canonical]:
    call_id = _text(field(data, "CallId"))
    if call_id is None:
        return []
    queue_id = _text(field(data, "TechQueueId"))
    queue = _text(field(data, "TechQueueName")) or queue_id
    if queue_id and queue_id != "00000000-0000-0000-0000-000000000000":
        return [
            (
                "call.queued",
                _drop_none(
                    {
                        "callId": call_id,
                        "queue": queue,
                        "queueId": queue_id,
                        "caller": _text(field(data, "CallerNumber")),
                        "reason": _text(field(data, "OverflowReason")),
                    }
                ),
            )
        ]
    return [
        (
            "call.transferred",
            _drop_none(
                {
                    "callId": call_id,
                    "target": _text(field(data, "TechNumber")) or queue,
                    "agent": _text(field(data, "UserId")),
                    "transferType": "overflow",
                    "reason": _text(field(data, "OverflowReason")),
                }
            ),
        )
    ]


def _user_overflow(data: dict[str, Any]) -> list[Canonical]:
    call_id = _text(field(data, "CallId"))
    if call_id is None:
        return []
    return [
        (
            "call.transferred",
            _drop_none(
                {
                    "callId": call_id,
                    "target": _text(field(data, "Target")),
                    "agent": _text(field(data, "UserId")),
                    "transferType": "overflow",
                    "reason": _text(field(data, "Reason")),
                }
            ),
        )
    ]


def _transfer_connected(data: dict[str, Any]) -> list[Canonical]:
    call_id = _text(field(data, "CallId"))
    if call_id is None:
        return []
    return [
        (
            "call.transferred",
            _drop_none(
                {
                    "callId": call_id,
                    "target": _text(field(data, "ConnectedTarget")),
                    "queue": _text(field(data, "TechQueueName")),
                    "agent": _text(field(data, "UserId")),
                    "transferType": "transfer",
                }
            ),
        )
    ]


def _queue_status(data: dict[str, Any]) -> list[Canonical]:
    queue_id = _text(field(data, "QueueId")) or _text(field(data, "EntityId"))
    if queue_id is None:
        return []
    return [
        (
            "queue.status",
            _drop_none(
                {
                    "queueId": queue_id,
                    "name": _text(field(data, "QueueName")),
                    "waiting": _int(field(data, "NbrOfQueuingRequesters")),
                    "agentsAvailable": _int(field(data, "NbrOfAgentsImmediatelyFree")),
                    "longestWaitSeconds": _number(field(data, "MaxWaitTime")),
                    "openStatus": _int(field(data, "OpenStatus")),
                }
            ),
        )
    ]


def _user_status(data: dict[str, Any]) -> list[Canonical]:
    user_id = _text(field(data, "UserId")) or _text(field(data, "EntityId"))
    if user_id is None:
        return []
    return [
        (
            "agent.state_changed",
            _drop_none(
                {
                    "agentId": user_id,
                    "state": user_status_state(data),
                    "nativeState": _text(field(data, "AvailabilityStatus")),
                    "reason": _text(field(data, "Note")),
                }
            ),
        )
    ]


def _user_availability(data: dict[str, Any]) -> list[Canonical]:
    user_id = _text(field(data, "UserId")) or _text(field(data, "EntityId"))
    if user_id is None:
        return []
    native = _text(field(data, "Availability"))
    return [
        (
            "agent.state_changed",
            _drop_none(
                {
                    "agentId": user_id,
                    "state": AVAILABILITY_STATES.get((native or "").lower(), "unknown"),
                    "nativeState": native,
                    "reason": _text(field(data, "Note")),
                }
            ),
        )
    ]


#: Native event name -> its canonical events.
CANONICAL_BY_EVENT: dict[str, Callable[[dict[str, Any]], list[Canonical]]] = {
    "UserCallInComing": _call_started("inbound"),
    "UserCallInArrived": _call_started("inbound"),
    "UserCallOutGoing": _call_started("outbound"),
    "UserCallInOverflow": _overflow,
    "UserCallInUserOverflow": _user_overflow,
    "UserCallInTransferConnected": _transfer_connected,
    "UserCallInDisconnected": _call_ended("inbound"),
    "UserCallOutDisconnected": _call_ended("outbound"),
    "QueueStatus": _queue_status,
    "UserStatus": _user_status,
    "UserAvailability": _user_availability,
}

#: The key field of each canonical type (its subject).
_KEYS = {
    "agent.state_changed": "agentId",
    "queue.status": "queueId",
    "call.started": "callId",
    "call.queued": "callId",
    "call.transferred": "callId",
    "call.ended": "callId",
}


class Mapper:
    """Builds the events of one message; holds nothing between messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def map(
        self,
        name: str,
        event_id: str,
        subject: str | None,
        data: dict[str, Any],
        received: datetime,
        moment: datetime | None,
        entity_type: str | None = None,
    ) -> list[Event]:
        """The native event first, then its canonical ones (if the event has any)."""
        when = moment or received
        native = Event(
            type=f"{VENDOR}.{name}",
            source=self.source,
            id=event_id,
            subject=subject,
            time=when,
            vendor=VENDOR,
            receivedat=received,
            data=data,
            extensions={"entitytype": entity_type} if entity_type else {},
        )
        canonical = CANONICAL_BY_EVENT.get(name)
        if canonical is None:
            return [native]
        events = [native]
        for type_, fields in canonical(data):
            fields["nativeType"] = native.type
            key = fields[_KEYS[type_]]
            canonical_id = (
                f"{VENDOR}-call:{key}:{type_}" if type_ == "call.started" else f"{event_id}:{type_}"
            )
            events.append(
                Event(
                    type=type_,
                    source=self.source,
                    id=canonical_id,
                    subject=key,
                    time=when,
                    vendor=VENDOR,
                    receivedat=received,
                    data=fields,
                )
            )
        return events


def timestamp(data: dict[str, Any]) -> datetime | None:
    """The event's ``Timestamp`` (``2023-10-19T14:21:19.7009158Z``), parsed; None when
    missing or absurd (see :func:`ccbus.parse_timestamp`)."""
    return parse_timestamp(field(data, "Timestamp"))
