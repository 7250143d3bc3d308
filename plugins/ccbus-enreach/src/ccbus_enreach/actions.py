"""The actions ``enreach.subscribe``, ``enreach.unsubscribe`` and ``enreach.unsubscribe_all``.

They change the subscriptions of a running ``enreach`` source, on its hub
connection now and on every later one (the hub forgets subscriptions on
reconnect; the source restores them).  Entity ids and event names are
templates, checked once rendered: a rendered value that is not a GUID or not
an event of the document fails the call permanently (a dead letter saying
why), since retrying cannot make it valid::

    - name: follow-the-answering-agent
      on: enreach.UserCallInUserConnected
      do:
        - enreach.subscribe: {entity: "{UserId}", events: [UserStatus, UserCallInDisconnected]}

Every result is logged with the hub's message (``Invalid EntityId``,
``Invalid event name``, ``Unauthorized``).  A source that is not connected
keeps the change and applies it when it connects; that is a success.
"""

from __future__ import annotations

import logging

from pydantic import field_validator

from ccbus import ActionContext, ActionSpec, Options, PermanentActionError, RetryableActionError

from .errors import HubError, Transient
from .options import check_entity_id, check_event
from .source import EnreachSource, running_source

__all__ = ["actions"]

log = logging.getLogger("ccbus.action.enreach")


class SubscribeParams(Options):
    """One entity and the events to (un)subscribe it to."""

    entity: str
    events: list[str]
    #: The ``enreach`` source instance; may be left out when only one runs.
    source: str | None = None

    @field_validator("entity")
    @classmethod
    def _entity(cls, value: str) -> str:
        return check_entity_id(value)

    @field_validator("events", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _events(cls, value: object) -> object:
        if isinstance(value, str):  # `events: UserStatus` or a rendered "A, B"
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            if not value:
                raise ValueError("no event names")
            return [check_event(str(name)) for name in value]
        return value


class UnsubscribeAllParams(Options):
    source: str | None = None


def _source(name: str | None) -> EnreachSource:
    try:
        return running_source(name)
    except LookupError as err:
        if name is None or "several" in str(err):
            raise PermanentActionError(str(err)) from None
        # configured but not (yet) running: it may start
        raise RetryableActionError(str(err)) from None


async def subscribe(params: SubscribeParams, ctx: ActionContext) -> None:
    source = _source(params.source)
    pairs = [(params.entity, event) for event in params.events]
    try:
        results = await source.subscribe(pairs)
    except (Transient, HubError) as err:
        # kept in the source's wanted set: the next connection subscribes it
        ctx.log.warning(
            "enreach.subscribe (rule %s): %s; %s will subscribe when the source reconnects",
            ctx.rule,
            err,
            params.entity,
        )
        return
    if not results:
        ctx.log.info(
            "enreach.subscribe (rule %s): %s not connected; %s to %s will be subscribed on connect",
            ctx.rule,
            source.ctx.name,
            params.entity,
            ", ".join(params.events),
        )
        return
    for result in results:
        if result.subscribed:
            ctx.log.info(
                "enreach.subscribe (rule %s): %s subscribed to %s",
                ctx.rule,
                params.entity,
                result.event_name or "?",
            )
    refused = [r for r in results if not r.subscribed]
    if refused:
        reasons = "; ".join(f"{r.event_name}: {r.message}" for r in refused)
        raise PermanentActionError(f"the hub refused {params.entity}: {reasons}")


async def unsubscribe(params: SubscribeParams, ctx: ActionContext) -> None:
    source = _source(params.source)
    pairs = [(params.entity, event) for event in params.events]
    try:
        answer = await source.unsubscribe(pairs)
    except (Transient, HubError) as err:
        ctx.log.warning(
            "enreach.unsubscribe (rule %s): %s; not restored on the next connection", ctx.rule, err
        )
        return
    ctx.log.info(
        "enreach.unsubscribe (rule %s): %s from %s: %.300r",
        ctx.rule,
        params.entity,
        ", ".join(params.events),
        answer,
    )


async def unsubscribe_all(params: UnsubscribeAllParams, ctx: ActionContext) -> None:
    source = _source(params.source)
    try:
        answer = await source.unsubscribe_all()
    except (Transient, HubError) as err:
        ctx.log.warning(
            "enreach.unsubscribe_all (rule %s): %s; nothing is restored on the next connection",
            ctx.rule,
            err,
        )
        return
    ctx.log.info("enreach.unsubscribe_all (rule %s): %s: %.200r", ctx.rule, source.ctx.name, answer)


def _lane(params: SubscribeParams | UnsubscribeAllParams) -> str:
    return f"enreach:{params.source or '*'}"


def actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            name="enreach.subscribe",
            params=SubscribeParams,
            run=subscribe,
            target=_lane,
            description="Subscribe an Enreach entity (user, queue, call list) to RTE events.",
        ),
        ActionSpec(
            name="enreach.unsubscribe",
            params=SubscribeParams,
            run=unsubscribe,
            target=_lane,
            description="Unsubscribe an Enreach entity from RTE events.",
        ),
        ActionSpec(
            name="enreach.unsubscribe_all",
            params=UnsubscribeAllParams,
            run=unsubscribe_all,
            target=_lane,
            description="Remove every subscription of an Enreach source's hub connection.",
        ),
    ]
