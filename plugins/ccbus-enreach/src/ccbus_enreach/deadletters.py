"""A small JSON Lines file of the messages that could not be used, each with its reason.

Kept in the source's state directory (``<state_dir>/sources/<name>/``) so an
admin can see exactly what the Enreach hub sent when a counter says messages were
rejected.  It is bounded: past ``max_bytes`` the file is moved to ``.1``
(replacing the previous one), so two files at most, whatever arrives.
Writes go through a worker thread: the event loop never waits on the disk.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread

__all__ = ["DeadLetterFile"]

MAX_BYTES = 1024 * 1024
#: A message longer than this is kept truncated (the reason says why it was refused).
MAX_MESSAGE_CHARS = 64 * 1024


class DeadLetterFile:
    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.written = 0

    async def add(self, reason: str, detail: str, message: str | bytes) -> None:
        """Append one record: when, why (``reason`` is the counter's label), and the message."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        record = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": reason,
            "detail": detail,
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

    def read(self) -> list[dict[str, object]]:
        """The records in the current file, oldest first (for tests and tooling)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
