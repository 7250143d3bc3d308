"""The options of an ``enreach`` source, as written under ``options:`` in the config.

The subscriptions are checked here, so ``ccbus check`` reports a malformed
GUID, an unknown event name or an event that does not exist for that kind of
entity (``QueueStatus`` on a user) with file, line and a suggestion, before
anything connects::

    subscriptions:
      users:
        a1eeb030-ff4b-ea11-ac9c-00155d4fdcf3: [UserStatus, UserCallInComing]
      queues:
        c9eeb030-ff4b-ea11-ac9c-00155d4fdcf3: [QueueStatus]
      call_lists:
        0b5a1c7e-2f4b-ea11-ac9c-00155d4fdcf3: [CallbackChanged]

Timings are :data:`ccbus.Duration` values (``30s``, ``5m`` or seconds), which is
also what lets the tests run the reconnect machinery in milliseconds.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ccbus import Duration, Options, did_you_mean

from .protocol import ENTITY_TYPES, EVENTS, canonical_event_name, is_guid

__all__ = ["EnreachOptions", "SubscriptionsOptions", "check_event", "check_entity_id"]


def check_entity_id(value: str) -> str:
    """A GUID in any of .NET's usual forms, lower-cased; else a ValueError saying so."""
    if not is_guid(value):
        raise ValueError(f"{value!r} is not a GUID (entity ids are user, queue or call list ids)")
    return value.strip("{}()").lower()


def check_event(name: str, entity_type: str | None = None) -> str:
    """The document's spelling of ``name``; a ValueError with a suggestion if unknown.

    With ``entity_type`` (``User``, ``Queue``, ``CallList``), an event that exists
    only for another kind of entity is refused too: the hub would refuse it.
    """
    found = canonical_event_name(name)
    if found is None:
        close = did_you_mean(name, EVENTS)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(f"unknown event name {name!r}{hint}")
    if entity_type is not None and EVENTS[found].entity_type != entity_type:
        raise ValueError(
            f"event {found!r} is a {EVENTS[found].entity_type} event, "
            f"not available for a {entity_type} entity"
        )
    return found


class SubscriptionsOptions(Options):
    """Entity GUID -> event names, per kind of entity."""

    users: dict[str, list[str]] = Field(default_factory=dict)
    queues: dict[str, list[str]] = Field(default_factory=dict)
    call_lists: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("users", "queues", "call_lists", mode="after")
    @classmethod
    def _entities(cls, value: dict[str, list[str]], info: object) -> dict[str, list[str]]:
        entity_type = ENTITY_TYPES[getattr(info, "field_name", "users")]
        checked: dict[str, list[str]] = {}
        problems: list[str] = []
        for entity, names in value.items():
            try:
                key = check_entity_id(entity)
            except ValueError as err:
                problems.append(str(err))
                continue
            events: list[str] = []
            for name in names:
                try:
                    events.append(check_event(name, entity_type))
                except ValueError as err:
                    problems.append(f"{entity}: {err}")
            if not names:
                problems.append(f"{entity}: no event names")
            checked[key] = list(dict.fromkeys(checked.get(key, []) + events))
        if problems:
            raise ValueError("; ".join(problems))
        return checked

    def pairs(self) -> list[tuple[str, str]]:
        """Every (entity id, event name) pair, in config order."""
        return [
            (entity, event)
            for group in (self.users, self.queues, self.call_lists)
            for entity, events in group.items()
            for event in events
        ]


class EnreachOptions(Options):
    """Options of one ``enreach`` source instance (the plugin README explains each)."""

    #: The REST API base URL, e.g. ``https://api-silox.enreachvoice.com``.
    api_url: str
    #: REST API user name and secret (HTTP Basic) for ``GET /token/{user_id}/rte/``.
    username: str
    secret: str
    #: The ``{userid}`` of the token call: ``me`` or the user's GUID.
    user_id: str = "me"
    #: Override the hub URL the token call returns as ``WssEndpoint`` (labs, proxies).
    hub_url: str | None = None
    #: Entities and event names to subscribe to on every connection.
    subscriptions: SubscriptionsOptions = Field(default_factory=SubscriptionsOptions)

    #: Connect straight to the WebSocket, without the negotiate request.
    skip_negotiation: bool = False
    #: Send a SignalR ping this often (the server drops clients silent for 30 s).
    ping_every: Duration = 15.0
    #: No message from the hub (its SignalR pings included) for this long: the connection is dead.
    server_timeout: Duration = 30.0
    #: Token call, negotiate and WebSocket handshake, each.
    connect_timeout: Duration = 10.0
    #: How long a hub method (Subscribe, ...) may take to answer.
    invoke_timeout: Duration = 10.0
    #: First reconnect delay; doubles (with jitter) up to backoff_cap.
    backoff_initial: Duration = 0.5
    backoff_cap: Duration = 60.0
    #: Messages received but not yet routed; when full, reading from the hub pauses.
    max_pending: int = Field(default=1000, gt=0)
    #: How many recent event ids are remembered to drop duplicates.
    dedup_size: int = Field(default=10_000, gt=0)
    #: Drop events older than their MessageTTLSeconds when they arrive (the document's intent).
    drop_expired: bool = True
    #: Subscribe/Unsubscribe items per hub call.
    subscribe_batch: int = Field(default=100, gt=0)
    #: Verify the TLS certificates of the REST API and the hub (turn off only for a lab).
    verify_tls: bool = True

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if value != "me" and not is_guid(value):
            raise ValueError(f"user_id {value!r} must be 'me' or a user GUID")
        return value

    @field_validator("api_url", "hub_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(f"{value!r} is not an http(s):// or ws(s):// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _timings(self) -> EnreachOptions:
        if self.ping_every <= 0 or self.server_timeout <= 0:
            raise ValueError("'ping_every' and 'server_timeout' must be positive")
        return self
