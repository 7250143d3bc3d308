"""From a validated notification to ccbus events: one native event, plus canonical ones.

Native: ``avaya.<body.event>`` with ``id`` = the envelope's ``correlationId``
(so the core's duplicate window drops a notification delivered twice),
``subject`` = the engagement id, or the agent id for agent events, ``time``
= ``body.timestamp`` (epoch milliseconds; Java's Long.MAX_VALUE, which the
document's examples carry, means "unknown" and falls back to the receive
time), and ``data`` = the notification as sent with the body's fields also
lifted to the top level so rules can say ``state == "NOT_READY"``.

Canonical (see the README's table for the full mapping and its limits):
``agent.state_changed``, ``call.started``, ``call.queued``,
``call.transferred``, ``call.abandoned``, ``call.ended`` and ``system.alert``,
each with ``nativeType`` and an id derived from the notification's, so
duplicates are dropped for them too.

The document has no "engagement ended" event, so the call lifecycle is
inferred from participants: the mapper remembers, per engagement, who
called, which queue it waited in, whether an agent ever joined, and which
customers are on it (a bounded LRU table: memory stays flat whatever the
traffic).  Only a party that joined keeps a call alive: one that is merely
``INVITED`` (ringing) may never answer, so when the last joined customer
leaves the call ends, and what is left of it afterwards (the invitation
cancelled, or answered too late) is not a second ending.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ccbus import Event, parse_timestamp

__all__ = ["AGENT_STATES", "Mapper"]

VENDOR = "avaya"

#: AgentState.state -> canonical state (anything else is "unknown").
AGENT_STATES = {
    "READY": "available",
    "NOT_READY": "not_ready",
    "LOGGED_IN": "logged_in",
    "LOGGED_OUT": "logged_out",
}

#: Events about an agent rather than an engagement: their subject is the agent.
AGENT_EVENTS = frozenset(
    {"AgentState", "ChannelReady", "AfterContactWorkActivated", "AfterContactWorkCompleted"}
)

#: Supervisor actions on an engagement: the supervisor is not the agent handling it.
SUPERVISOR_ACTIONS = frozenset({"OBSERVING", "COACHING", "BARGEDIN"})

#: Severity of system.alert for SingleStepTransferError.errorType.
TRANSFER_ERROR_SEVERITY = {"FAILED": "minor", "CANCELLED": "info"}

#: How many engagements' call state is remembered (oldest forgotten first).
MAX_ENGAGEMENTS = 10_000

#: ExternalParticipant actions: on the engagement, only asked to join, gone.
JOINED, INVITED, REMOVED = "ADDED", "INVITED", "REMOVED"


#: A canonical event before it is an Event: its type and its data.
Canonical = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class Engagement:
    """What the mapper remembers of an engagement to describe how it ended."""

    created: datetime | None = None
    queued: datetime | None = None
    caller: str | None = None
    called: str | None = None
    queue: str | None = None
    channel: str | None = None
    agent: str | None = None
    agent_joined: bool = False
    #: connectionId -> externalParticipantId of customers who joined and are present
    customers: dict[str, str] = field(default_factory=dict)
    #: the same for parties invited (ringing) who have not joined: they keep no call alive
    invited: dict[str, str] = field(default_factory=dict)

    def add_customer(self, key: str, participant: str, *, joined: bool) -> None:
        """Record a customer; joining promotes an invited party, an invitation never demotes."""
        if joined:
            _forget(self.invited, key, participant)
            self.customers[key] = participant
        elif key not in self.customers:
            self.invited[key] = participant

    def remove_customer(self, key: str | None, participant: str | None) -> None:
        _forget(self.customers, key, participant)
        _forget(self.invited, key, participant)


class Mapper:
    """Maps notifications of one source instance; keeps per-engagement call state."""

    def __init__(
        self,
        source: str,
        *,
        call_channels: Collection[str] = ("Voice",),
        max_engagements: int = MAX_ENGAGEMENTS,
    ) -> None:
        self.source = source
        self.all_channels = "*" in call_channels
        self.call_channels = frozenset(c.lower() for c in call_channels)
        self.max_engagements = max_engagements
        self.engagements: OrderedDict[str, Engagement] = OrderedDict()
        #: engagements whose call.ended was emitted (bounded like ``engagements``)
        self.ended: OrderedDict[str, None] = OrderedDict()
        #: body event -> the method giving its canonical events (events without one: none)
        self.canonical: dict[str, Callable[[dict[str, Any], datetime], list[Canonical]]] = {
            "AgentState": self._agent_state,
            "AfterContactWorkActivated": self._acw_activated,
            "InboundEngagementCreated": self._inbound_created,
            "OutboundEngagementCreated": self._outbound_created,
            "EngagementPrerouted": self._prerouted,
            "AgentParticipant": self._agent_participant,
            "ExternalParticipant": self._external_participant,
            "SingleStepTransfer": self._transfer,
            "SingleStepTransferError": self._transfer_error,
        }

    # -- native -----------------------------------------------------------------------

    def map(self, doc: dict[str, Any], received: datetime, raw: str | bytes = b"") -> list[Event]:
        """The events for one valid notification: the native one first."""
        body: dict[str, Any] = doc["body"]
        name: str = body["event"]
        event_id = _event_id(doc, body, raw)
        moment = parse_timestamp(body.get("timestamp"), unit="ms") or received
        data = dict(body)
        data.update(doc)  # envelope fields win a clash; the body stays whole under "body"
        if name in AGENT_EVENTS:
            subject = body.get("agentId") or body.get("engagementId")
        else:
            subject = body.get("engagementId") or body.get("agentId")
        native = Event(
            type=f"{VENDOR}.{name}",
            source=self.source,
            id=event_id,
            subject=_text(subject),
            time=moment,
            vendor=VENDOR,
            receivedat=received,
            data=data,
        )
        events = [native]
        canonical = self.canonical.get(name)
        if canonical is not None:
            for type_, fields in canonical(body, moment):
                fields["nativeType"] = native.type
                key = "component" if type_ == "system.alert" else _KEYS[type_]
                events.append(
                    Event(
                        type=type_,
                        source=self.source,
                        id=f"{event_id}:{type_}",
                        subject=_text(fields.get(key)),
                        time=moment,
                        vendor=VENDOR,
                        receivedat=received,
                        data=fields,
                    )
                )
        return events

    # -- per body event: canonical (type, data) pairs -----------------------------------

    def _agent_state(self, body: dict[str, Any], moment: datetime) -> list[Canonical]:
        native = _text(body.get("state"))
        fields: dict[str, Any] = {
            "agentId": _text(body.get("agentId")) or "",
            "state": AGENT_STATES.get(native or "", "unknown"),
        }
        if native:
            fields["nativeState"] = native
        reason = _reason(body.get("reasonCode"), body.get("cause"))
        if reason:
            fields["reason"] = reason
        return [("agent.state_changed", fields)]

    def _acw_activated(
        self, body: dict[str, Any], moment: datetime
    ) -> list[Canonical]:
        return [
            (
                "agent.state_changed",
                {
                    "agentId": _text(body.get("agentId")) or "",
                    "state": "after_call_work",
                    "nativeState": "AfterContactWorkActivated",
                },
            )
        ]

    def _inbound_created(
        self, body: dict[str, Any], moment: datetime
    ) -> list[Canonical]:
        engagement_id = _text(body.get("engagementId"))
        if not engagement_id:
            return []
        state = self._engagement(engagement_id)
        state.created = state.created or moment
        state.caller = _text(body.get("callingNumber")) or _text(body.get("externalParticipantId"))
        state.called = _text(body.get("dialledNumber"))
        state.channel = _text(body.get("channelId")) or state.channel
        customer = _text(body.get("connectionId")) or _text(body.get("externalParticipantId"))
        if customer:  # the caller: on the engagement from its creation
            state.add_customer(
                customer, _text(body.get("externalParticipantId")) or customer, joined=True
            )
        if not self._is_call(state.channel):
            return []
        fields = _drop_none(
            {
                "callId": engagement_id,
                "caller": state.caller,
                "called": state.called,
                "channel": _channel(state.channel),
                "direction": "inbound",
            }
        )
        return [("call.started", fields)]

    def _outbound_created(
        self, body: dict[str, Any], moment: datetime
    ) -> list[Canonical]:
        engagement_id = _text(body.get("engagementId"))
        if not engagement_id:
            return []
        state = self._engagement(engagement_id)
        state.created = state.created or moment
        state.called = _text(body.get("destinationAddress"))
        state.channel = _text(body.get("channelId")) or state.channel
        state.agent = _text(body.get("agentId")) or state.agent
        state.agent_joined = state.agent_joined or state.agent is not None
        if not self._is_call(state.channel):
            return []
        fields = _drop_none(
            {
                "callId": engagement_id,
                "called": state.called,
                "channel": _channel(state.channel),
                "direction": "outbound",
            }
        )
        return [("call.started", fields)]

    def _prerouted(self, body: dict[str, Any], moment: datetime) -> list[Canonical]:
        engagement_id = _text(body.get("engagementId"))
        if not engagement_id:
            return []
        state = self._engagement(engagement_id)
        state.queued = state.queued or moment
        given = body.get("queue")
        queue: dict[str, Any] = given if isinstance(given, dict) else {}
        state.queue = _text(queue.get("queueName")) or _text(queue.get("queueId")) or state.queue
        state.caller = state.caller or _text(body.get("sourceAddress")) or _text(
            body.get("externalParticipantId")
        )
        state.called = state.called or _text(body.get("destinationAddress"))
        state.channel = _text(body.get("channelId")) or state.channel
        if not self._is_call(state.channel):
            return []
        fields = _drop_none({"callId": engagement_id, "queue": state.queue, "caller": state.caller})
        return [("call.queued", fields)]

    def _agent_participant(self, body: dict[str, Any], moment: datetime) -> list[Canonical]:
        engagement_id = _text(body.get("engagementId"))
        action = body.get("action")
        if engagement_id and action == "ADDED":
            state = self._engagement(engagement_id)
            state.agent_joined = True
            state.agent = _text(body.get("agentId")) or state.agent
            state.channel = _text(body.get("channelId")) or state.channel
        return []

    def _external_participant(self, body: dict[str, Any], moment: datetime) -> list[Canonical]:
        engagement_id = _text(body.get("engagementId"))
        if not engagement_id or engagement_id in self.ended:
            return []  # its call already ended: a late invitee's comings and goings are not news
        action = body.get("action")
        connection = _text(body.get("connectionId"))
        participant = _text(body.get("externalParticipantId"))
        if action in (JOINED, INVITED):
            state = self._engagement(engagement_id)
            key = connection or participant
            if key:
                state.add_customer(key, participant or key, joined=action == JOINED)
            state.channel = _text(body.get("channelId")) or state.channel
            return []
        if action != REMOVED:
            return []
        known = self.engagements.get(engagement_id)
        if known is not None:
            known.remove_customer(connection, participant)
            if known.customers:
                return []  # another customer who joined (a conference) is still on it
            del self.engagements[engagement_id]
        self._remember_ended(engagement_id)
        return self._ended(engagement_id, known, body, moment)

    def _ended(
        self,
        engagement_id: str,
        state: Engagement | None,
        body: dict[str, Any],
        moment: datetime,
    ) -> list[Canonical]:
        channel = _text(body.get("channelId")) or (state.channel if state else None)
        if not self._is_call(channel):
            return []
        if state is None:  # started before we were listening: say what we know
            return [("call.ended", {"callId": engagement_id})]
        customer_left = body.get("externalParticipantInitiatedDisconnect") is not False
        if state.agent_joined:
            result = "completed"
        elif state.queued is not None:
            result = "abandoned" if customer_left else "failed"
        else:
            result = "completed"  # ended in self-service, never queued for an agent
        out: list[Canonical] = []
        if result == "abandoned":
            wait = (moment - state.queued).total_seconds() if state.queued else None
            out.append(
                (
                    "call.abandoned",
                    _drop_none(
                        {
                            "callId": engagement_id,
                            "caller": state.caller,
                            "queue": state.queue,
                            "waitSeconds": round(max(wait, 0.0), 3) if wait is not None else None,
                        }
                    ),
                )
            )
        duration = (moment - state.created).total_seconds() if state.created else None
        out.append(
            (
                "call.ended",
                _drop_none(
                    {
                        "callId": engagement_id,
                        "caller": state.caller,
                        "called": state.called,
                        "agent": state.agent,
                        "durationSeconds": (
                            round(max(duration, 0.0), 3) if duration is not None else None
                        ),
                        "result": result,
                    }
                ),
            )
        )
        return out

    def _transfer(self, body: dict[str, Any], moment: datetime) -> list[Canonical]:
        engagement_id = _text(body.get("engagementId"))
        if not engagement_id:
            return []
        state = self.engagements.get(engagement_id)
        channel = _text(body.get("channelId")) or (state.channel if state else None)
        if not self._is_call(channel):
            return []
        transfer_to = _text(body.get("transferTo"))
        fields = _drop_none(
            {
                "callId": engagement_id,
                "target": _text(body.get("destination")),
                "queue": _text(body.get("queueName")) or _text(body.get("queueId")),
                "agent": _text(body.get("initiatingAgentId")),
                "transferType": "single_step",
            }
        )
        if state is not None and transfer_to == "QUEUE":
            state.queue = fields.get("queue", state.queue)
        return [("call.transferred", fields)]

    def _transfer_error(
        self, body: dict[str, Any], moment: datetime
    ) -> list[Canonical]:
        error = _text(body.get("errorType")) or "FAILED"
        engagement = _text(body.get("engagementId")) or "?"
        target = " ".join(
            t for t in (_text(body.get("transferTo")), _text(body.get("destination"))) if t
        )
        why = "; ".join(t for t in (_text(body.get("title")), _text(body.get("detail"))) if t)
        message = f"single-step transfer of engagement {engagement}"
        message += f" to {target}" if target else ""
        message += f" {error.lower()}"
        message += f": {why}" if why else ""
        if body.get("initiatingAgentId"):
            message += f" (agent {body['initiatingAgentId']})"
        return [
            (
                "system.alert",
                {
                    "component": "avaya.transfer",
                    "severity": TRANSFER_ERROR_SEVERITY.get(error, "minor"),
                    "message": message,
                },
            )
        ]

    # -- helpers -----------------------------------------------------------------------

    def _engagement(self, engagement_id: str) -> Engagement:
        state = self.engagements.get(engagement_id)
        if state is None:
            state = self.engagements[engagement_id] = Engagement()
            if len(self.engagements) > self.max_engagements:
                self.engagements.popitem(last=False)
        else:
            self.engagements.move_to_end(engagement_id)
        return state

    def _remember_ended(self, engagement_id: str) -> None:
        self.ended[engagement_id] = None
        if len(self.ended) > self.max_engagements:
            self.ended.popitem(last=False)

    def _is_call(self, channel: str | None) -> bool:
        """Whether an engagement on ``channel`` yields call.* events (unknown: voice)."""
        return self.all_channels or channel is None or channel.lower() in self.call_channels


#: The key field of each canonical type (its subject).
_KEYS = {
    "agent.state_changed": "agentId",
    "call.started": "callId",
    "call.queued": "callId",
    "call.transferred": "callId",
    "call.abandoned": "callId",
    "call.ended": "callId",
}


def _event_id(doc: dict[str, Any], body: dict[str, Any], raw: str | bytes) -> str:
    """``correlationId``; else the body's ``id``; else a digest of the message itself."""
    for value in (doc.get("correlationId"), body.get("id")):
        if isinstance(value, str) and value:
            return value
    data = raw.encode() if isinstance(raw, str) else raw
    return "sha1-" + hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _forget(parties: dict[str, str], key: str | None, participant: str | None) -> None:
    """Drop the party with connection ``key``, or with participant id ``participant``."""
    for known, who in list(parties.items()):
        if known == key or (participant is not None and who == participant):
            del parties[known]


def _text(value: Any) -> str | None:
    """A field as text (the document sends some string fields as numbers); None if absent."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _channel(channel: str | None) -> str:
    return channel.lower() if channel else "voice"


def _reason(code: Any, cause: Any) -> str | None:
    code_text, cause_text = _text(code), _text(cause)
    if code_text and cause_text:
        return f"{code_text} ({cause_text})"
    return code_text or cause_text


def _drop_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
