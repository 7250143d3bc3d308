"""Realistic agent and engagement sequences for the simulator, built from the document's fields.

A scenario is a list of :class:`Step`: a pause, a notification body and the
envelope's login fields.  Ids are fresh UUIDs on every build (so two runs
never look like duplicates); the values follow the document's examples and
the project's recorded demo events (queue ``BillingQ``, dialled number
``+18005550142``, dialog ids that equal the ASBCE's UCID ...).  Bodies carry
no ``timestamp``: the simulator stamps them when it sends them.

``contact_center()`` is what ``ccbus demo`` and ``ccbus simulate avaya`` play:
three agents log in, one inbound call goes through the IVR, a queue and an
agent and is transferred to a colleague, one caller hangs up in the queue
(abandoned), one outbound call is made, one transfer fails, and every one of
the thirteen body events occurs at least once, in about 4.5 seconds.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AGENTS", "Agent", "Step", "blast_bodies", "contact_center"]

CHANNEL_PROVIDER = "7b2e9f14-6c3a-4d58-a1e0-93f5c2b8d641"
DIALLED = "+18005550142"
BILLING = ("2f7c8e51-0a9d-4b36-9e2c-5d8f1a4b7c60", "BillingQ")
SALES = ("9c41d2e7-5b0a-4f83-a6d1-3e8f0b7c2a95", "SalesQ")
IVR = "AvayaVoiceIVR"


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str
    login_id: str
    extension: str


AGENTS = (
    Agent("4a7f5e21-93c2-4d1b-8e6f-2b9c0d7a1e34", "priya.nair@example.com", "8011001"),
    Agent("c81e3b6d-5a2f-47e9-9b04-6d1f8a2c3e75", "tom.berg@example.com", "8011002"),
    Agent("e5b20c94-7d1a-4f36-8b9e-0a3c6f2d8e17", "ana.costa@example.com", "8011003"),
)


@dataclass(slots=True)
class Step:
    """Wait ``delay`` seconds, then send ``body`` with ``envelope`` login fields."""

    delay: float
    body: dict[str, Any]
    envelope: dict[str, str] = field(default_factory=dict)


def _id() -> str:
    return str(uuid.uuid4())


_dialogs = itertools.count(1793883730)


@dataclass(slots=True)
class Call:
    """One engagement's ids, as the document relates them."""

    caller: str
    engagement_id: str = field(default_factory=_id)
    customer_connection: str = field(default_factory=_id)
    dialog_id: str = ""
    provider_engagement_id: str = ""

    def __post_init__(self) -> None:
        n = next(_dialogs)
        self.dialog_id = f"0100500028{n}"
        self.provider_engagement_id = f"0000108401{n}"

    def identifiers(self) -> dict[str, list[str]]:
        return {"phoneNumbers": [self.caller], "emailAddresses": [], "accountIds": []}

    def common(self) -> dict[str, Any]:
        return {
            "engagementId": self.engagement_id,
            "channelProviderId": CHANNEL_PROVIDER,
            "dialogId": self.dialog_id,
            "channelId": "Voice",
        }


def agent_state(agent: Agent, state: str, reason: str | None = None) -> Step:
    body: dict[str, Any] = {
        "event": "AgentState",
        "agentId": agent.agent_id,
        "profileId": "VoiceProfile",
        "state": state,
        "id": _id(),
    }
    if reason:
        body["reasonCode"] = reason
    return Step(0.0, body, {"loginId": agent.login_id})


def channel_ready(agent: Agent) -> Step:
    body = {
        "event": "ChannelReady",
        "agentId": agent.agent_id,
        "channelProviderId": CHANNEL_PROVIDER,
        "channelId": "Voice",
        "id": _id(),
    }
    return Step(0.0, body, {"loginId": agent.login_id})


def inbound(call: Call) -> Step:
    body = {
        "event": "InboundEngagementCreated",
        **call.common(),
        "connectionId": call.customer_connection,
        "externalParticipantId": call.caller,
        "callingNumber": call.caller,
        "dialledNumber": DIALLED,
        "customerIdentifiers": call.identifiers(),
        "providerEngagementId": call.provider_engagement_id,
        "engagementParameters": {"language": "en"},
        "id": _id(),
    }
    return Step(0.0, body)


def automation(call: Call, action: str, connection: str) -> Step:
    body: dict[str, Any] = {
        "event": "AutomationParticipant",
        **call.common(),
        "automationParticipantId": IVR,
        "action": action,
        "automationType": "SELF_SERVICE",
        "connectionId": connection,
        "providerEngagementId": call.provider_engagement_id,
        "id": _id(),
    }
    if action == "REMOVED":
        body["automationInitiatedDisconnect"] = True
    return Step(0.0, body)


def prerouted(call: Call, queue: tuple[str, str]) -> Step:
    body = {
        "event": "EngagementPrerouted",
        "engagementId": call.engagement_id,
        "dialogId": call.dialog_id,
        "orchestrationFlow": "Billing Inbound Voice",
        "attributes": [
            {"category": "Language", "values": ["English"]},
            {"category": "Service", "values": ["Billing"]},
        ],
        "attributeList": ["Language.English", "Service.Billing"],
        "engagementParameters": {"language": "en"},
        "channelProviderId": CHANNEL_PROVIDER,
        "channelId": "Voice",
        "channelIdentifier": "Voice",
        "queue": {
            "queueId": queue[0],
            "queueName": queue[1],
            "priority": 5,
            "proficiencyRangeMin": 1,
            "proficiencyRangeMax": 10,
        },
        "customerIdentifiers": call.identifiers(),
        "externalParticipantId": call.caller,
        "sourceAddress": call.caller,
        "destinationAddress": DIALLED,
        "id": _id(),
    }
    return Step(0.0, body)


def match_offered(call: Call, agent: Agent, queue: tuple[str, str]) -> Step:
    body = {
        "event": "MatchOffered",
        "engagementId": call.engagement_id,
        "matchId": _id(),
        "correlationId": _id(),
        "strategy": "MOST_IDLE",
        "offeredQueue": {
            "queueId": queue[0],
            "channelId": "Voice",
            "priority": 5,
            "rank": 1,
            "proficiencyRangeMin": 1,
            "proficiencyRangeMax": 10,
            "attributes": ["Language.English", "Service.Billing"],
            "offeredAgentData": {
                "agentId": agent.agent_id,
                "providerAgentId": agent.extension,
                "channelProviderId": CHANNEL_PROVIDER,
                "channelId": "Voice",
                "channelProviderAddress": DIALLED,
                "providerAgentAddress": agent.login_id,
            },
        },
        "id": _id(),
    }
    return Step(0.0, body)


def agent_participant(
    call: Call, agent: Agent, action: str, connection: str, *, agent_left: bool = True
) -> Step:
    body: dict[str, Any] = {
        "event": "AgentParticipant",
        **call.common(),
        "connectionId": connection,
        "action": action,
        "agentId": agent.agent_id,
        "extension": agent.extension,
        "providerEngagementId": call.provider_engagement_id,
        "id": _id(),
    }
    if action == "REMOVED":
        body["agentInitiatedDisconnect"] = agent_left
    return Step(0.0, body, {"loginId": agent.login_id})


def external_participant(call: Call, action: str, *, customer_left: bool = True) -> Step:
    body: dict[str, Any] = {
        "event": "ExternalParticipant",
        **call.common(),
        "externalParticipantId": call.caller,
        "action": action,
        "connectionId": call.customer_connection,
        "providerEngagementId": call.provider_engagement_id,
        "id": _id(),
    }
    if action == "REMOVED":
        body["externalParticipantInitiatedDisconnect"] = customer_left
    return Step(0.0, body)


def outbound(call: Call, agent: Agent) -> Step:
    body = {
        "event": "OutboundEngagementCreated",
        "engagementId": call.engagement_id,
        "agentId": agent.agent_id,
        "dialogId": call.dialog_id,
        "destinationAddress": call.caller,
        "channelProviderId": CHANNEL_PROVIDER,
        "channelId": "Voice",
        "customerIdentifiers": call.identifiers(),
        "engagementParameters": {"language": "en"},
        "id": _id(),
    }
    return Step(0.0, body, {"loginId": agent.login_id})


def transfer(call: Call, source: Agent, target: Agent, connection: str) -> Step:
    body = {
        "event": "SingleStepTransfer",
        **call.common(),
        "initiatingAgentId": source.agent_id,
        "transferTo": "USER",
        "destination": target.agent_id,
        "queueId": BILLING[0],
        "queueName": BILLING[1],
        "connectionId": connection,
        "providerDialogId": f"000010003217{call.dialog_id[-8:]}",
        "correlationId": _id(),
    }
    return Step(
        0.0,
        body,
        {"initiatingLoginId": source.login_id, "destinationLoginId": target.login_id},
    )


def transfer_error(call: Call, source: Agent, queue: tuple[str, str]) -> Step:
    body = {
        "event": "SingleStepTransferError",
        **call.common(),
        "initiatingAgentId": source.agent_id,
        "transferTo": "QUEUE",
        "errorType": "FAILED",
        "destination": queue[0],
        "correlationId": _id(),
        "title": "Transfer failed",
        "detail": f"Queue {queue[1]} is closed",
        "id": _id(),
    }
    return Step(0.0, body, {"initiatingLoginId": source.login_id})


def after_contact_work(call: Call, agent: Agent, connection: str, *, done: bool = False) -> Step:
    body = {
        "event": "AfterContactWorkCompleted" if done else "AfterContactWorkActivated",
        **call.common(),
        "agentId": agent.agent_id,
        "connectionId": connection,
        "id": _id(),
    }
    return Step(0.0, body, {"loginId": agent.login_id})


def _at(delay: float, step: Step) -> Step:
    step.delay = delay
    return step


def contact_center() -> list[Step]:
    """About 4.5 s of a small contact center: all 13 events, one abandoned call, one transfer."""
    priya, tom, ana = AGENTS
    call_a = Call("+13125550147")  # answered by Priya, transferred to Tom, completed
    call_b = Call("+17735550118")  # hangs up while queued: abandoned
    call_c = Call("+16175550163")  # outbound by Priya
    ivr = _id()
    priya_leg, tom_leg, priya_out = _id(), _id(), _id()
    return [
        _at(0.1, agent_state(priya, "LOGGED_IN")),
        agent_state(tom, "LOGGED_IN"),
        agent_state(ana, "LOGGED_IN"),
        _at(0.2, agent_state(priya, "READY")),
        channel_ready(priya),
        agent_state(tom, "READY"),
        _at(0.3, inbound(call_a)),
        automation(call_a, "ADDED", ivr),
        _at(0.3, automation(call_a, "REMOVED", ivr)),
        prerouted(call_a, BILLING),
        _at(0.2, match_offered(call_a, priya, BILLING)),
        _at(0.2, agent_participant(call_a, priya, "ADDED", priya_leg)),
        _at(0.2, inbound(call_b)),
        prerouted(call_b, BILLING),
        _at(0.3, agent_state(ana, "NOT_READY", reason="22")),
        _at(0.3, transfer(call_a, priya, tom, priya_leg)),
        agent_participant(call_a, priya, "REMOVED", priya_leg),
        after_contact_work(call_a, priya, priya_leg),
        _at(0.2, agent_participant(call_a, tom, "ADDED", tom_leg)),
        _at(0.3, external_participant(call_b, "REMOVED", customer_left=True)),
        _at(0.3, after_contact_work(call_a, priya, priya_leg, done=True)),
        agent_state(priya, "READY"),
        _at(0.2, outbound(call_c, priya)),
        agent_participant(call_c, priya, "ADDED", priya_out),
        _at(0.2, external_participant(call_c, "ADDED")),
        _at(0.3, transfer_error(call_a, tom, SALES)),
        _at(0.3, external_participant(call_a, "REMOVED", customer_left=True)),
        agent_participant(call_a, tom, "REMOVED", tom_leg, agent_left=False),
        after_contact_work(call_a, tom, tom_leg),
        _at(0.3, external_participant(call_c, "REMOVED", customer_left=False)),
        agent_participant(call_c, priya, "REMOVED", priya_out),
        _at(0.2, agent_state(ana, "LOGGED_OUT")),
    ]


def blast_bodies(count: int, *, agents: int = 200) -> list[str]:
    """``count`` AgentState bodies as JSON text pieces, cycling states over ``agents`` agents.

    Returned pre-serialized (without the envelope) so the simulator's blast
    mode spends its time sending, not building.
    """
    states = ("READY", "NOT_READY", "READY", "LOGGED_IN")
    out = []
    for i in range(count):
        body = {
            "event": "AgentState",
            "agentId": f"agent-{i % agents:04d}",
            "profileId": "VoiceProfile",
            "state": states[i % len(states)],
            "id": f"00000000-0000-4000-8000-{i:012d}",
            "timestamp": 1793883600000 + i,
        }
        out.append(json.dumps(body))
    return out
