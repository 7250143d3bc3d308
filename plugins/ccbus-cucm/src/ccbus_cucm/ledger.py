"""What was sent and what was answered, per action call, on disk.

The outbox runs an action *at least* once: it retries after a timeout, after
an error, and after a crash between the call finishing and the outbox
forgetting it.  Call control must not follow that blindly: a second
``MakeCall`` dials a second time.  So every command is written here, keyed
by the call's idempotency key (stable across retries), before it is sent:

- when its correlated answer was a success, a retry returns that answer and
  sends nothing;
- while a previous send has not expired (its JMS time-to-live), a retry
  waits for that send's answer instead of sending again: the broker discards
  an expired command, so after expiry a resend cannot be a second execution;
- a late answer (after the action gave up waiting) is still recorded, so the
  next retry finds it.

SQLite in the source's state directory, so this survives a restart; rows are
dropped after ``remember_answers``.  Calls are made from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "Sent"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    key TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    command TEXT NOT NULL,
    sent_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    answered_at REAL,
    outcome TEXT,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS commands_correlation ON commands (correlation_id);
"""


@dataclass(frozen=True, slots=True)
class Sent:
    """The last send recorded for one call."""

    key: str
    correlation_id: str
    command: str
    sent_at: float
    expires_at: float
    answered_at: float | None
    #: ``ok`` or ``error`` once answered.
    outcome: str | None
    answer: dict[str, Any] | None


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, key: str) -> Sent | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key, correlation_id, command, sent_at, expires_at, answered_at, outcome,"
                " answer FROM commands WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        answer = json.loads(row[7]) if row[7] else None
        return Sent(row[0], row[1], row[2], row[3], row[4], row[5], row[6], answer)

    def sending(self, key: str, correlation_id: str, command: str, ttl: float) -> None:
        """Record a send before it happens (a crash mid-send still leaves the expiry)."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO commands (key, correlation_id, command, sent_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?)",
                (key, correlation_id, command, now, now + ttl),
            )

    def answered(self, correlation_id: str, outcome: str, answer: dict[str, Any]) -> bool:
        """Record the answer to ``correlation_id``; False if it is not one of ours.

        The first answer wins: later events correlated to the same command
        (Login raises three) do not overwrite it.
        """
        with self._lock:
            cursor = self._db.execute(
                "UPDATE commands SET answered_at = ?, outcome = ?, answer = ?"
                " WHERE correlation_id = ? AND answered_at IS NULL",
                (time.time(), outcome, json.dumps(answer, default=str), correlation_id),
            )
        return cursor.rowcount > 0

    def prune(self, older_than: float) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM commands WHERE sent_at < ?", (time.time() - older_than,)
            )
        return cursor.rowcount

    def get_by_correlation(self, correlation_id: str) -> Sent | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key FROM commands WHERE correlation_id = ?", (correlation_id,)
            ).fetchone()
        return self.get(row[0]) if row else None
