"""Realistic RTE event streams for the simulator: a small organisation and what happens in it.

A step is one event for one entity, after a pause.  The simulator sends a
step only to connections subscribed to that entity and event, as the hub
does, so a scenario can describe everything and each client sees its part.

``contact_center()`` is one round of a working day, with the events in the
order the document's descriptions imply: a service call queues, is
allocated to an agent, connected, disconnected and wrapped up, with the
queue's and the agent's status along the way; a direct call overflows to a
queue; an agent goes on a break and comes back; an outgoing call; a
callback request changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["DEMO_ORG", "Organization", "Step", "contact_center"]


@dataclass(frozen=True, slots=True)
class Step:
    delay: float
    event: str
    entity: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Organization:
    """The entities a simulated hub knows: the API user may subscribe to all of them."""

    id: str
    api_user: str
    users: dict[str, str]
    queues: dict[str, str]
    call_lists: dict[str, str]

    def entity_type(self, entity_id: str) -> str | None:
        key = entity_id.lower()
        if key in self.users:
            return "User"
        if key in self.queues:
            return "Queue"
        if key in self.call_lists:
            return "CallList"
        return None

    def name(self, entity_id: str) -> str | None:
        key = entity_id.lower()
        return self.users.get(key) or self.queues.get(key) or self.call_lists.get(key)


DEMO_ORG = Organization(
    id="29f6e823-b484-e611-80c9-00505689257e",
    api_user="aa9730c4-ce86-e611-80c9-00505689257e",
    users={
        "aa9730c4-ce86-e611-80c9-00505689257e": "supervisor@example.com",
        "a1eeb030-ff4b-ea11-ac9c-00155d4fdcf3": "anna.agent@example.com",
        "a2eeb030-ff4b-ea11-ac9c-00155d4fdcf3": "bert.agent@example.com",
        "a3eeb030-ff4b-ea11-ac9c-00155d4fdcf3": "carla.agent@example.com",
    },
    queues={
        "c9eeb030-ff4b-ea11-ac9c-00155d4fdcf3": "Sales",
        "c8eeb030-ff4b-ea11-ac9c-00155d4fdcf3": "Support",
    },
    call_lists={"0b5a1c7e-2f4b-ea11-ac9c-00155d4fdcf3": "Callbacks"},
)

ANNA, BERT, CARLA = (
    "a1eeb030-ff4b-ea11-ac9c-00155d4fdcf3",
    "a2eeb030-ff4b-ea11-ac9c-00155d4fdcf3",
    "a3eeb030-ff4b-ea11-ac9c-00155d4fdcf3",
)
SALES, SUPPORT = "c9eeb030-ff4b-ea11-ac9c-00155d4fdcf3", "c8eeb030-ff4b-ea11-ac9c-00155d4fdcf3"
CALLBACKS = "0b5a1c7e-2f4b-ea11-ac9c-00155d4fdcf3"


def _status(talking: bool, *, available: bool = True, wrap_up: bool = False) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "CanBeAllocatedTo": available and not talking and not wrap_up,
        "Talking": talking,
        "Available": available,
        "Schedule": True,
        "Serving": True,
        "ServiceTerminals": 1,
        "ActiveQueues": 2,
        "WrapUpStart": now.isoformat().replace("+00:00", "Z") if wrap_up else None,
        "WrapUpEnd": (now + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
        if wrap_up
        else None,
        "AvailabilityStatus": "Available" if available else "DoNotDisturb",
    }


def _queue(name: str, waiting: int, free: int, wait: int) -> dict[str, Any]:
    return {
        "QueueName": name,
        "NbrOfRequesters": waiting,
        "NbrOfQueuingRequesters": waiting,
        "NbrOfNotServedRequesters": waiting,
        "NbrOfProviders": 3,
        "NbrOfAgentsImmediatelyFree": free,
        "NbrOfAgentsCheckedInQueue": 3,
        "MaxWaitTime": wait,
        "OpenStatus": 5,
    }


def contact_center() -> list[Step]:
    """One round of the demo organisation's day (about 12 s at speed 1)."""
    call, direct, out = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    caller, number = "+358401234567", "+358201234567"
    leg = f"leg-{call[:8]}"
    common = {"CallId": call, "LegId": leg, "CallerNumber": caller, "TargetNumber": number}
    return [
        Step(0.0, "UserStatus", ANNA, _status(False)),
        Step(0.3, "QueueStatus", SALES, _queue("Sales", 1, 2, 0)),
        Step(0.5, "UserCallInArrived", ANNA, common),
        Step(0.3, "UserCallInUserAllocated", ANNA, {**common, "UserNumber": "+358201000001"}),
        Step(0.4, "UserCallInUserConnected", ANNA, {**common, "UserNumber": "+358201000001"}),
        Step(0.1, "UserStatus", ANNA, {**_status(True), "ActiveQueueId": SALES}),
        Step(0.2, "QueueStatus", SALES, _queue("Sales", 0, 1, 14)),
        Step(1.5, "UserCallInDisconnected", ANNA, {**common, "Reason": "remote"}),
        Step(0.1, "UserStatus", ANNA, _status(False, wrap_up=True)),
        Step(
            0.1,
            "UserWrapUpStarted",
            ANNA,
            {"CallId": call, "QueueId": SALES, "MaxWrapUpDurationSec": 30},
        ),
        Step(
            1.0,
            "UserWrapUpTerminated",
            ANNA,
            {"CallId": call, "QueueId": SALES, "Reason": "manual", "ElapsedTimeSec": 12},
        ),
        Step(0.1, "UserStatus", ANNA, _status(False)),
        Step(0.5, "UserAvailability", BERT, {"Availability": "BRB", "Note": "Coffee"}),
        Step(0.1, "UserStatus", BERT, _status(False, available=False)),
        Step(
            0.5,
            "UserCallInComing",
            CARLA,
            {"CallId": direct, "LegId": f"leg-{direct[:8]}", "CallerNumber": "+358409876543",
             "TargetNumber": "+358201000003"},
        ),
        Step(
            1.0,
            "UserCallInOverflow",
            CARLA,
            {
                "CallId": direct,
                "LegId": f"leg-{direct[:8]}",
                "CallerNumber": "+358409876543",
                "TargetNumber": "+358201000003",
                "TechQueueId": SUPPORT,
                "TechQueueName": "Support",
                "OverflowReason": "NoAnswer",
                "OverflowType": "QueueHandler",
            },
        ),
        Step(0.2, "QueueStatus", SUPPORT, _queue("Support", 1, 0, 0)),
        Step(
            0.8,
            "CallbackChanged",
            CALLBACKS,
            {
                "CallBackId": str(uuid.uuid4()),
                "CallListId": CALLBACKS,
                "ContactNumber": "+358409876543",
                "ContactName": "Pat Caller",
                "Created": True,
                "TypeId": 2,
                "QueueId": SUPPORT,
            },
        ),
        Step(0.2, "QueueStatus", SUPPORT, _queue("Support", 0, 0, 0)),
        Step(
            0.5,
            "UserCallOutGoing",
            BERT,
            {"CallId": out, "LegId": f"leg-{out[:8]}", "CallerNumber": "+358201000002",
             "TargetNumber": "+358409876543", "CallAsNumber": "+358201234567"},
        ),
        Step(
            0.5,
            "UserCallOutConnected",
            BERT,
            {"CallId": out, "CallerNumber": "+358201000002", "TargetNumber": "+358409876543"},
        ),
        Step(
            2.0,
            "UserCallOutDisconnected",
            BERT,
            {"CallId": out, "CallerNumber": "+358201000002", "TargetNumber": "+358409876543",
             "Reason": "local"},
        ),
        Step(0.3, "UserAvailability", BERT, {"Availability": "Available", "Note": ""}),
        Step(0.1, "UserStatus", BERT, _status(False)),
    ]
