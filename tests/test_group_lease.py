"""The group lease and its fencing, against a real PostgreSQL (tests/postgres.py)."""

from __future__ import annotations

import random
import threading
import time

import anyio
import postgres
import psycopg
import pytest

from ccbus.config.cluster import ClusterConfig, redact_dsn
from ccbus.delivery.postgres import Fenced, PostgresDeliveryStore, PostgresStateStore
from ccbus.delivery.store import Pending
from ccbus.runtime.group import GroupMember, LeaseRow

pg_dsn = postgres.pg_dsn  # the fixture: a private database per test


def cluster(dsn: str, instance: str, ttl: float = 2.0, every: float = 0.5) -> ClusterConfig:
    return ClusterConfig(dsn=dsn, group="site-a", instance=instance, lease_ttl=ttl,
                         renew_every=every)


def row(key: str) -> Pending:
    return Pending(key=key, rule="r", action="log", index=0, lane="log", params="{}",
                   event="{}", created=time.time())


def test_a_write_with_an_old_epoch_is_refused_by_the_database(pg_dsn: str) -> None:
    a, b = GroupMember(cluster(pg_dsn, "a")), GroupMember(cluster(pg_dsn, "b"))
    first = a.round(0)
    assert (first.leader, first.epoch) == ("a", 1)
    store_a = PostgresDeliveryStore(a.cluster, first.epoch)
    state_a = PostgresStateStore(a.cluster, first.epoch)
    assert store_a.add([row("k1")])[0] > 0
    assert b.round(0).leader == "a"  # b cannot take a live lease
    time.sleep(2.2)  # a does not renew: the lease runs out by the database's clock
    second = b.round(0)
    assert (second.leader, second.epoch) == ("b", 2)
    with pytest.raises(Fenced, match="epoch 1 of a in group site-a"):
        store_a.add([row("k2")])
    with pytest.raises(Fenced):
        store_a.done([1])
    with pytest.raises(Fenced):
        state_a.save([("r", "count", "q", "[1.0]")])
    assert a.round(1).leader == "b"  # a's renewal with the old epoch changes nothing
    store_b = PostgresDeliveryStore(b.cluster, second.epoch)
    assert [p.key for p in store_b.due(time.time() + 1, 10, set())] == ["k1"]  # resumed by b
    assert store_b.add([row("k2"), row("k1")])[1] == 0  # a recorded key stays one row
    # a raw write without the session's epoch is refused too: the fence is in the database
    with psycopg.connect(pg_dsn, autocommit=True) as raw, pytest.raises(psycopg.Error) as err:
        raw.execute("DELETE FROM ccbus_outbox")
    assert err.value.sqlstate == "CCB01"
    for s in (store_a, state_a, store_b):
        s.close()


class Jittery(GroupMember):
    """A member whose database round trips are slow at random, sometimes past the lease."""

    def __init__(self, *args: object, rng: random.Random) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.rng = rng

    def round(self, leading_epoch: int) -> LeaseRow:
        time.sleep(self.rng.choice([0, 0, 0, 0.05, 0.3, 1.0, 2.5]) * self.rng.random())
        lease = super().round(leading_epoch)
        time.sleep(self.rng.choice([0, 0, 0, 0.05, 0.3, 1.0, 2.5]) * self.rng.random())
        return lease


@pytest.mark.slow
def test_two_instances_never_lead_at_once_under_random_timing(pg_dsn: str) -> None:
    """Three members with random slow round trips for 40 s: leadership terms never overlap."""
    terms: list[tuple[float, float, str, int]] = []
    lock = threading.Lock()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n, name in enumerate(("a", "b", "c")):
                member = Jittery(cluster(pg_dsn, name), rng=random.Random(n * 7919 + 1))

                async def lead(epoch: int, name: str = name) -> None:
                    start = time.monotonic()
                    try:
                        await anyio.sleep_forever()
                    finally:
                        with lock:
                            terms.append((start, time.monotonic(), name, epoch))

                tg.start_soon(member.run, lead)
            await anyio.sleep(40)
            tg.cancel_scope.cancel()

    anyio.run(main)
    terms.sort()
    assert len(terms) >= 5, terms  # the jitter made the lease change hands
    assert len({t[2] for t in terms}) >= 2
    for before, after in zip(terms, terms[1:], strict=False):
        assert after[0] >= before[1], f"{before} overlaps {after}"
        assert after[3] > before[3]  # every term has a newer epoch


def test_the_dsn_is_shown_without_its_password() -> None:
    assert redact_dsn("postgresql://ccbus:s3cret@pg1,pg2/ccbus?sslmode=require") == (
        "postgresql://ccbus:***@pg1,pg2/ccbus?sslmode=require")
    assert redact_dsn("host=pg1 user=ccbus password='a b' dbname=x") == (
        "host=pg1 user=ccbus password=*** dbname=x")
    assert redact_dsn("postgresql://pg1/x?password=s3cret&user=u") == (
        "postgresql://pg1/x?password=***&user=u")


def test_the_postgres_outbox_keeps_secret_references_and_skips_full_lanes(pg_dsn: str) -> None:
    """A group's outbox stores what the SQLite one stores: parameters with secrets as
    placeholders and, beside them, where each secret goes; a dead letter keeps both."""
    member = GroupMember(cluster(pg_dsn, "a"))
    lease = member.round(0)
    store = PostgresDeliveryStore(member.cluster, lease.epoch)
    refs = '[{"at": "url", "name": "secret:crm"}]'
    sealed = Pending(key="k1", rule="r", action="webhook", index=0, lane="crm",
                     params='{"url": "${secret:crm}"}', event="{}", created=time.time(),
                     secrets=refs)
    other = Pending(key="k2", rule="r", action="log", index=0, lane="log", params="{}",
                    event="{}", created=time.time())
    [first, _] = store.add([sealed, other])
    [due] = store.due(time.time() + 1, 10, set(), full_lanes=["log"])
    assert (due.key, due.params, due.secrets) == ("k1", '{"url": "${secret:crm}"}', refs)
    store.bury(first, "gave up", 3)
    [letter] = store.dead_letters()
    assert (letter.params, letter.secrets) == ('{"url": "${secret:crm}"}', refs)
    store.close()
