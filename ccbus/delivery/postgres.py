"""A group's shared state in PostgreSQL: schema, fenced connections, the outbox, rule state.

Driver: psycopg 3.  The stores' protocols (:class:`~ccbus.delivery.store.DeliveryStore`,
the rule state store) are synchronous and already run in worker threads when
``blocking`` is true, so psycopg's synchronous API fits them as they are; it is
libpq underneath, so the DSN means exactly what it means to ``psql`` (several
hosts, ``target_session_attrs=read-write``, ``PGPASSFILE``, TLS settings), and
its async API is there for the lease loop if it is ever wanted.  asyncpg would
have meant an async store protocol and its own DSN dialect.

**Fencing.** Every table a leader writes has a statement trigger,
``ccbus_fence()``, that reads the group's lease row ``FOR SHARE`` and refuses
the statement (SQLSTATE ``CCB01``) unless the session's ``ccbus.group``,
``ccbus.instance`` and ``ccbus.epoch`` settings name the current leader and
epoch.  The database decides, not the client: a deposed leader that wakes up
from SIGSTOP with a write half-sent cannot land it.  ``FOR SHARE`` also makes a
takeover (an ``UPDATE`` of the lease row) wait for writes in progress, so a
write either commits under the old epoch before the takeover or is refused
after it; there is no window in between.

**Timeouts** (set on every connection, see :func:`connect`):
``idle_in_transaction_session_timeout`` ends the session of a leader frozen
inside a transaction (SIGSTOP, a stalled VM): its ``FOR SHARE`` lock on the
lease row would otherwise block every takeover for as long as it sleeps.
``statement_timeout`` and ``lock_timeout`` bound a statement that waits (on a
lock or a failing disk) so the leader notices in time to step down before its
lease runs out; TCP keepalives and ``tcp_user_timeout`` do the same for a
database host that vanished without closing the connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable
from typing import Any

try:
    import psycopg
except ImportError as err:  # an optional extra: say how to get it
    raise ImportError(
        "cluster: (a group on PostgreSQL) needs psycopg: pip install 'ccbus[postgres]'"
    ) from err

from ccbus.config.cluster import ClusterConfig
from ccbus.delivery.store import DeadLetter, Pending

__all__ = [
    "FENCED",
    "Fenced",
    "PostgresDeliveryStore",
    "PostgresStateStore",
    "connect",
    "migrate",
]

#: SQLSTATE of a write refused by the fence.
FENCED = "CCB01"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS ccbus_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS ccbus_lease (
    grp text PRIMARY KEY,
    leader text NOT NULL DEFAULT '',
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT 'epoch',
    acquired_at timestamptz
);
CREATE TABLE IF NOT EXISTS ccbus_members (
    grp text NOT NULL,
    instance text NOT NULL,
    role text NOT NULL,
    epoch bigint NOT NULL,
    digest text NOT NULL,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (grp, instance)
);
CREATE TABLE IF NOT EXISTS ccbus_outbox (
    id bigserial PRIMARY KEY,
    grp text NOT NULL,
    key text NOT NULL,
    rule text NOT NULL,
    action text NOT NULL,
    idx integer NOT NULL,
    lane text NOT NULL,
    params text NOT NULL,
    event text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    created double precision NOT NULL,
    next_at double precision NOT NULL,
    last_error text NOT NULL DEFAULT '',
    epoch bigint NOT NULL,
    secrets text NOT NULL DEFAULT '',
    UNIQUE (grp, key)
);
CREATE INDEX IF NOT EXISTS ccbus_outbox_due ON ccbus_outbox (grp, next_at);
CREATE TABLE IF NOT EXISTS ccbus_dead_letters (
    id bigserial PRIMARY KEY,
    grp text NOT NULL,
    key text NOT NULL,
    rule text NOT NULL,
    action text NOT NULL,
    idx integer NOT NULL,
    lane text NOT NULL,
    params text,
    event text NOT NULL,
    attempts integer NOT NULL,
    created double precision NOT NULL,
    failed_at double precision NOT NULL,
    reason text NOT NULL,
    epoch bigint NOT NULL,
    secrets text NOT NULL DEFAULT ''
);
ALTER TABLE ccbus_outbox ADD COLUMN IF NOT EXISTS secrets text NOT NULL DEFAULT '';
ALTER TABLE ccbus_dead_letters ADD COLUMN IF NOT EXISTS secrets text NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS ccbus_rule_state (
    grp text NOT NULL,
    rule text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    epoch bigint NOT NULL,
    PRIMARY KEY (grp, rule, kind, key)
);
CREATE TABLE IF NOT EXISTS ccbus_seen (
    grp text NOT NULL,
    source text NOT NULL,
    id text NOT NULL,
    seen_at double precision NOT NULL,
    PRIMARY KEY (grp, source, id)
);
CREATE INDEX IF NOT EXISTS ccbus_seen_at ON ccbus_seen (grp, seen_at);
CREATE OR REPLACE FUNCTION ccbus_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
    PERFORM 1 FROM ccbus_lease
     WHERE grp = current_setting('ccbus.group', true)
       AND leader = current_setting('ccbus.instance', true)
       AND epoch = nullif(current_setting('ccbus.epoch', true), '')::bigint
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ccbus: write refused: epoch % of % in group % is not the current lease',
            current_setting('ccbus.epoch', true), current_setting('ccbus.instance', true),
            current_setting('ccbus.group', true)
            USING ERRCODE = 'CCB01';
    END IF;
    RETURN NULL;
END
$fence$;
CREATE OR REPLACE TRIGGER ccbus_outbox_fence BEFORE INSERT OR UPDATE OR DELETE
    ON ccbus_outbox FOR EACH STATEMENT EXECUTE FUNCTION ccbus_fence();
CREATE OR REPLACE TRIGGER ccbus_dead_letters_fence BEFORE INSERT OR UPDATE OR DELETE
    ON ccbus_dead_letters FOR EACH STATEMENT EXECUTE FUNCTION ccbus_fence();
CREATE OR REPLACE TRIGGER ccbus_rule_state_fence BEFORE INSERT OR UPDATE OR DELETE
    ON ccbus_rule_state FOR EACH STATEMENT EXECUTE FUNCTION ccbus_fence();
CREATE OR REPLACE TRIGGER ccbus_seen_fence BEFORE INSERT OR UPDATE OR DELETE
    ON ccbus_seen FOR EACH STATEMENT EXECUTE FUNCTION ccbus_fence();
"""


class Fenced(RuntimeError):
    """A write was refused because this instance's epoch is no longer the group's."""


def connect(cluster: ClusterConfig) -> psycopg.Connection[Any]:
    """A connection with the timeouts a leader needs to step down in time (see the module doc).

    Each bound is a third of the lease: a statement that cannot finish in
    that time is abandoned while the leader still holds its lease.
    """
    third_ms = max(500, int(cluster.lease_ttl * 1000 / 3))
    options = " ".join(
        f"-c {name}={third_ms}"
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
    )
    return psycopg.connect(
        cluster.dsn,
        autocommit=True,
        connect_timeout=max(2, int(cluster.lease_ttl / 3)),
        application_name=f"ccbus {cluster.group}/{cluster.instance}",
        options=options,
        keepalives=1,
        keepalives_idle=max(1, int(cluster.lease_ttl / 5)),
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout=third_ms,
    )


def migrate(conn: psycopg.Connection[Any], group: str) -> None:
    """Create the schema (idempotent; one instance at a time) and the group's lease row."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('ccbus-schema'))")
        conn.execute(SCHEMA)  # a literal, no parameters
        if conn.execute("SELECT count(*) FROM ccbus_schema").fetchone() == (0,):
            conn.execute("INSERT INTO ccbus_schema VALUES (%s)", (SCHEMA_VERSION,))
        conn.execute(
            "INSERT INTO ccbus_lease (grp) VALUES (%s) ON CONFLICT (grp) DO NOTHING", (group,)
        )


def set_epoch(conn: psycopg.Connection[Any], group: str, instance: str, epoch: int) -> None:
    """Make ``conn``'s writes carry ``epoch``: the fence compares it with the lease's."""
    conn.execute(
        "SELECT set_config('ccbus.group', %s, false), set_config('ccbus.instance', %s, false), "
        "set_config('ccbus.epoch', %s, false)",
        (group, instance, str(epoch)),
    )


def _fenced(err: psycopg.Error) -> bool:
    return getattr(err, "sqlstate", None) == FENCED


class _Fenced:
    """A writer connection (every write under the current epoch) and a reader connection.

    Commits always wait for the WAL flush (``synchronous_commit`` stays on,
    whatever ``delivery.synchronous`` says): a group exists to survive the
    loss of a host, the database's included, and with ``synchronous_commit =
    off`` a database crash loses the last fraction of a second of calls that
    sources had already acknowledged (tests/test_group_failover.py caught
    exactly that when it stopped the server in immediate mode).
    """

    def __init__(self, cluster: ClusterConfig, epoch: int) -> None:
        self.cluster = cluster
        self.group = cluster.group
        self.epoch = epoch
        self._lock = threading.Lock()
        self._conn = connect(cluster)
        set_epoch(self._conn, cluster.group, cluster.instance, epoch)
        self._read_lock = threading.Lock()
        self._reader = connect(cluster)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._conn.close()
            self._reader.close()

    def _write(self, statements: list[tuple[str, Any]]) -> list[Any]:
        """Run ``statements`` in one transaction; :class:`Fenced` if the lease moved on."""
        with self._lock:
            return self._write_locked(statements)

    def _write_locked(self, statements: list[tuple[str, Any]]) -> list[Any]:
        results: list[Any] = []
        try:  # pipeline mode: BEGIN, the statements and COMMIT in one round trip
            with self._conn.pipeline(), self._conn.transaction():
                cursors = [self._conn.execute(sql, params) for sql, params in statements]
            for cursor in cursors:
                results.append(cursor.fetchall() if cursor.description else None)
        except psycopg.Error as err:
            if _fenced(err):
                raise Fenced(str(err).splitlines()[0]) from None
            raise
        return results

    def _read(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()


#: What a row of the outbox reads back as (:class:`~ccbus.delivery.store.Pending`): the
#: parameters hold secrets as placeholders, ``secrets`` says where (ccbus.config.secrets).
_COLUMNS = ("key, rule, action, idx, lane, params, event, created, attempts, next_at, "
            "last_error, id, secrets")


class _Batch:
    """Calls that concurrent :meth:`PostgresDeliveryStore.add` callers commit together."""

    def __init__(self) -> None:
        self.rows: list[Pending] = []
        self.claimed = False
        self.done = threading.Event()
        self.ids: list[int] = []
        self.error: BaseException | None = None


class PostgresDeliveryStore(_Fenced):
    """The outbox and dead letters of a group, shared by its members (the leader writes)."""

    blocking = True
    keeps_calls = False
    forgets_each = False

    def __init__(self, cluster: ClusterConfig, epoch: int) -> None:
        super().__init__(cluster, epoch)
        self._batching = threading.Lock()
        self._open = _Batch()

    def add(self, rows: list[Pending]) -> list[int]:
        """Record calls; returns once they are committed (0 for a key already recorded).

        Group commit: callers that arrive while a commit is under way join
        the next batch, and its first caller commits them all in one
        transaction, so concurrent sources are not held to one round trip
        and one commit each.  No timer: a lone caller commits at once.
        """
        with self._batching:
            batch = self._open
            start = len(batch.rows)
            batch.rows.extend(rows)
            leads, batch.claimed = not batch.claimed, True
        if leads:
            with self._lock:  # the previous batch has committed: close this one
                with self._batching:
                    self._open = _Batch()
                try:
                    batch.ids = self._add(batch.rows)
                except BaseException as err:
                    batch.error = err
                finally:
                    batch.done.set()
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.ids[start:start + len(rows)]

    def _add(self, rows: list[Pending]) -> list[int]:
        """Record calls in one transaction; 0 for a key already recorded.

        The ids of the calls' events go into ``ccbus_seen`` in the same
        transaction: the next leader loads them into its duplicate window, so
        an event that a sender re-sends after a failover (its answer was lost
        with the old leader) is not routed twice.
        """
        if not rows:
            return []
        keys = [r.key for r in rows]
        inserted, _ = self._write_locked([(
            "INSERT INTO ccbus_outbox (grp, key, rule, action, idx, lane, params, event, "
            "attempts, created, next_at, secrets, epoch) SELECT %s, * , %s FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[], "
            "%s::text[], %s::int[], %s::float8[], %s::float8[], %s::text[]) "
            "ON CONFLICT (grp, key) DO NOTHING RETURNING key, id",
            (self.group, self.epoch, keys, [r.rule for r in rows], [r.action for r in rows],
             [r.index for r in rows], [r.lane for r in rows], [r.params for r in rows],
             [r.event for r in rows], [r.attempts for r in rows], [r.created for r in rows],
             [r.next_at for r in rows], [r.secrets for r in rows]),
        ), (
            "INSERT INTO ccbus_seen (grp, source, id, seen_at) SELECT DISTINCT ON (s, i) %s, s, i,"
            " t FROM (SELECT e::jsonb ->> 'source' AS s, e::jsonb ->> 'id' AS i, t FROM unnest("
            "%s::text[], %s::float8[]) AS u(e, t)) AS v WHERE s IS NOT NULL AND i IS NOT NULL"
            " ON CONFLICT (grp, source, id) DO NOTHING",
            (self.group, list({r.event: None for r in rows}),
             [r.created for r in {r.event: r for r in rows}.values()]),
        )])
        ids = dict(inserted)
        return [int(ids.get(k, 0)) for k in keys]

    def due(self, now: float, limit: int, skip: set[int],
            full_lanes: Collection[str] = ()) -> list[Pending]:
        """Calls due now, oldest first, none of ``skip`` nor of a lane whose queue is full."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM ccbus_outbox WHERE grp = %s AND next_at <= %s "
            "AND NOT (id = ANY(%s)) AND NOT (lane = ANY(%s)) ORDER BY next_at LIMIT %s",
            (self.group, now, list(skip), list(full_lanes), limit),
        )
        return [Pending(*r) for r in rows]

    def done(self, row_ids: list[int]) -> None:
        self._write([("DELETE FROM ccbus_outbox WHERE grp = %s AND id = ANY(%s)",
                      (self.group, row_ids))])

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    def retry_later(self, row_id: int, next_at: float, attempts: int, error: str) -> None:
        self._write([(
            "UPDATE ccbus_outbox SET next_at = %s, attempts = %s, last_error = %s, epoch = %s "
            "WHERE id = %s",
            (next_at, attempts, error[:2000], self.epoch, row_id),
        )])

    def bury(self, row_id: int, reason: str, attempts: int) -> None:
        self._write([
            ("INSERT INTO ccbus_dead_letters (grp, key, rule, action, idx, lane, params, event, "
             "attempts, created, failed_at, reason, epoch, secrets) SELECT grp, key, rule, "
             "action, idx, lane, params, event, %s, created, %s, %s, %s, secrets "
             "FROM ccbus_outbox WHERE id = %s",
             (attempts, time.time(), reason[:4000], self.epoch, row_id)),
            ("DELETE FROM ccbus_outbox WHERE id = %s", (row_id,)),
        ])

    def bury_unrendered(self, row: Pending, reason: str) -> None:
        self._write([(
            "INSERT INTO ccbus_dead_letters (grp, key, rule, action, idx, lane, params, event, "
            "attempts, created, failed_at, reason, epoch) "
            "VALUES (%s, %s, %s, %s, %s, %s, NULL, %s, 0, %s, %s, %s, %s)",
            (self.group, row.key, row.rule, row.action, row.index, row.lane, row.event,
             row.created, time.time(), reason[:4000], self.epoch),
        )])

    def pending_count(self) -> int:
        return int(self._read("SELECT count(*) FROM ccbus_outbox WHERE grp = %s",
                              (self.group,))[0][0])

    def dead_count(self) -> int:
        return int(self._read("SELECT count(*) FROM ccbus_dead_letters WHERE grp = %s",
                              (self.group,))[0][0])

    def dead_letters(self, ids: Iterable[int] | None = None) -> list[DeadLetter]:
        query = ("SELECT id, key, rule, action, idx, lane, params, event, attempts, created, "
                 "failed_at, reason, secrets FROM ccbus_dead_letters WHERE grp = %s")
        if ids is None:
            return [DeadLetter(*r) for r in self._read(query + " ORDER BY id", (self.group,))]
        return [DeadLetter(*r) for r in self._read(query + " AND id = ANY(%s) ORDER BY id",
                                                    (self.group, list(ids)))]


class PostgresStateStore(_Fenced):
    """Rule state (``count``, ``throttle`` windows, ``for`` timers) of a group."""

    def seen(self, since: float) -> list[tuple[str, str, float]]:
        """The duplicate window: events whose calls were recorded since ``since``, oldest first."""
        return [(str(r[0]), str(r[1]), float(r[2])) for r in self._read(
            "SELECT source, id, seen_at FROM ccbus_seen WHERE grp = %s AND seen_at >= %s"
            " ORDER BY seen_at", (self.group, since))]

    def forget_seen(self, before: float) -> None:
        """Drop ids older than the duplicate window."""
        self._write([("DELETE FROM ccbus_seen WHERE grp = %s AND seen_at < %s",
                      (self.group, before))])

    def load(self) -> list[tuple[str, str, str, str]]:
        return [(r[0], r[1], r[2], r[3]) for r in self._read(
            "SELECT rule, kind, key, value FROM ccbus_rule_state WHERE grp = %s", (self.group,))]

    def save(self, rows: list[tuple[str, str, str, str | None]]) -> None:
        """Apply changes in one transaction (call from a worker thread)."""
        if not rows:
            return
        kept = [r for r in rows if r[3] is not None]
        gone = [r for r in rows if r[3] is None]
        self._write([
            ("INSERT INTO ccbus_rule_state (grp, rule, kind, key, value, epoch) "
             "SELECT %s, r, k, y, v, %s FROM unnest(%s::text[], %s::text[], %s::text[], "
             "%s::text[]) AS t(r, k, y, v) ON CONFLICT (grp, rule, kind, key) "
             "DO UPDATE SET value = excluded.value, epoch = excluded.epoch",
             (self.group, self.epoch, [r[0] for r in kept], [r[1] for r in kept],
              [r[2] for r in kept], [r[3] for r in kept])),
            ("DELETE FROM ccbus_rule_state s USING unnest(%s::text[], %s::text[], %s::text[]) "
             "AS t(r, k, y) WHERE s.grp = %s AND s.rule = t.r AND s.kind = t.k AND s.key = t.y",
             ([r[0] for r in gone], [r[1] for r in gone], [r[2] for r in gone], self.group)),
        ])
