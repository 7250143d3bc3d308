"""``MessageReceived`` payloads in, events out: check, drop duplicates and expired ones, map, emit.

Every message that cannot be used is counted under its reason, logged with
that reason and the source's name (the first ten of each reason, then every
hundredth, so a misbehaving hub cannot flood the journal) and, when it is
malformed, kept in the dead-letter file.  Nothing here raises for bad input:
the source keeps running.

* ``malformed``: not ``[{"subscription": ..., "data": {...}}]``, or no event type;
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
from datetime import UTC, datetime
from typing import Any

from ccbus import SourceContext

from .deadletters import DeadLetterFile
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
        self.dead_letters = DeadLetterFile(ctx.state_dir / "dead-letters.jsonl")
        self.dedup_size = dedup_size
        self.drop_expired = drop_expired
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: messages mapped, events emitted, and dropped messages per reason
        self.messages = 0
        self.emitted = 0
        self.dropped: Counter[str] = Counter()
        #: native events per type (what arrived, for tests and diagnosis)
        self.by_type: Counter[str] = Counter()
        self.pending_letters: list[tuple[str, str, str]] = []

    async def batch(self, batch: list[Any]) -> None:
        """Handle what the receive thread queued, in order."""
        emit = self.ctx.emit
        for arguments in batch:
            for event in self.events(arguments):
                await emit(event)
                self.emitted += 1
        if self.pending_letters:
            await self.flush_letters()

    def events(self, arguments: Any) -> list[Any]:
        """The events of one ``MessageReceived`` call (its argument list), or none."""
        received = datetime.now(UTC)
        message = arguments[0] if isinstance(arguments, list) and len(arguments) == 1 else None
        data = field(message, "Data") if isinstance(message, dict) else None
        if not isinstance(data, dict):
            self._drop("malformed", "expected one argument {subscription, data}", arguments)
            return []
        subscription = field(message, "Subscription")  # type: ignore[arg-type]
        if not isinstance(subscription, dict):
            subscription = {}
        raw_name = field(data, "EventType") or field(subscription, "EventType")
        if not isinstance(raw_name, str) or not _NAME.match(raw_name):
            self._drop("malformed", f"no usable EventType ({raw_name!r:.40})", arguments)
            return []
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

    # -- counting and keeping -----------------------------------------------------------

    def _count(self, reason: str, detail: str, *, level: str = "warning") -> bool:
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            getattr(self.ctx.log, level)(
                "enreach %s: %s: %s [%d %s so far]", self.ctx.name, reason, detail, count, reason
            )
            return True
        return False

    def _drop(self, reason: str, detail: str, message: Any) -> None:
        self._count(reason, detail)
        self.keep(reason, detail, json.dumps(message, default=str)[:65536])

    def malformed_frame(self, record: str, why: str) -> None:
        """A frame the hub protocol could not read (reported from the receive thread)."""
        self._count("malformed_frame", f"unreadable hub message ({why})")
        self.keep("malformed_frame", why, record[:65536])

    def keep(self, reason: str, detail: str, raw: str) -> None:
        """Queue a dead letter; :meth:`flush_letters` writes it through a worker thread."""
        self.pending_letters.append((reason, detail, raw))

    async def flush_letters(self) -> None:
        """Write the dead letters gathered so far (the loop never waits on the disk inline)."""
        letters, self.pending_letters = self.pending_letters, []
        for reason, detail, raw in letters:
            try:
                await self.dead_letters.add(reason, detail, raw)
            except OSError as err:  # a full disk must not stop the source
                self.ctx.log.error("enreach %s: cannot write dead letter: %s", self.ctx.name, err)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)
