"""A small JSON Lines file of the records that could not be used, with where they were.

Kept in the source's state directory (``<state_dir>/sources/<name>/``).  Each
line names the record's topic, partition and offset, so an admin can fetch
the original from the broker (``kcat -C -t T -p P -o O -c 1``) while the
partition itself moves on: a poison record is kept here and committed
past, never retried forever.  The file is bounded: past ``max_bytes`` it is
moved to ``.1`` (replacing the previous one), so two files at most.  Writes
go through a worker thread: the event loop never waits on the disk.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

__all__ = ["DeadLetterFile"]

MAX_BYTES = 1024 * 1024
#: A record longer than this is kept truncated (the reason says why it was refused).
MAX_MESSAGE_CHARS = 64 * 1024


class DeadLetterFile:
    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.written = 0

    async def add(
        self, reason: str, detail: str, message: bytes | None, where: dict[str, Any]
    ) -> None:
        """Append one record: when, why (``reason`` is the counter's label), where, and what."""
        text = "" if message is None else message.decode("utf-8", "replace")
        record = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": reason,
            "detail": detail,
            **where,
            "message": text[:MAX_MESSAGE_CHARS],
            "truncated": len(text) > MAX_MESSAGE_CHARS,
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
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
