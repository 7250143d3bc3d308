"""What the Enreach RTE document defines, in one place the source, the simulator and the
options all read: event names per entity type, the hub's method names, its validation
messages, and the two spellings of every field.

The event catalogue (``catalogue.json``, next to this module) was taken from the
document's User, Queue and CallList sections: for each event its entity type and
the document's example payload (the simulator builds its events from them).

Field names: the document shows payloads both in PascalCase (the per-event
sections, written from the C# classes) and in camelCase (the ``MessageReceived``
example, which is what ASP.NET Core's JSON hub protocol puts on the wire).
:func:`field` reads either spelling, so nothing here depends on which one a
server uses.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "ENTITY_TYPES",
    "EVENTS",
    "EVENT_ALIASES",
    "HUB_METHODS",
    "INVALID_ENTITY",
    "INVALID_EVENT",
    "MESSAGE_RECEIVED",
    "UNAUTHORIZED",
    "EventInfo",
    "SubscriptionResult",
    "canonical_event_name",
    "example_payload",
    "field",
    "is_guid",
]

#: The only hub-to-client method the RTE hub calls.
MESSAGE_RECEIVED = "MessageReceived"
#: Client-to-hub methods, as the document's "Hub Methods" table names them.
HUB_METHODS = (
    "Subscribe",
    "Unsubscribe",
    "UnsubscribeAll",
    "AvailableSubscriptions",
    "ActiveSubscriptions",
)
#: The hub's validation messages (``SubscriptionResult.message``), checked in this order.
INVALID_ENTITY = "Invalid EntityId"
INVALID_EVENT = "Invalid event name"
UNAUTHORIZED = "Unauthorized"

#: Config spelling -> the document's entity type.
ENTITY_TYPES = {"users": "User", "queues": "Queue", "call_lists": "CallList"}


@dataclass(frozen=True, slots=True)
class EventInfo:
    name: str
    #: ``User``, ``Queue`` or ``CallList``: the only entity type the event exists for.
    entity_type: str


def _load_catalogue() -> dict[str, dict[str, Any]]:
    text = resources.files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8")
    catalogue: dict[str, dict[str, Any]] = json.loads(text)
    return catalogue


_CATALOGUE = _load_catalogue()

#: Every event of the document, by name.
EVENTS: dict[str, EventInfo] = {
    name: EventInfo(name, entry["entity"]) for name, entry in _CATALOGUE.items()
}
#: The document heads one section "UserTerminalStatusEvent" while its payload's
#: EventType says "UserTerminalStatus": both names are accepted, the second is canonical.
EVENT_ALIASES = {"UserTerminalStatusEvent": "UserTerminalStatus"}
EVENTS["UserTerminalStatus"] = EventInfo("UserTerminalStatus", "User")

_BY_LOWER = {name.lower(): name for name in EVENTS}


def event_fields() -> dict[str, list[str] | None]:
    """Each event's fields, as the document's example payload has them (None: no example)."""
    fields: dict[str, list[str] | None] = {
        name: sorted(entry.get("example") or {}) or None for name, entry in _CATALOGUE.items()
    }
    fields["UserTerminalStatus"] = fields.get("UserTerminalStatusEvent")
    return fields


def canonical_event_name(name: str) -> str | None:
    """The document's spelling of an event name (the hub ignores case), or None if unknown."""
    found = _BY_LOWER.get(name.lower())
    if found is None:
        return None
    return EVENT_ALIASES.get(found, found)


def example_payload(name: str) -> dict[str, Any]:
    """A fresh copy of the document's example payload for ``name`` (PascalCase).

    The document gives no example for ``UserWrapUpRequestInitiate``; its
    table's fields are used instead.
    """
    key = "UserTerminalStatusEvent" if name == "UserTerminalStatus" else name
    entry = _CATALOGUE.get(key, {})
    example = entry.get("example")
    if example is None:
        example = {
            "RootEntityType": "Organization",
            "RootEntityId": "00000000-0000-0000-0000-000000000000",
            "EventType": name,
            "EntityType": "User",
            "EntityId": "00000000-0000-0000-0000-000000000000",
            "AllowWithoutCall": 0,
            "CallBackId": None,
            "CallBackListId": None,
            "CallId": None,
            "LegId": "Example LegId",
            "MaxWrapUpTimeSec": 0,
            "OrganizationId": "00000000-0000-0000-0000-000000000000",
            "QueueId": None,
            "UserId": "00000000-0000-0000-0000-000000000000",
            "WrapUpId": "00000000-0000-0000-0000-000000000000",
            "Id": "00000000-0000-0000-0000-000000000000",
            "Timestamp": "2020-01-01T12:00:00Z",
            "MessageTTLSeconds": -1,
        }
    return json.loads(json.dumps(example))  # type: ignore[no-any-return]


_GUID = re.compile(
    r"^[{(]?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}[)}]?$"
)


def is_guid(value: Any) -> bool:
    """What .NET's ``Guid.TryParse`` accepts in its common forms (D, N, B, P)."""
    if not isinstance(value, str) or not _GUID.match(value):
        return False
    try:
        uuid.UUID(value.strip("{}()"))
    except ValueError:
        return False
    return True


_CAMEL: dict[str, str] = {}


def _camel(name: str) -> str:
    camel = _CAMEL.get(name)
    if camel is None:
        camel = _CAMEL[name] = name[:1].lower() + name[1:]
    return camel


def field(doc: dict[str, Any], pascal: str) -> Any:
    """``doc[camelCase]``, else ``doc[pascal]``: the document uses both spellings.

    camelCase first: it is what the hub's JSON protocol sends.  On every
    message's hot path, hence the memoised spelling.
    """
    value = doc.get(_CAMEL.get(pascal) or _camel(pascal))
    if value is None:
        value = doc.get(pascal)
    return value


@dataclass(frozen=True, slots=True)
class SubscriptionResult:
    """One item of what ``Subscribe``/``Unsubscribe`` return."""

    subscribed: bool
    message: str | None
    entity_id: str
    event_name: str

    @classmethod
    def parse(cls, item: Any) -> SubscriptionResult | None:
        """Either spelling; None when ``item`` is not a SubscriptionResult at all."""
        if not isinstance(item, dict):
            return None
        subscribed = field(item, "Subscribed")
        if not isinstance(subscribed, bool):
            return None
        message = field(item, "Message")
        return cls(
            subscribed=subscribed,
            message=str(message) if message is not None else None,
            entity_id=str(field(item, "EntityId") or ""),
            event_name=str(field(item, "EventName") or ""),
        )
