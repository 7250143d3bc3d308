"""The two topics and the 42 event names of the Voice Microservices document, nothing more.

Source: "Voice Microservices event topics" (Genesys documentation,
``genesys-voice-microservices-kafka-topics.txt``).  The document lists the
names per topic but not the payload layout; what the plugin assumes about
the payload is in :mod:`ccbus_genesys.mapping` and the plugin's README.
"""

from __future__ import annotations

__all__ = [
    "AGENT_STATE",
    "AGENT_STATE_EVENTS",
    "ALL_EVENTS",
    "CALL_THREAD",
    "CALL_THREAD_EVENTS",
    "DEFAULT_TOPICS",
]

#: Topic kinds (the keys of the source's topic options) and their default names.
AGENT_STATE = "agentstate"
CALL_THREAD = "callthread"
DEFAULT_TOPICS = {AGENT_STATE: "voice-agentstate", CALL_THREAD: "voice-callthread"}

#: voice-agentstate, key ``{tenant_id}:{agent_id}``: "Agent state and DN events".
AGENT_STATE_EVENTS: tuple[str, ...] = (
    "EventAgentLogin",
    "EventAgentLogout",
    "EventQueueLogout",
    "EventAgentReady",
    "EventAgentNotReady",
    "EventDNOutOfService",
    "EventDNBackInService",
    "EventDNDOn",
    "EventDNDOff",
    "EventForwardSet",
    "EventForwardCancel",
    "EventMonitoringNextCall",
    "EventMonitoringCancelled",
    "EventOffHook",
    "EventOnHook",
    "EventMuteOn",
    "EventMuteOff",
    "EventListenDisconnected",
    "EventListenReconnected",
    "EventMessageWaitingOn",
    "EventMessageWaitingOff",
)

#: voice-callthread, key ``{tenant_id}:{callthread_id}``: call handling and
#: transfer/conference, call routing, and call treatment events.
CALL_THREAD_EVENTS: tuple[str, ...] = (
    # Call Handling and Transfer/Conference Events
    "EventDialing",
    "EventRinging",
    "EventEstablished",
    "EventAbandoned",
    "EventDestinationBusy",
    "EventDiverted",
    "EventHeld",
    "EventNetworkReached",
    "EventPartyAdded",
    "EventPartyChanged",
    "EventPartyDeleted",
    "EventQueued",
    "EventBridged",
    "EventReleased",
    "EventRetrieved",
    # Call Routing Events
    "EventRouteRequest",
    "EventRouteUsed",
    # Call Treatment Events
    "EventTreatmentApplied",
    "EventTreatmentEnd",
    "EventTreatmentNotApplied",
    "EventTreatmentRequired",
)

ALL_EVENTS = frozenset(AGENT_STATE_EVENTS) | frozenset(CALL_THREAD_EVENTS)
