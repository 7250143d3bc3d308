"""Built-in action ``emit``: raise a derived event back onto the bus.

Derived events are routed in the same step as the event that caused them,
so rules can be composed (one rule detects, others react) and ``ccbus test``
sees the whole chain.  A derived event's id is built from the original id,
the rule and the type, so a redelivered original derives the same id and is
deduplicated like any other event::

    do:
      - emit:
          type: ops.queue_overloaded
          subject: "{queue}"
          data: {queue: "{queue}", waiting: "{waiting}"}
"""

from __future__ import annotations

from typing import Any

from ccbus.actions.api import ActionContext, ActionSpec
from ccbus.config.schema import Options
from ccbus.errors import PermanentActionError
from ccbus.events.envelope import Event
from ccbus.hookspecs import hookimpl


class EmitParams(Options):
    type: str
    data: dict[str, Any] = {}
    subject: str | None = None


def derive(params: EmitParams, event: Event, rule: str) -> list[Event]:
    return [
        Event(
            type=params.type,
            source=event.source,
            id=f"{event.id}:{rule}:{params.type}",
            subject=params.subject if params.subject is not None else event.subject,
            data=dict(params.data),
            time=event.time,
            vendor="ccbus",
            extensions={"derivedfrom": event.id, "derivedby": rule},
        )
    ]


async def run(params: EmitParams, ctx: ActionContext) -> None:
    raise PermanentActionError("emit is routed inline by the pipeline and never queued")


@hookimpl
def register_actions() -> list[ActionSpec]:
    return [
        ActionSpec(
            name="emit",
            params=EmitParams,
            run=run,
            inline=derive,
            side_effects=False,
            description="Raise a derived event on the bus.",
        )
    ]
