"""One notification in, events out: decode, validate, map, emit; or count, log and keep it.

Shared by both transports (WebSocket and webhook), so a notification is
treated the same whichever way it arrived.  A message that breaks the
schema never stops the source: it is counted under its reason
(``rejected["unknown_field"]`` ...), logged with that reason (the first ten
of each reason, then every hundredth, so a misbehaving peer cannot flood
the journal) and appended to the dead-letter file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from ccbus import SourceContext, decode_json

from .deadletters import DeadLetterFile
from .mapping import Mapper
from .protocol import Problem, validate_notification

__all__ = ["INVALID", "Intake"]

#: What :meth:`Intake.decode` returns for text that is not JSON.
INVALID: Any = object()

LOG_FIRST = 10
LOG_EVERY = 100


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
        self.dead_letters = DeadLetterFile(ctx.state_dir / "dead-letters.jsonl")
        #: valid notifications mapped, events emitted, and rejected messages per reason
        self.notifications = 0
        self.emitted = 0
        self.rejected: Counter[str] = Counter()

    async def decode(self, raw: str | bytes) -> Any:
        """The JSON document in ``raw``, or :data:`INVALID` (already counted and kept)."""
        try:
            return decode_json(raw)
        except (ValueError, UnicodeDecodeError) as err:
            await self.reject([Problem("invalid_json", str(err))], raw)
            return INVALID

    async def notification(self, doc: Any, raw: str | bytes) -> bool:
        """Validate, map and emit one notification; False if it was rejected."""
        problems = validate_notification(doc, strict=self.strict)
        if problems:
            await self.reject(problems, raw)
            return False
        events = self.mapper.map(doc, datetime.now(UTC), raw)
        self.notifications += 1
        emit = self.ctx.emit
        for event in events:
            await emit(event)
        self.emitted += len(events)
        return True

    async def reject(self, problems: list[Problem], raw: str | bytes) -> None:
        """Count, log and dead-letter a message that cannot be used."""
        reasons = sorted({p.reason for p in problems})
        for reason in reasons:
            self.rejected[reason] += 1
        detail = "; ".join(p.detail for p in problems[:5])
        if len(problems) > 5:
            detail += f"; and {len(problems) - 5} more"
        first = reasons[0]
        count = self.rejected[first]
        if count <= LOG_FIRST or count % LOG_EVERY == 0:
            self.ctx.log.warning(
                "avaya %s: rejected a message (%s): %s [%d %s so far; kept in %s]",
                self.ctx.name,
                ", ".join(reasons),
                detail,
                count,
                first,
                self.dead_letters.path,
            )
        try:
            await self.dead_letters.add(",".join(reasons), detail, raw)
        except OSError as err:  # a full disk must not stop the source
            self.ctx.log.error("avaya %s: cannot write dead letter: %s", self.ctx.name, err)
