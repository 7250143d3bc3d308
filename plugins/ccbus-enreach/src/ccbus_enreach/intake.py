"""``MessageReceived`` payloads in, events out: check, drop duplicates and expired ones, map, emit.

Each message is checked and mapped inside ccbus's ``ctx.convert`` (see
:mod:`ccbus.sources.refused`): whatever that raises makes the message a dead
letter instead of stopping the source.  Refused messages are counted on
``/metrics`` as ``ccbus_source_bad_input_total{source,reason}``, logged
(rate-limited) and kept in ``dead-letters.jsonl`` in the source's state
directory, with the frame as the hub sent it:

* ``malformed``: not ``[{"subscription": ..., "data": {...}}]``, or no event type;
* ``malformed_frame``: a frame the JSON hub protocol could not read at all
  (reported by the receive thread, see :class:`~ccbus_enreach.hub.TolerantJsonHubProtocol`);
* ``unreadable``: checking or mapping the message raised (a bug, or a payload
  no one foresaw).

Messages that are fine but not routed are only counted (``dropped``, in the
source's status) and logged with their reason and the source's name (the
first ten of each reason, then every hundredth):

* ``unknown_event``: a well-formed event the document does not list; it is
  still emitted as ``enreach.<EventType>`` (rules may want it), and counted;
* ``duplicate``: an ``Id`` seen among the last ``dedup_size`` events;
* ``expired``: older than its ``MessageTTLSeconds`` when it arrived (the
  document's TTL: the event no longer describes the present).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ccbus import Event, RefusedInput, SourceContext

from .mapping import Mapper, timestamp
from .protocol import canonical_event_name, field

__all__ = ["Intake"]

LOG_FIRST = 10
LOG_EVERY = 100
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")


class Intake:
    def __init__(
        self,
        ctx: SourceContext,
        *,
        dedup_size: int = 10_000,
        drop_expired: bool = True,
    ) -> None:
        self.ctx = ctx
        self.mapper = Mapper(ctx.name)
        self.dedup_size = dedup_size
        self.drop_expired = drop_expired
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: messages mapped, events emitted, and messages not routed per reason (refused
        #: ones are in ``ctx.refusals.counts``)
        self.messages = 0
        self.emitted = 0
        self.dropped: Counter[str] = Counter()
        #: native events per type (what arrived, for tests and diagnosis)
        self.by_type: Counter[str] = Counter()

    async def batch(self, batch: Iterable[Any]) -> None:
        """Handle what the receive thread queued, in order.

        Each message is checked and mapped inside ``ctx.convert``: one that
        raises is a dead letter, and the next one is handled.  ``emit`` stays
        outside: a failure to record events is the bus's, not the message's.
        """
        ctx = self.ctx
        for arguments in batch:
            events: list[Event] | None = await ctx.convert(
                _raw(arguments), partial(self.events, arguments), method="MessageReceived"
            )
            for event in events or ():
                await ctx.emit(event)
                self.emitted += 1

    def events(self, arguments: Any) -> list[Event]:
        """The events of one ``MessageReceived`` call (its argument list), or none.

        Raises :class:`~ccbus.RefusedInput` (``malformed``) for a message that
        is not one; call it inside ``ctx.convert``, as :meth:`batch` does.
        """
        received = datetime.now(UTC)
        message = arguments[0] if isinstance(arguments, list) and len(arguments) == 1 else None
        data = field(message, "Data") if isinstance(message, dict) else None
        if not isinstance(data, dict):
            raise RefusedInput("malformed", "expected one argument {subscription, data}")
        subscription = field(message, "Subscription")  # type: ignore[arg-type]
        if not isinstance(subscription, dict):
            subscription = {}
        raw_name = field(data, "EventType") or field(subscription, "EventType")
        if not isinstance(raw_name, str) or not _NAME.match(raw_name):
            raise RefusedInput("malformed", f"no usable EventType ({raw_name!r:.40})")
        name = canonical_event_name(raw_name)
        if name is None:
            self._count("unknown_event", f"event {raw_name!r} is not in the RTE document")
            name = raw_name
        event_id = _text(field(data, "Id"))
        if event_id is None:
            event_id = "sha1-" + hashlib.sha1(
                json.dumps(data, sort_keys=True, default=str).encode(), usedforsecurity=False
            ).hexdigest()
        seen = self._seen
        if event_id in seen:
            seen.move_to_end(event_id)
            self._count("duplicate", f"{name} {event_id} again", level="debug")
            return []
        seen[event_id] = None
        if len(seen) > self.dedup_size:
            seen.popitem(last=False)
        moment = timestamp(data)
        if self.drop_expired and moment is not None:
            ttl = field(data, "MessageTTLSeconds")
            if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0:
                age = (received - moment).total_seconds()
                if age > ttl:
                    self._count(
                        "expired",
                        f"{name} {event_id} arrived {age:.0f}s after its Timestamp "
                        f"(MessageTTLSeconds {ttl:g})",
                    )
                    return []
        subject = _text(field(data, "EntityId")) or _text(field(subscription, "EntityId"))
        entity_type = _text(field(data, "EntityType")) or _text(
            field(subscription, "EntityType")
        )
        self.messages += 1
        self.by_type[name] += 1
        return self.mapper.map(name, event_id, subject, data, received, moment, entity_type)

    # -- counting and refusing -----------------------------------------------------------

    def _count(self, reason: str, detail: str, *, level: str = "warning") -> bool:
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            getattr(self.ctx.log, level)(
                "enreach %s: %s: %s [%d %s so far]", self.ctx.name, reason, detail, count, reason
            )
            return True
        return False

    async def malformed_frame(self, record: str, why: str) -> None:
        """A frame the hub protocol could not read (reported from the receive thread)."""
        await self.ctx.refuse("malformed_frame", f"unreadable hub message ({why})", record)


def _raw(arguments: Any) -> str:
    """The message as a dead letter keeps it: the frame it came in, else its JSON."""
    raw = getattr(arguments, "raw", None)
    if isinstance(raw, str):
        return raw
    try:
        return json.dumps(arguments, default=str)
    except Exception:  # noqa: BLE001 - too deep to write out: say what it was
        return repr(type(arguments))


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)
