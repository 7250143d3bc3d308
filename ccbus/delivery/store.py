"""Where pending calls and dead letters live: SQLite in WAL mode, or memory.

One file, ``<state_dir>/delivery.sqlite3``, with two tables: ``outbox``
(calls recorded but not yet delivered) and ``dead_letters`` (calls that will
not be tried again without an admin).  Neither holds a secret: a call's
parameters are stored with references in place of the secrets they carry
(:class:`ccbus.config.secrets.SecretBook`), resolved when the call is sent.
``ccbus dead-letters`` works on the same file, whether the bus is running
or not: WAL lets a reader and the bus's writer work side by side, and the
bus picks up a retried dead letter on its next poll.

WAL with ``synchronous=NORMAL`` survives the process being killed (the
crash test does exactly that); ``delivery.synchronous: full`` also survives
power loss, at the cost of an fsync per commit.

The methods are synchronous and thread-safe (one connection, one lock).
With ``synchronous=NORMAL`` a commit in WAL mode writes to the page cache
and never waits for the disk, so the dispatcher calls the store directly on
the event loop: a write costs about 30 µs of CPU there, where the hop to a
worker thread alone cost about 170 µs (measured, see docs/delivery.md).  The
one step that does wait for the disk, the checkpoint that copies the WAL
back into the database and fsyncs it, is taken off the loop: automatic
checkpoints are off and the dispatcher calls :meth:`checkpoint` in a worker
thread, on a connection of its own.  With ``synchronous=FULL`` every commit
fsyncs, so ``blocking`` is true and every call goes to a worker thread.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ccbus.config.secrets import SecretBook
from ccbus.delivery.outage import storage_error

__all__ = [
    "DeadLetter",
    "DeliveryStore",
    "MemoryDeliveryStore",
    "Pending",
    "SqliteDeliveryStore",
    "StateDirError",
]

#: WAL frames (pages of 4 KiB) past which a checkpoint makes the writer wait for it.
WAL_RESTART_FRAMES = 8192
#: Bytes the startup probe writes (and removes): room for a large call.
PROBE_BYTES = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    idx INTEGER NOT NULL,
    lane TEXT NOT NULL,
    params TEXT NOT NULL,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    next_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    secrets TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    idx INTEGER NOT NULL,
    lane TEXT NOT NULL,
    params TEXT,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created REAL NOT NULL,
    failed_at REAL NOT NULL,
    reason TEXT NOT NULL,
    secrets TEXT NOT NULL DEFAULT ''
);
"""
#: Columns added since the first release, added to an older file when it is opened.
#: ``secrets``: the references of :meth:`ccbus.config.secrets.SecretBook.seal_json`
#: (empty in rows written before: their parameters hold plain values, and send as they are).
ADDED_COLUMNS = {
    "outbox": [("secrets", "TEXT NOT NULL DEFAULT ''")],
    "dead_letters": [("secrets", "TEXT NOT NULL DEFAULT ''")],
}


class StateDirError(OSError):
    """The state directory cannot hold the outbox (missing, unwritable, full)."""


@dataclass(slots=True)
class Pending:
    """One recorded call (a row of the outbox)."""

    key: str
    rule: str
    action: str
    index: int
    lane: str
    #: JSON of the rendered, validated parameters, secrets as placeholders (see ``secrets``)
    params: str
    event: str  # JSON of the event (CloudEvents structure)
    created: float
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""
    id: int = 0
    #: JSON of the references to secrets in ``params`` (``""``: none, or a row from
    #: before references, whose parameters hold plain values).
    secrets: str = ""
    #: The call itself, kept by a store that holds rows in memory instead of
    #: ``params`` and ``event`` (left empty): no JSON for a row never written.
    call: Any = None

    def materialize(self, book: SecretBook | None = None) -> None:
        """Fill ``params`` (sealed by ``book``) and ``event`` from ``call``, for a dead
        letter of a memory store."""
        if self.call is not None and not self.event:
            params = self.call.params.model_dump_json(by_alias=True)
            self.params, self.secrets = (book or SecretBook()).seal_json(params)
            self.event = event_json(self.call.event)


def event_json(event: Any) -> str:
    """An event as stored with its call: the CloudEvents structure, time in ISO 8601."""
    doc = event.to_cloudevent()
    doc["time"] = event.time.isoformat()
    return json.dumps(doc, default=str)


@dataclass(slots=True)
class DeadLetter:
    """A call that will not be tried again until an admin says so."""

    id: int
    key: str
    rule: str
    action: str
    index: int
    lane: str
    params: str | None  # None when the parameters never rendered
    event: str
    attempts: int
    created: float
    failed_at: float
    reason: str
    #: References to the secrets in ``params`` (see :attr:`Pending.secrets`).
    secrets: str = ""


class DeliveryStore(Protocol):
    """What the dispatcher needs from a store (SQLite or memory)."""

    #: True when calls wait for the disk (the dispatcher then runs them in a thread).
    blocking: bool
    #: True when rows stay in this process: they may carry ``call`` instead of JSON.
    keeps_calls: bool
    #: True when a delivered call is best forgotten at once rather than in a batch
    #: (memory: a dict pop; SQLite saves a transaction per call by batching).
    forgets_each: bool

    def add(self, rows: list[Pending]) -> list[int]: ...
    def due(self, now: float, limit: int, skip: set[int],
            full_lanes: Collection[str] = ()) -> list[Pending]:
        """Up to ``limit`` calls due by ``now``, soonest first, leaving out the ids in
        ``skip`` and the calls of ``full_lanes`` (lanes with no room in memory)."""
    def done(self, row_ids: list[int]) -> None: ...
    def checkpoint(self) -> None: ...
    def retry_later(self, row_id: int, next_at: float, attempts: int, error: str) -> None: ...
    def bury(self, row_id: int, reason: str, attempts: int) -> None: ...
    def bury_unrendered(self, row: Pending, reason: str) -> None: ...
    def pending_count(self) -> int: ...
    def dead_count(self) -> int: ...


class SqliteDeliveryStore:
    """The durable store: survives crashes, shared with ``ccbus dead-letters``."""

    keeps_calls = False
    forgets_each = False

    def __init__(self, path: Path, *, synchronous: str = "normal", probe: bool = True) -> None:
        """Open (or create) the outbox at ``path``.

        ``probe``: write a large row and remove it, to find a full disk now
        (``ccbus run``), not with the first event; commands that only read
        (``ccbus dead-letters list``) skip it, so they work on a full disk too.
        An outbox that opens but cannot take that write is left open with
        :attr:`full` saying why: the bus starts in a storage outage and
        resumes when there is space (see :mod:`ccbus.delivery.outage`).
        """
        self.path = path
        self.blocking = synchronous.lower() == "full"
        #: Why the startup probe could not write (the disk is full), else None.
        self.full: str | None = None
        self._lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # calls may hold secrets
            self._db = sqlite3.connect(
                path, check_same_thread=False, timeout=10, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            if not self.blocking:
                self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint() does it
            self._db.executescript(SCHEMA)
            self._upgrade()
            if probe:
                try:
                    self.probe()
                except sqlite3.Error as err:
                    self.full = storage_error(err)
                    if self.full is None:
                        raise
        except (OSError, sqlite3.Error) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise StateDirError(
                f"cannot keep the delivery outbox at {path}: {reason} "
                "(check state_dir: it must be a writable directory with "
                "free space)"
            ) from None

    def _upgrade(self) -> None:
        """Add the columns a file written by an older ccbus lacks (its rows stay deliverable)."""
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def probe(self) -> None:
        """Write a row as large as a big call and remove it, in one transaction.

        Opening an existing outbox writes nothing, and an empty transaction
        commits even on a full disk, so only a real write finds out that the
        first event's calls could not be recorded, and finds it now, before
        any source connects.  The commit puts every page the row touched in
        the WAL (the row is never visible to anyone).  During a storage
        outage the bus probes with it too, to find out when space returns.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO outbox (key, rule, action, idx, lane, params, event, created, "
                    "next_at) VALUES ('ccbus:startup-probe', '', '', 0, '', zeroblob(?), '', "
                    "0, 0)",
                    (PROBE_BYTES,),
                )
                self._db.execute("DELETE FROM outbox WHERE key = 'ccbus:startup-probe'")
                self._db.execute("COMMIT")
            except BaseException:
                self._abort()
                raise

    def _abort(self) -> None:
        """Roll back after a failed statement, unless SQLite already did: a COMMIT
        that fails on a full disk may, and a second ROLLBACK would then raise an
        error of its own in place of the one worth reporting."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._checkpointer is not None:
                self._checkpointer.close()

    def checkpoint(self) -> None:
        """Copy the WAL back into the database (waits for the disk: call it in a thread).

        A passive checkpoint on a second connection never blocks the writer on
        the loop, and once it has copied all of the WAL, the next write starts
        the WAL over from its beginning, so the file stops growing.  Under
        writes that never pause it cannot catch up, though: past
        ``WAL_RESTART_FRAMES`` a restarting checkpoint makes the writer wait
        (a few milliseconds) while it finishes, which bounds the file.
        """
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                self.path, check_same_thread=False, timeout=10, isolation_level=None
            )
        _, frames, _ = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > WAL_RESTART_FRAMES:
            self._checkpointer.execute("PRAGMA wal_checkpoint(RESTART)")

    def add(self, rows: list[Pending]) -> list[int]:
        """Record calls in one transaction; returns the new row ids (0 for a known key)."""
        ids = []
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for row in rows:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO outbox (key, rule, action, idx, lane, params, "
                        "event, attempts, created, next_at, secrets) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            row.key,
                            row.rule,
                            row.action,
                            row.index,
                            row.lane,
                            row.params,
                            row.event,
                            row.attempts,
                            row.created,
                            row.next_at,
                            row.secrets,
                        ),
                    )
                    ids.append(cursor.lastrowid if cursor.rowcount else 0)
                self._db.execute("COMMIT")
            except BaseException:
                self._abort()
                raise
        return [i or 0 for i in ids]

    def due(self, now: float, limit: int, skip: set[int],
            full_lanes: Collection[str] = ()) -> list[Pending]:
        """Two steps: the ids and lanes of what is due (small rows; the skipped ones
        left out in Python), then the whole rows of the chosen.  Fetching whole rows
        for every id in ``skip`` as well (thousands behind a dead target) made each
        poll hold the store's lock long enough to slow every ``add``."""
        with self._lock:
            lanes = tuple(full_lanes)
            where = "next_at <= ?"
            if lanes:
                where += f" AND lane NOT IN ({','.join('?' * len(lanes))})"
            chosen: list[int] = []
            for row_id, in self._db.execute(
                f"SELECT id FROM outbox WHERE {where} ORDER BY next_at LIMIT ?",  # noqa: S608
                (now, *lanes, limit + len(skip)),
            ):
                if row_id not in skip:
                    chosen.append(row_id)
                    if len(chosen) >= limit:
                        break
            rows: list[Pending] = []
            for start in range(0, len(chosen), 500):
                part = chosen[start:start + 500]
                rows.extend(Pending(*r) for r in self._db.execute(
                    "SELECT key, rule, action, idx, lane, params, event, created, attempts, "
                    f"next_at, last_error, id, secrets FROM outbox WHERE id IN "  # noqa: S608
                    f"({','.join('?' * len(part))})", part))
        rows.sort(key=lambda r: r.next_at)
        return rows

    def done(self, row_ids: list[int]) -> None:
        """Forget delivered calls, in one transaction (the dispatcher batches them)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in row_ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._abort()
                raise

    def retry_later(self, row_id: int, next_at: float, attempts: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET next_at = ?, attempts = ?, last_error = ? WHERE id = ?",
                (next_at, attempts, error[:2000], row_id),
            )

    def bury(self, row_id: int, reason: str, attempts: int) -> None:
        """Move an outbox row to the dead letters."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO dead_letters (key, rule, action, idx, lane, params, event, "
                    "attempts, created, failed_at, reason, secrets) SELECT key, rule, action, "
                    "idx, lane, params, event, ?, created, ?, ?, secrets FROM outbox WHERE id = ?",
                    (attempts, time.time(), reason[:4000], row_id),
                )
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._abort()
                raise

    def bury_unrendered(self, row: Pending, reason: str) -> None:
        """A call whose parameters never rendered goes straight to the dead letters."""
        with self._lock:
            self._db.execute(
                "INSERT INTO dead_letters (key, rule, action, idx, lane, params, event, "
                "attempts, created, failed_at, reason) VALUES (?,?,?,?,?,NULL,?,0,?,?,?)",
                (
                    row.key,
                    row.rule,
                    row.action,
                    row.index,
                    row.lane,
                    row.event,
                    row.created,
                    time.time(),
                    reason[:4000],
                ),
            )

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def dead_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    # -- for `ccbus dead-letters` ---------------------------------------------------

    def dead_letters(self, ids: Iterable[int] | None = None) -> list[DeadLetter]:
        query = (
            "SELECT id, key, rule, action, idx, lane, params, event, attempts, created, "
            "failed_at, reason, secrets FROM dead_letters"
        )
        with self._lock:
            if ids is None:
                rows = self._db.execute(query + " ORDER BY id").fetchall()
            else:
                wanted = list(ids)
                marks = ",".join("?" * len(wanted))
                rows = self._db.execute(
                    f"{query} WHERE id IN ({marks}) ORDER BY id", wanted
                ).fetchall()
        return [DeadLetter(*r) for r in rows]

    def resurrect(self, ids: Iterable[int]) -> list[int]:
        """Move dead letters back to the outbox, due now with fresh attempts.

        Returns the ids moved; dead letters without parameters (never
        rendered) cannot be retried and are left where they are.
        """
        moved = []
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            for letter_id in ids:
                row = self._db.execute(
                    "SELECT key, rule, action, idx, lane, params, event, secrets "
                    "FROM dead_letters WHERE id = ? AND params IS NOT NULL",
                    (letter_id,),
                ).fetchone()
                if row is None:
                    continue
                self._db.execute(
                    "INSERT OR REPLACE INTO outbox (key, rule, action, idx, lane, "
                    "params, event, secrets, attempts, created, next_at) "
                    "VALUES (?,?,?,?,?,?,?,?,0,?,?)",
                    (*row, now, now),
                )
                self._db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
                moved.append(letter_id)
            self._db.execute("COMMIT")
        return moved

    def purge(self, ids: Iterable[int] | None = None, older_than: float | None = None) -> int:
        with self._lock:
            if ids is not None:
                wanted = list(ids)
                marks = ",".join("?" * len(wanted))
                cursor = self._db.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", wanted)
            else:
                cursor = self._db.execute(
                    "DELETE FROM dead_letters WHERE failed_at <= ?",
                    (older_than if older_than is not None else 1e18,),
                )
            return int(cursor.rowcount)


@dataclass(slots=True)
class MemoryDeliveryStore:
    """The store with ``delivery.outbox: false``: same behaviour, nothing survives a crash."""

    blocking = False
    keeps_calls = True
    forgets_each = True

    rows: dict[int, Pending] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    dead: list[DeadLetter] = field(default_factory=list)
    #: Seals the parameters of a call that becomes a dead letter (the rows in memory
    #: hold the call itself; a dead letter is shown, so it holds references).
    book: SecretBook = field(default_factory=SecretBook)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add(self, rows: list[Pending]) -> list[int]:
        ids = []
        for row in rows:
            if row.key in self.keys:
                ids.append(0)
                continue
            row.id = next(self._ids)
            self.rows[row.id] = row
            self.keys.add(row.key)
            ids.append(row.id)
        return ids

    def due(self, now: float, limit: int, skip: set[int],
            full_lanes: Collection[str] = ()) -> list[Pending]:
        ready = sorted(
            (r for r in self.rows.values()
             if r.next_at <= now and r.id not in skip and r.lane not in full_lanes),
            key=lambda r: r.next_at,
        )
        return ready[:limit]

    def done(self, row_ids: list[int]) -> None:
        for row_id in row_ids:
            row = self.rows.pop(row_id, None)
            if row is not None:
                self.keys.discard(row.key)

    def checkpoint(self) -> None:
        """Nothing to copy: memory is not written back anywhere."""

    def retry_later(self, row_id: int, next_at: float, attempts: int, error: str) -> None:
        row = self.rows[row_id]
        row.next_at, row.attempts, row.last_error = next_at, attempts, error

    def bury(self, row_id: int, reason: str, attempts: int) -> None:
        row = self.rows.pop(row_id)
        self.keys.discard(row.key)
        self._letter(row, row.params, attempts, reason)

    def bury_unrendered(self, row: Pending, reason: str) -> None:
        self._letter(row, None, 0, reason)

    def _letter(self, row: Pending, params: str | None, attempts: int, reason: str) -> None:
        if params is not None:
            row.materialize(self.book)
            params = row.params
        self.dead.append(
            DeadLetter(
                id=len(self.dead) + 1,
                key=row.key,
                rule=row.rule,
                action=row.action,
                index=row.index,
                lane=row.lane,
                params=params,
                event=row.event,
                attempts=attempts,
                created=row.created,
                failed_at=time.time(),
                reason=reason,
                secrets=row.secrets if params is not None else "",
            )
        )

    def pending_count(self) -> int:
        return len(self.rows)

    def dead_count(self) -> int:
        return len(self.dead)
