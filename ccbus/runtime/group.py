"""Group membership: the lease that decides which instance of a group leads.

One row per group in ``ccbus_lease`` (see :mod:`ccbus.delivery.postgres`),
timed by the database's clock, never the instances': ``expires_at`` is
``clock_timestamp() + lease_ttl`` as the server sees it.

* **Acquire**: an instance that does not lead takes the row only once it has
  expired (or still names this instance: a restart, or a term that ended on
  its deadline), and increments ``epoch`` as it does (a single ``UPDATE ...
  WHERE expires_at <= clock_timestamp()``: two instances cannot both win it).
  So every term has an epoch of its own, and a term never inherits an expiry
  that an earlier renewal set.
* **Renew**: the leader pushes ``expires_at`` on every ``renew_every``, but
  only while it still holds the row with its epoch and the lease has not run
  out; a lease that ran out is re-acquired with a new epoch like any other.
* **Step down by itself**: the leader's work runs in a cancel scope whose
  deadline is the local moment the lease could pass, minus one renewal
  interval: ``t0 + lease_ttl - renew_every``, where ``t0`` is the monotonic
  time *before* the renewal was sent (the server can only have set a later
  expiry).  Each renewal pushes the deadline; when renewals fail the scope
  cancels the sources, timers and dispatcher on its own, before the lease can
  pass, whatever the lease loop is doing.  A leader frozen by SIGSTOP wakes up
  past that deadline and stops at once; its database writes are refused
  anyway by the epoch fence.
* A leader that stops cleanly (SIGTERM) releases the lease so a standby
  takes over at its next round instead of after a whole TTL.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

try:
    import psycopg
except ImportError as err:  # an optional extra: say how to get it
    raise ImportError(
        "cluster: (a group on PostgreSQL) needs psycopg: pip install 'ccbus[postgres]'"
    ) from err

from ccbus.config.cluster import ClusterConfig
from ccbus.delivery.postgres import connect, migrate

__all__ = ["GroupMember", "LeaseRow", "group_status"]

log = logging.getLogger("ccbus.runtime.group")

#: Members not seen for this many lease TTLs are left out of ``ccbus cluster status``.
SEEN_TTLS = 4


@dataclass(slots=True)
class LeaseRow:
    """The group's lease as the database has it; ``remaining`` by the database's clock."""

    leader: str
    epoch: int
    remaining: float


class GroupMember:
    """This instance's membership: the lease rounds, the role, what observers show."""

    def __init__(self, cluster: ClusterConfig, digest: str = "") -> None:
        self.cluster = cluster
        self.group = cluster.group
        self.instance = cluster.instance
        self.digest = digest
        self.role = "standby"
        self.leader = ""
        self.epoch = 0
        self.failovers = 0
        self.lease_remaining = 0.0
        self.last_error = ""
        self._conn: psycopg.Connection[Any] | None = None
        self._differ_warned: set[str] = set()

    # -- what observers read -------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self.role == "leader"

    def reason(self) -> str:
        """Why this instance is not ready (``/readyz``), or '' when it leads."""
        if self.leading:
            return ""
        if self.last_error:
            return (f"standby of group {self.group}: database {self.cluster.shown_dsn} "
                    f"unreachable ({self.last_error})")
        return f"standby of group {self.group}, leader is {self.leader or 'nobody yet'}"

    # -- database rounds (worker thread) ----------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.cluster)
            migrate(self._conn, self.group)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def round(self, leading_epoch: int) -> LeaseRow:
        """Renew (when leading with ``leading_epoch``) or try to acquire; then read the lease."""
        conn = self._connection()
        ttl = self.cluster.lease_ttl
        me, group = self.instance, self.group
        if leading_epoch:
            conn.execute(
                "UPDATE ccbus_lease SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE grp = %s AND leader = %s AND epoch = %s"
                " AND expires_at > clock_timestamp()",
                (ttl, group, me, leading_epoch),
            )
        else:
            conn.execute(
                "UPDATE ccbus_lease SET leader = %s, epoch = epoch + 1,"
                " expires_at = clock_timestamp() + make_interval(secs => %s),"
                " acquired_at = clock_timestamp()"
                " WHERE grp = %s AND (expires_at <= clock_timestamp() OR leader = %s)",
                (me, ttl, group, me),
            )
        row = conn.execute(
            "SELECT leader, epoch, extract(epoch from expires_at - clock_timestamp())::float8"
            " FROM ccbus_lease WHERE grp = %s",
            (group,),
        ).fetchone()
        assert row is not None  # migrate() created it
        lease = LeaseRow(str(row[0]), int(row[1]), float(row[2]))
        role = "leader" if lease.leader == me and lease.remaining > 0 else "standby"
        conn.execute(
            "INSERT INTO ccbus_members (grp, instance, role, epoch, digest, seen_at)"
            " VALUES (%s, %s, %s, %s, %s, clock_timestamp()) ON CONFLICT (grp, instance) DO UPDATE"
            " SET role = excluded.role, epoch = excluded.epoch, digest = excluded.digest,"
            " seen_at = excluded.seen_at",
            (group, me, role, lease.epoch, self.digest),
        )
        if self.digest:
            self._warn_differing(conn)
        return lease

    def _warn_differing(self, conn: psycopg.Connection[Any]) -> None:
        """Log once per member whose config or rules differ (a rolling upgrade passes here)."""
        rows = conn.execute(
            "SELECT instance FROM ccbus_members WHERE grp = %s AND instance <> %s"
            " AND digest <> %s AND digest <> ''"
            " AND seen_at > clock_timestamp() - make_interval(secs => %s)",
            (self.group, self.instance, self.digest, self.cluster.lease_ttl * SEEN_TTLS),
        ).fetchall()
        for (other,) in rows:
            if other not in self._differ_warned:
                self._differ_warned.add(other)
                log.warning("group %s: member %s runs a different config or rules than this "
                            "instance (%s); fine during a rolling upgrade", self.group, other,
                            self.instance)

    def release(self, epoch: int) -> None:
        """Let the lease go at once (a clean stop), if it is still ours."""
        try:
            self._connection().execute(
                "UPDATE ccbus_lease SET expires_at = clock_timestamp()"
                " WHERE grp = %s AND leader = %s AND epoch = %s",
                (self.group, self.instance, epoch),
            )
        except psycopg.Error as err:
            log.warning("group %s: could not release the lease: %s", self.group, err)
        finally:
            self._drop()

    # -- the loop -------------------------------------------------------------------------

    async def run(self, lead: Callable[[int], Awaitable[None]]) -> None:
        """Lease rounds forever; while leading, ``lead(epoch)`` runs within the lease.

        ``lead`` runs in a cancel scope whose deadline each renewal pushes;
        it is cancelled when the lease is lost or cannot be renewed in time.
        """
        ttl, every = self.cluster.lease_ttl, self.cluster.renew_every
        async with anyio.create_task_group() as tg:
            term: anyio.CancelScope | None = None
            ended = anyio.Event()
            while True:
                if term is not None and ended.is_set():  # the deadline passed: stepped down
                    term = None
                    self._stepped_down("could not renew the lease in time")
                sent = anyio.current_time()
                try:
                    lease = await anyio.to_thread.run_sync(self.round, self.epoch if term else 0)
                except (psycopg.Error, OSError) as err:
                    self._unreachable(err)
                    await anyio.sleep(every)
                    continue
                if self.last_error:
                    log.info("group %s: database %s reachable again", self.group,
                             self.cluster.shown_dsn)
                    self.last_error = ""
                self.leader, self.lease_remaining = lease.leader, lease.remaining
                mine = lease.leader == self.instance and lease.remaining > 0
                if term is not None and (not mine or lease.epoch != self.epoch):
                    term.cancel()
                    term = None
                    self._stepped_down(
                        f"the lease passed to {lease.leader} (epoch {lease.epoch})"
                        if lease.leader != self.instance or lease.epoch != self.epoch
                        else "the lease ran out before the renewal reached the database")
                elif term is not None:
                    term.deadline = sent + ttl - every
                elif mine:
                    if lease.epoch > 1:
                        self.failovers += 1
                    self.epoch = lease.epoch
                    self.role = "leader"
                    log.warning("group %s: %s leads now (epoch %d)", self.group, self.instance,
                                self.epoch)
                    term = anyio.CancelScope(deadline=sent + ttl - every)
                    ended = anyio.Event()
                    tg.start_soon(self._term, lead, term, ended)
                else:
                    self.epoch = lease.epoch
                await anyio.sleep(every)

    async def _term(self, lead: Callable[[int], Awaitable[None]], scope: anyio.CancelScope,
                    ended: anyio.Event) -> None:
        epoch = self.epoch
        try:
            with scope:
                await lead(epoch)
        except Exception as err:  # a failed term must not end the membership
            log.error("group %s: leading failed: %s: %s", self.group, type(err).__name__, err)
        finally:
            self.role = "standby"
            ended.set()
            if not scope.cancel_called or scope.deadline > anyio.current_time():
                # a clean stop (not a lost lease): hand over now, not after a TTL
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.release, epoch)

    def _stepped_down(self, why: str) -> None:
        self.role = "standby"
        log.warning("group %s: %s stepped down: %s", self.group, self.instance, why)

    def _unreachable(self, err: BaseException) -> None:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if text != self.last_error:
            log.error("group %s: cannot reach the database %s: %s (staying %s, retrying)",
                      self.group, self.cluster.shown_dsn, text,
                      "leader until the lease deadline" if self.leading else "standby")
        self.last_error = text
        self._drop()


def config_digest(*parts: bytes) -> str:
    """A short digest of the config and rule files, to tell members that differ."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def group_status(cluster: ClusterConfig) -> dict[str, Any]:
    """What ``ccbus cluster status`` prints: the lease and the members seen recently."""
    with connect(cluster) as conn:
        migrate(conn, cluster.group)
        lease = conn.execute(
            "SELECT leader, epoch, expires_at, extract(epoch from expires_at - clock_timestamp())"
            "::float8 FROM ccbus_lease WHERE grp = %s", (cluster.group,)).fetchone()
        members = conn.execute(
            "SELECT instance, role, epoch, digest, extract(epoch from clock_timestamp() - seen_at)"
            "::float8 FROM ccbus_members WHERE grp = %s"
            " AND seen_at > clock_timestamp() - make_interval(secs => %s) ORDER BY instance",
            (cluster.group, cluster.lease_ttl * SEEN_TTLS)).fetchall()
    assert lease is not None
    digests = {m[3] for m in members if m[3]}
    return {
        "group": cluster.group,
        "leader": lease[0] if lease[3] > 0 else "",
        "epoch": int(lease[1]),
        "lease_expires": lease[2].isoformat() if lease[1] else "",
        "lease_remaining": max(0.0, float(lease[3])),
        "members": [{"instance": m[0], "role": m[1], "epoch": int(m[2]), "digest": m[3],
                     "seen_ago": round(float(m[4]), 1),
                     "differs": len(digests) > 1} for m in members],
        "time": time.time(),
    }


def check_database(cluster: ClusterConfig, where: str) -> str | None:
    """``ccbus check``: connect and create the schema; the problem, or None when it works."""
    try:
        with connect(cluster) as conn:
            migrate(conn, cluster.group)
    except (psycopg.Error, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (f"{where}: cluster.dsn: cannot reach the group's database "
                f"{cluster.shown_dsn}: {first}")
    return None
