"""The Agent & Engagement WebSocket channel: its messages and their schema, in one place.

Both sides use this module: the source to validate what the server sends,
the simulator to validate what a client sends and to build what it sends
back, so the two cannot drift apart.  Everything here follows the AsyncAPI
document (``/v1/agent-engagement``, version 1.0.2):

client -> server
    ``authentication`` (first, required), ``ping``
server -> client
    ``authenticationResponse`` (one of five statuses), ``pong``, and
    notifications: an envelope (``correlationId``, ``accountId`` ...) whose
    ``body`` is one of thirteen events, discriminated by ``body.event``.

Validation is strict on *shape* (the document marks every object
``additionalProperties: false``: an undeclared field is a schema break) and
lenient on *scalars* where the document's own examples contradict its
schema: ``reasonCode: 514`` is a number though declared a string,
``timestamp`` is declared a string of format long but every example is a
number, ``attributes`` is an array in the schema and an object in the
example, and ``engagementParameters`` is declared with no properties at all
yet carries ``language``.  A validator that refused the vendor's own
examples would be wrong, so those are accepted (see the README's
"assumptions").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "AUTHENTICATION",
    "AUTHENTICATION_RESPONSE",
    "BODY_EVENTS",
    "ENVELOPE_FIELDS",
    "FAMILY",
    "PING",
    "PONG",
    "AuthStatus",
    "Problem",
    "ServerMessage",
    "authentication_message",
    "authentication_response",
    "classify_server_message",
    "ping_message",
    "pong_message",
    "validate_authentication",
    "validate_notification",
    "validate_ping",
]

FAMILY = "AGENT_ENGAGEMENT"
AUTHENTICATION = "authentication"
AUTHENTICATION_RESPONSE = "authenticationResponse"
PING = "ping"
PONG = "pong"


class AuthStatus(StrEnum):
    """The five statuses of an ``authenticationResponse``."""

    CONFIRMED = "CONNECTION_CONFIRMED"
    INVALID_TOKEN = "CONNECTION_FAILED_INVALID_TOKEN"
    UNKNOWN_SUBSCRIPTION = "CONNECTION_FAILED_UNKNOWN_SUBSCRIPTION"
    INTERNAL_SERVER_ERROR = "CONNECTION_FAILED_INTERNAL_SERVER_ERROR"
    CONSTRAINT_VIOLATION = "CONNECTION_FAILED_CONSTRAINT_VIOLATION"


# ---------------------------------------------------------------------------
# Messages a side builds


def authentication_message(subscription_id: str, token: str) -> str:
    """The first message a client sends after connecting."""
    return json.dumps({"event": AUTHENTICATION, "subscriptionId": subscription_id, "token": token})


def ping_message(subscription_id: str | None = None) -> str:
    """The client's keep-alive; the subscription id is optional."""
    doc: dict[str, Any] = {"event": PING}
    if subscription_id:
        doc["subscriptionId"] = subscription_id
    return json.dumps(doc)


def pong_message() -> str:
    return json.dumps({"event": PONG})


def authentication_response(
    status: AuthStatus,
    subscription_id: str | None,
    *,
    ping_interval: int | None = None,
    expires_interval: int | None = None,
) -> str:
    doc: dict[str, Any] = {"event": AUTHENTICATION_RESPONSE, "status": str(status)}
    if subscription_id:
        doc["subscriptionId"] = subscription_id
    if ping_interval is not None:
        doc["pingInterval"] = ping_interval
    if expires_interval is not None:
        doc["expiresInterval"] = expires_interval
    return json.dumps(doc)


# ---------------------------------------------------------------------------
# Schema checking: a small structural validator for the document's schemas


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a message breaks the schema: a short reason (the counter's label) and details."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


Check = Callable[[Any, str, list[Problem], bool], None]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _string(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
    # numbers pass: the document's own example sends reasonCode 514 for a string field
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return
    problems.append(Problem("wrong_type", f"{path}: expected a string, got {_kind(value)}"))


def _integer(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return
    problems.append(Problem("wrong_type", f"{path}: expected an integer, got {_kind(value)}"))


def _boolean(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
    if not isinstance(value, bool):
        problems.append(Problem("wrong_type", f"{path}: expected a boolean, got {_kind(value)}"))


def _timestamp(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
    # "string, format long" in the schema; a JSON number in every example
    if isinstance(value, int | float) and not isinstance(value, bool):
        return
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        return
    problems.append(
        Problem("wrong_type", f"{path}: expected epoch milliseconds, got {value!r:.40}")
    )


def _free_object(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
    if not isinstance(value, dict):
        problems.append(Problem("wrong_type", f"{path}: expected an object, got {_kind(value)}"))


def _anything(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
    return None


def _array(item: Check) -> Check:
    def check(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
        if not isinstance(value, list):
            problems.append(Problem("wrong_type", f"{path}: expected an array, got {_kind(value)}"))
            return
        for index, element in enumerate(value):
            item(element, f"{path}[{index}]", problems, strict)

    return check


def _object(fields: Mapping[str, Check]) -> Check:
    allowed = frozenset(fields)

    def check(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
        if not isinstance(value, dict):
            problems.append(
                Problem("wrong_type", f"{path}: expected an object, got {_kind(value)}")
            )
            return
        _check_fields(value, fields, allowed, path, problems, strict)

    return check


def _one_or_many(item: Check) -> Check:
    many = _array(item)

    def check(value: Any, path: str, problems: list[Problem], strict: bool) -> None:
        (item if isinstance(value, dict) else many)(value, path, problems, strict)

    return check


def _check_fields(
    value: dict[str, Any],
    fields: Mapping[str, Check],
    allowed: frozenset[str],
    path: str,
    problems: list[Problem],
    strict: bool,
) -> None:
    extra = value.keys() - allowed
    if extra and strict:
        names = ", ".join(sorted(extra))
        problems.append(Problem("unknown_field", f"{path}: undeclared field(s) {names}"))
    for name, field_value in value.items():
        check = fields.get(name)
        if check is None or field_value is None:
            continue
        if check is _string and type(field_value) is str:
            continue  # the common case, without a call: this runs for every notification
        check(field_value, f"{path}.{name}", problems, strict)


S, INT, B, TS = _string, _integer, _boolean, _timestamp

_ATTRIBUTE = _object({"category": S, "values": _array(S)})
_ATTRIBUTES = _one_or_many(_ATTRIBUTE)  # an array in the schema, one object in the example
_CUSTOMER_IDENTIFIERS = _object(
    {"phoneNumbers": _array(S), "emailAddresses": _array(S), "accountIds": _array(S)}
)
_AGENT_DATA = _object(
    {
        "agentId": S,
        "providerAgentId": S,
        "channelProviderId": S,
        "channelId": S,
        "channelProviderAddress": S,
        "providerAgentAddress": S,
    }
)
_OFFER = {"priority": INT, "rank": INT, "proficiencyRangeMin": INT, "proficiencyRangeMax": INT}
_COMMON = {"id": S, "timestamp": TS}

#: Every body event of the document and its declared fields (``event`` is the discriminator).
BODY_SCHEMAS: dict[str, dict[str, Check]] = {
    "AgentState": {
        "agentId": S,
        "profileId": S,
        "state": S,
        "reasonCode": S,
        "cause": S,
        **_COMMON,
    },
    "AgentParticipant": {
        "engagementId": S,
        "channelProviderId": S,
        "connectionId": S,
        "action": S,
        "agentId": S,
        "previousDialogId": S,
        "dialogId": S,
        "extension": S,
        "channelId": S,
        "providerEngagementId": S,
        "agentInitiatedDisconnect": B,
        "observedAgentId": S,
        "observingAgentId": S,
        "observingAgentConnectionId": S,
        "observedAgentConnectionId": S,
        "coachingAgentId": S,
        "coachedAgentId": S,
        "coachingAgentConnectionId": S,
        "coachedAgentConnectionId": S,
        "bargingAgentId": S,
        "bargingAgentConnectionId": S,
        **_COMMON,
    },
    "AutomationParticipant": {
        "engagementId": S,
        "channelProviderId": S,
        "automationParticipantId": S,
        "action": S,
        "dialogId": S,
        "automationType": S,
        "connectionId": S,
        "channelId": S,
        "providerEngagementId": S,
        "automationInitiatedDisconnect": B,
        **_COMMON,
    },
    "ExternalParticipant": {
        "engagementId": S,
        "channelProviderId": S,
        "externalParticipantId": S,
        "action": S,
        "connectionId": S,
        "dialogId": S,
        "channelId": S,
        "providerEngagementId": S,
        "externalParticipantInitiatedDisconnect": B,
        **_COMMON,
    },
    "EngagementPrerouted": {
        "engagementId": S,
        "dialogId": S,
        "orchestrationFlow": S,
        "attributes": _ATTRIBUTES,
        "attributeList": _array(S),
        "engagementParameters": _free_object,
        "agentRoutingStrategy": _object({"type": S, "waitTime": INT}),
        "adhocEmail": B,
        "autoResponse": S,
        "channelProviderId": S,
        "channelId": S,
        "channelIdentifier": S,
        "queue": _object(
            {
                "queueId": S,
                "queueName": S,
                "priority": INT,
                "proficiencyRangeMin": INT,
                "proficiencyRangeMax": INT,
            }
        ),
        "customerIdentifiers": _CUSTOMER_IDENTIFIERS,
        "externalParticipantId": S,
        "sourceAddress": S,
        "destinationAddress": S,
        "subject": S,
        **_COMMON,
    },
    "InboundEngagementCreated": {
        "engagementId": S,
        "channelProviderId": S,
        "connectionId": S,
        "externalParticipantId": S,
        "dialogId": S,
        "callingNumber": S,
        "dialledNumber": S,
        "channelId": S,
        "customerIdentifiers": _CUSTOMER_IDENTIFIERS,
        "providerEngagementId": S,
        "engagementParameters": _free_object,
        **_COMMON,
    },
    "MatchOffered": {
        "engagementId": S,
        "matchId": S,
        "correlationId": S,
        "strategy": S,
        "offeredQueue": _object(
            {
                "queueId": S,
                "channelId": S,
                **_OFFER,
                "attributes": _anything,  # flat strings in the schema, an object in the example
                "offeredAgentData": _AGENT_DATA,
            }
        ),
        "offeredService": _object(
            {**_OFFER, "attributes": _ATTRIBUTES, "offeredAgentData": _AGENT_DATA}
        ),
        "offeredSpecifiedAgent": _object({"rank": INT, "offeredSpecifiedAgentData": _AGENT_DATA}),
        **_COMMON,
    },
    "OutboundEngagementCreated": {
        "engagementId": S,
        "agentId": S,
        "dialogId": S,
        "destinationAddress": S,
        "channelProviderId": S,
        "channelId": S,
        "customerIdentifiers": _CUSTOMER_IDENTIFIERS,
        "engagementParameters": _free_object,
        **_COMMON,
    },
    # the schema declares no `id` for SingleStepTransfer: its `correlationId` identifies it
    "SingleStepTransfer": {
        "engagementId": S,
        "initiatingAgentId": S,
        "transferTo": S,
        "destination": S,
        "queueId": S,
        "queueName": S,
        "channelProviderId": S,
        "connectionId": S,
        "dialogId": S,
        "providerDialogId": S,
        "channelId": S,
        "correlationId": S,
        "timestamp": TS,
    },
    "SingleStepTransferError": {
        "engagementId": S,
        "initiatingAgentId": S,
        "transferTo": S,
        "errorType": S,
        "destination": S,
        "dialogId": S,
        "channelProviderId": S,
        "channelId": S,
        "correlationId": S,
        "title": S,
        "detail": S,
        **_COMMON,
    },
    "ChannelReady": {"agentId": S, "channelProviderId": S, "channelId": S, **_COMMON},
    "AfterContactWorkActivated": {
        "engagementId": S,
        "agentId": S,
        "dialogId": S,
        "connectionId": S,
        "channelProviderId": S,
        "channelId": S,
        **_COMMON,
    },
    "AfterContactWorkCompleted": {
        "engagementId": S,
        "agentId": S,
        "dialogId": S,
        "connectionId": S,
        "channelProviderId": S,
        "channelId": S,
        **_COMMON,
    },
}

#: The thirteen body events, in the document's order.
BODY_EVENTS: tuple[str, ...] = tuple(BODY_SCHEMAS)

_BODY_ALLOWED = {name: frozenset(fields) | {"event"} for name, fields in BODY_SCHEMAS.items()}

#: The notification envelope's fields (``body`` aside), all strings.
ENVELOPE_FIELDS: tuple[str, ...] = (
    "correlationId",
    "subscriptionId",
    "family",
    "sentAt",
    "accountId",
    "loginId",
    "initiatingLoginId",
    "destinationLoginId",
    "observedLoginId",
    "observingLoginId",
    "coachedLoginId",
    "coachingLoginId",
    "bargingLoginId",
)
_ENVELOPE: dict[str, Check] = {name: S for name in ENVELOPE_FIELDS}
_ENVELOPE_ALLOWED = frozenset(ENVELOPE_FIELDS) | {"body"}


def validate_notification(doc: Any, *, strict: bool = True) -> list[Problem]:
    """Every way ``doc`` breaks the Notification schema; empty when it is valid.

    With ``strict=False`` undeclared fields are tolerated (forward
    compatibility), everything else is still checked.
    """
    if not isinstance(doc, dict):
        return [Problem("not_an_object", f"a notification is a JSON object, not {_kind(doc)}")]
    problems: list[Problem] = []
    body = doc.get("body")
    if not isinstance(body, dict):
        reason = "missing_field" if body is None else "wrong_type"
        return [Problem(reason, f"notification.body: expected an object, got {_kind(body)}")]
    event = body.get("event")
    schema = BODY_SCHEMAS.get(event) if isinstance(event, str) else None
    if schema is None or not isinstance(event, str):
        if event is None:
            return [Problem("missing_field", "notification.body.event is missing")]
        return [Problem("unknown_event", f"body.event {event!r:.60} is not one of the 13 events")]
    _check_fields(doc, _ENVELOPE, _ENVELOPE_ALLOWED, "notification", problems, strict)
    _check_fields(body, schema, _BODY_ALLOWED[event], f"{event}", problems, strict)
    return problems


_AUTHENTICATION_FIELDS: dict[str, Check] = {"event": S, "subscriptionId": S, "token": S}
_PING_FIELDS: dict[str, Check] = {"event": S, "subscriptionId": S}


def validate_authentication(doc: Any) -> list[Problem]:
    """Problems of a client's ``authentication`` message (the simulator's check)."""
    if not isinstance(doc, dict):
        return [Problem("not_an_object", f"expected a JSON object, got {_kind(doc)}")]
    problems: list[Problem] = []
    if doc.get("event") != AUTHENTICATION:
        problems.append(Problem("wrong_event", f"event must be {AUTHENTICATION!r}"))
    for name in ("subscriptionId", "token"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            problems.append(Problem("missing_field", f"{name} is required (a string)"))
    _check_fields(
        doc, _AUTHENTICATION_FIELDS, frozenset(_AUTHENTICATION_FIELDS), "authentication",
        problems, True,
    )
    return problems


def validate_ping(doc: Any) -> list[Problem]:
    """Problems of a client's ``ping`` message (the simulator's check)."""
    if not isinstance(doc, dict) or doc.get("event") != PING:
        return [Problem("wrong_event", "expected a ping message")]
    problems: list[Problem] = []
    _check_fields(doc, _PING_FIELDS, frozenset(_PING_FIELDS), "ping", problems, True)
    return problems


# ---------------------------------------------------------------------------
# Telling server messages apart


class ServerMessage(StrEnum):
    """What a server-to-client message is, from its shape."""

    NOTIFICATION = "notification"
    PONG = "pong"
    AUTHENTICATION_RESPONSE = "authenticationResponse"
    UNKNOWN = "unknown"


def classify_server_message(doc: Any) -> ServerMessage:
    """Notifications have a ``body`` and no ``event``; the others have a constant ``event``."""
    if not isinstance(doc, dict):
        return ServerMessage.UNKNOWN
    event = doc.get("event")
    if event is None:
        return ServerMessage.NOTIFICATION if "body" in doc else ServerMessage.UNKNOWN
    if event == PONG:
        return ServerMessage.PONG
    if event == AUTHENTICATION_RESPONSE:
        return ServerMessage.AUTHENTICATION_RESPONSE
    return ServerMessage.UNKNOWN
