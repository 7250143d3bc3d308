"""Per-key rule state (throttle, count, for), bounded in memory and kept across restarts.

In memory, each stateful rule keeps three ordered maps keyed by the rule's
``per`` value: sliding windows of match times (``count``), of fire times
(``throttle``), and pending or fired ``for`` timers.  Keys that have gone
quiet cost nothing for long: windows drop entries older than the window on
every touch and a periodic :meth:`StateTable.sweep` removes empty keys; past
``max_keys`` per rule the least recently used key is evicted (and counted).

On disk, :class:`SqliteStateStore` keeps the same state in the state
directory.  Changes are written behind, in batches (the bus flushes about
once a second and on shutdown), so routing never waits on the disk; a crash
loses at most the last batch of window updates, never a rule.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccbus.events.envelope import Event

__all__ = ["Pending", "RuleState", "SqliteStateStore", "StateTable"]

COUNT, THROTTLE, FOR = "count", "throttle", "for"
#: How long a ``for`` key that fired is remembered without its condition resetting.
FIRED_TTL = 86_400.0


@dataclass(slots=True)
class Pending:
    """A ``for`` timer: fire at ``deadline`` with ``event``; ``event`` None once fired."""

    deadline: float
    event: Event | None


@dataclass(slots=True)
class RuleState:
    """The per-key state of one rule."""

    signature: tuple[Any, ...]
    counts: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)
    throttles: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)
    pending: OrderedDict[str, Pending] = field(default_factory=OrderedDict)

    def maps(self) -> dict[str, OrderedDict[str, Any]]:
        return {COUNT: self.counts, THROTTLE: self.throttles, FOR: self.pending}

    def size(self) -> int:
        return len(self.counts) + len(self.throttles) + len(self.pending)


class StateTable:
    """All rules' per-key state, with LRU bounds and change tracking for persistence."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self.rules: dict[str, RuleState] = {}
        self.dirty: set[tuple[str, str, str]] = set()
        self.evicted = 0

    def for_rule(self, name: str, signature: tuple[Any, ...]) -> RuleState:
        """The state of rule ``name``; reset when the rule's gate changed shape."""
        state = self.rules.get(name)
        if state is None or state.signature != signature:
            if state is not None:
                self._forget(name, state)
            state = self.rules[name] = RuleState(signature)
        return state

    def retain(self, names: set[str]) -> None:
        """Drop the state of rules that no longer exist (after a reload)."""
        for name in list(self.rules):
            if name not in names:
                self._forget(name, self.rules.pop(name))

    def _forget(self, name: str, state: RuleState) -> None:
        for kind, mapping in state.maps().items():
            self.dirty.update((name, kind, key) for key in mapping)

    def touch(self, rule: str, kind: str, mapping: OrderedDict[str, Any], key: str) -> None:
        """Mark ``key`` used and changed; evict the least recently used beyond the bound."""
        mapping.move_to_end(key)
        self.dirty.add((rule, kind, key))
        while len(mapping) > self.max_keys:
            old, _ = mapping.popitem(last=False)
            self.dirty.add((rule, kind, old))
            self.evicted += 1

    def sweep(self, now: float, windows: dict[str, tuple[float, float]]) -> int:
        """Remove keys that have gone quiet; ``windows[rule] = (count_w, throttle_w)``.

        Count and throttle keys go once their window is empty.  A ``for`` key
        that fired and never saw its condition reset goes after
        :data:`FIRED_TTL`, so the rule may warn again about a key that is
        still in the same state a day later.  Pending timers always stay.
        """
        removed = 0
        for name, state in self.rules.items():
            count_window, throttle_window = windows.get(name, (0.0, 0.0))
            for kind, mapping, width in (
                (COUNT, state.counts, count_window),
                (THROTTLE, state.throttles, throttle_window),
            ):
                for key in [k for k, t in mapping.items() if not t or t[-1] <= now - width]:
                    del mapping[key]
                    self.dirty.add((name, kind, key))
                    removed += 1
            for key in [
                k
                for k, p in state.pending.items()
                if p.event is None and p.deadline <= now - FIRED_TTL
            ]:
                del state.pending[key]
                self.dirty.add((name, FOR, key))
                removed += 1
        return removed

    def keys(self) -> int:
        return sum(s.size() for s in self.rules.values())

    # -- persistence ------------------------------------------------------------

    def take_changes(self) -> list[tuple[str, str, str, str | None]]:
        """Rows to write: (rule, kind, key, JSON value or None to delete). Clears the dirty set."""
        rows = []
        for rule, kind, key in self.dirty:
            state = self.rules.get(rule)
            value = state.maps()[kind].get(key) if state else None
            rows.append((rule, kind, key, None if value is None else _dump(value)))
        self.dirty.clear()
        return rows

    def restore(
        self, rows: list[tuple[str, str, str, str]], signatures: dict[str, tuple[Any, ...]]
    ) -> int:
        """Load saved rows for rules that still exist with the same shape; returns rows used."""
        used = 0
        for rule, kind, key, value in rows:
            signature = signatures.get(rule)
            if signature is None or kind not in (COUNT, THROTTLE, FOR):
                continue
            state = self.for_rule(rule, signature)
            state.maps()[kind][key] = _load(kind, value)
            used += 1
        self.dirty.clear()
        return used


def _dump(value: Any) -> str:
    if isinstance(value, Pending):
        return json.dumps(
            {
                "deadline": value.deadline,
                "event": value.event.to_cloudevent() if value.event else None,
            }
        )
    return json.dumps(value)


def _load(kind: str, text: str) -> Any:
    value = json.loads(text)
    if kind == FOR:
        doc = value.get("event")
        event = None
        if doc:
            event = Event.from_dict(doc, default_source=str(doc.get("source", "")))
        return Pending(float(value["deadline"]), event)
    return [float(t) for t in value]


class SqliteStateStore:
    """Rule state in ``<state_dir>/rules.sqlite3`` (WAL: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS rule_state (rule TEXT, kind TEXT, key TEXT, "
                "value TEXT NOT NULL, PRIMARY KEY (rule, kind, key))"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def load(self) -> list[tuple[str, str, str, str]]:
        with self._connect() as db:
            return list(db.execute("SELECT rule, kind, key, value FROM rule_state"))

    def save(self, rows: list[tuple[str, str, str, str | None]]) -> None:
        """Apply changes in one transaction (call from a worker thread)."""
        if not rows:
            return
        db = self._connect()
        try:
            with db:
                db.executemany(
                    "INSERT INTO rule_state (rule, kind, key, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (rule, kind, key) DO UPDATE SET value = excluded.value",
                    [r for r in rows if r[3] is not None],
                )
                db.executemany(
                    "DELETE FROM rule_state WHERE rule = ? AND kind = ? AND key = ?",
                    [r[:3] for r in rows if r[3] is None],
                )
        finally:
            db.close()
