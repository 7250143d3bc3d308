"""One message in, events out: decode, classify, validate and map, inside ``ctx.convert``.

Shared by both transports (WebSocket and webhook), so a notification is
treated the same whichever way it arrived.  The conversion of one message
runs inside the core's ``ctx.convert``: a message that breaks the schema
raises :class:`~ccbus.RefusedInput` with its reason (``invalid_json``,
``unknown_field`` ...), and any other exception (a bug in a mapping, say) is
refused as ``unreadable``.  Either way the message never stops the source:
the core counts it on ``/metrics`` (``ccbus_source_bad_input_total``), logs
it rate-limited and keeps it in ``dead-letters.jsonl``; ``ctx.refusals``
holds the counts.  Emitting the events stays outside the conversion: a
failure to record them is the bus's, not the message's.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ccbus import Event, RefusedInput, SourceContext, decode_json

from .mapping import Mapper
from .protocol import Problem, ServerMessage, classify_server_message, validate_notification

__all__ = ["Converted", "Intake", "refusal", "unknown"]

#: At most this many problems are spelt out in a refusal's detail.
DETAIL_PROBLEMS = 5


@dataclass(slots=True)
class Converted:
    """What one message turned out to be; ``events`` only for a notification."""

    kind: ServerMessage
    doc: Any
    events: list[Event] = field(default_factory=list)


class Intake:
    def __init__(
        self,
        ctx: SourceContext,
        *,
        strict: bool = True,
        call_channels: Collection[str] = ("Voice",),
    ) -> None:
        self.ctx = ctx
        self.strict = strict
        self.mapper = Mapper(ctx.name, call_channels=call_channels)
        #: valid notifications mapped and events emitted (refusals: ``ctx.refusals.counts``)
        self.notifications = 0
        self.emitted = 0

    # -- inside ctx.convert: raise to refuse ----------------------------------------------

    def decode(self, raw: str | bytes) -> Any:
        """The JSON document in ``raw``; :class:`RefusedInput` ``invalid_json`` if there is none."""
        try:
            return decode_json(raw)
        except ValueError as err:  # UnicodeDecodeError and too deep a nesting included
            raise RefusedInput("invalid_json", str(err)) from None

    def convert(self, raw: str | bytes) -> Converted:
        """Decode and classify one WebSocket message; map it if it is a notification."""
        doc = self.decode(raw)
        kind = classify_server_message(doc)
        if kind is ServerMessage.UNKNOWN:
            raise refusal([unknown(doc)])
        if kind is ServerMessage.NOTIFICATION:
            return Converted(kind, doc, self.map(doc, raw))
        return Converted(kind, doc)

    def convert_posted(self, item: Any, raw: str | bytes | None = None) -> list[Event]:
        """Map one notification of a webhook post (``raw``: the item's text, if it is the body)."""
        if classify_server_message(item) is not ServerMessage.NOTIFICATION:
            raise RefusedInput("unknown_message", "a webhook post carries notifications only")
        return self.map(item, json.dumps(item).encode() if raw is None else raw)

    def map(self, doc: Any, raw: str | bytes) -> list[Event]:
        """Validate and map one notification; :class:`RefusedInput` if it breaks the schema."""
        problems = validate_notification(doc, strict=self.strict)
        if problems:
            raise refusal(problems)
        events = self.mapper.map(doc, datetime.now(UTC), raw)
        self.notifications += 1
        return events

    # -- outside: the bus's part ------------------------------------------------------------

    async def emit(self, events: list[Event]) -> None:
        emit = self.ctx.emit
        for event in events:
            await emit(event)
        self.emitted += len(events)


def refusal(problems: list[Problem]) -> RefusedInput:
    """One refusal for a message's problems, counted under the first reason (alphabetically).

    The detail lists every problem (the first few), whatever their reasons.
    """
    reasons = sorted({p.reason for p in problems})
    detail = "; ".join(p.detail for p in problems[:DETAIL_PROBLEMS])
    if len(problems) > DETAIL_PROBLEMS:
        detail += f"; and {len(problems) - DETAIL_PROBLEMS} more"
    if len(reasons) > 1:
        detail += f" (also {', '.join(reasons[1:])})"
    return RefusedInput(reasons[0], detail)


def unknown(doc: Any) -> Problem:
    event = doc.get("event") if isinstance(doc, dict) else None
    if event is not None:
        return Problem("unknown_message", f"unexpected message event {event!r:.60}")
    return Problem(
        "unknown_message", "neither a notification, a pong nor an authenticationResponse"
    )
