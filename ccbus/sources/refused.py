"""Refused input: what a source cannot use becomes a dead letter and a counter, never a stop.

One message must never stop a source.  A malformed frame, text that is not
UTF-8, JSON nested a hundred thousand levels deep, a mapping bug that raises
on one vendor payload: each of these, left alone, would make the source raise,
restart, read the same message again and stop for good (a broker redelivers
what was never acknowledged).  So every source runs the decoding and mapping
of one message through :meth:`Refusals.convert` (``ctx.convert`` on its
context), which turns *any* exception into a refusal:

* counted on ``/metrics`` as ``ccbus_source_bad_input_total{source,reason}``;
* logged with the source, the reason and where the message came from (the
  first few of each reason, then one in a hundred, so a flood cannot fill
  the journal);
* kept in ``<state_dir>/sources/<name>/dead-letters.jsonl`` with when, why,
  where and the message itself (truncated past 64 KiB), so an admin can see
  exactly what the peer sent.

The source then acknowledges or commits the message as usual and goes on.
``ctx.convert`` guards decoding and mapping only: a failure to *record* the
events (``ctx.emit``) is the bus's and must not be acknowledged, so it stays
outside.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from ccbus.errors import RefusedInput

__all__ = ["DeadLetterFile", "Refusals"]

T = TypeVar("T")

#: A dead-letter file is moved to ``.1`` past this size: two files at most.
MAX_BYTES = 1024 * 1024
#: A message longer than this is kept truncated (the reason says why it was refused).
MAX_MESSAGE_CHARS = 64 * 1024
#: Log the first this many refusals of each reason, then one in :data:`LOG_EVERY`.
LOG_FIRST = 5
LOG_EVERY = 100
#: The detail of an unexpected exception is cut to this many characters.
MAX_DETAIL_CHARS = 500


class DeadLetterFile:
    """A bounded JSON Lines file of refused messages, written off the event loop."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.written = 0

    async def add(self, reason: str, detail: str, message: str | bytes | None,
                  where: dict[str, Any] | None = None) -> None:
        """Append one record: when, why (``reason`` is the counter's label), where, and what."""
        if isinstance(message, bytes | bytearray):
            text = bytes(message).decode("utf-8", "replace")
        else:
            text = message or ""
        record = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": reason,
            "detail": detail,
            **(where or {}),
            "message": text[:MAX_MESSAGE_CHARS],
            "truncated": len(text) > MAX_MESSAGE_CHARS,
        }
        # ensure_ascii: a lone surrogate in a message must not make the line unwritable
        line = json.dumps(record, ensure_ascii=True, default=str) + "\n"
        await anyio.to_thread.run_sync(self._append, line)
        self.written += 1

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.path.stat().st_size + len(line) > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line)

    def read(self) -> list[dict[str, Any]]:
        """The records in the current file, oldest first (for tests and tooling)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class Refusals:
    """One source's refused input: counted, logged, dead-lettered.

    Example, in a source's receive loop::

        events = await ctx.convert(frame.body, lambda: mapper.map(decode_json(frame.body)),
                                   topic=frame.destination)
        for event in events or ():
            await ctx.emit(event)
        await conn.ack(frame)          # refused or not: the message is dealt with
    """

    def __init__(self, source: str, log: logging.Logger, state_dir: Path,
                 count: Callable[[str], None]) -> None:
        self.source = source
        self.log = log
        self.count = count
        self.counts: Counter[str] = Counter()
        self.dead_letters = DeadLetterFile(state_dir / "dead-letters.jsonl")

    async def refuse(self, reason: str, detail: str, message: str | bytes | None = None,
                     **where: Any) -> None:
        """Count, log and dead-letter one message that cannot be used."""
        self.counts[reason] += 1
        self.count(reason)
        seen = self.counts[reason]
        if seen <= LOG_FIRST or seen % LOG_EVERY == 0:
            origin = ", ".join(f"{k} {v}" for k, v in where.items() if v is not None)
            self.log.warning(
                "source %s: refused a message (%s)%s: %s [%d %s so far; kept in %s]",
                self.source, reason, f" from {origin}" if origin else "", detail[:200],
                seen, reason, self.dead_letters.path,
            )
        try:
            await self.dead_letters.add(reason, detail, message, where)
        except OSError as err:  # a full disk must not stop the source
            self.log.error("source %s: cannot write a dead letter: %s", self.source, err)

    async def convert(self, message: str | bytes | None, convert: Callable[[], T],
                      **where: Any) -> T | None:
        """``convert()`` (decode and map one message), or None when the message is refused.

        :class:`~ccbus.errors.RefusedInput` refuses it with its own reason; any other
        exception (a ``RecursionError`` from a deeply nested body, a bug in a mapping)
        with the reason ``unreadable`` and the exception as the detail.  Cancellation
        and ``KeyboardInterrupt`` pass through.
        """
        try:
            return convert()
        except RefusedInput as err:
            await self.refuse(err.reason, err.detail, message, **where)
        except Exception as err:  # noqa: BLE001 - one message must never stop a source
            detail = f"{type(err).__name__}: {_safe_text(err)}"[:MAX_DETAIL_CHARS]
            await self.refuse("unreadable", detail, message, **where)
        return None


def _safe_text(err: BaseException) -> str:
    """``str(err)``, or its type when even that fails (a RecursionError can)."""
    try:
        return str(err)
    except Exception:  # noqa: BLE001
        return type(err).__name__
