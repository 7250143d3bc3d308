"""The source against a broker over loopback: flow, bad records, at-least-once, rebalances."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import ccbus_genesys
import pytest
from ccbus_genesys.catalogue import AGENT_STATE, CALL_THREAD
from ccbus_genesys.scenarios import TENANT, agent_step, contact_center

from ccbus import Event
from ccbus.testing import BusHarness, Collected, Recorder, wait_until

pytestmark = pytest.mark.anyio

#: ``genesys_source(options)`` (conftest): a ``genesys`` source named ``gen``, no bus.
SourceFactory = Callable[..., AbstractAsyncContextManager[Collected]]
BusFactory = Callable[..., AbstractAsyncContextManager[BusHarness]]

#: What the rule renders for each event it records.
RECORDED = ("type", "id", "subject", "tenant")
RULES = """
rules:
  - name: everything-genesys
    on: ["genesys.*", "agent.*", "call.*", "device.*"]
    do:
      - record:
          type: "{event.type}"
          id: "{event.id}"
          subject: "{coalesce(event.subject, '')}"
          tenant: "{get(event.extensions, 'tenant', '')}"
"""


def genesys_bus(ccbus_bus: BusFactory, options: dict[str, Any]) -> AbstractAsyncContextManager[
    BusHarness
]:
    """A real bus whose source ``gen`` is a ``genesys`` source; a rule records every event."""
    return ccbus_bus(sources={"gen": {"plugin": "genesys", "options": options}}, rules=RULES,
                     plugins=[ccbus_genesys], recorder=Recorder(params=RECORDED))


async def test_scenario_through_the_bus_and_a_rule(kafka: Any, ccbus_bus: BusFactory) -> None:
    steps = contact_center()
    await kafka.play(steps)
    options = kafka.options()
    async with genesys_bus(ccbus_bus, options) as harness:
        source = harness.source()
        # ``records`` counts a record when its handling starts: also wait for the last
        # one's native event, or its events may still be on their way to the rule
        await wait_until(lambda: source.records == len(steps), timeout=20)
        await wait_until(lambda: len(harness.recorder.calls) == source.emitted and sum(
            t.startswith("genesys.") for t in harness.recorder.types()) == len(steps), timeout=20)
        assert harness.state() == "connected"
        types = harness.recorder.types()
        # every record's native event, in order per call thread
        natives = [t for t in types if t.startswith("genesys.")]
        assert sorted(natives) == sorted(f"genesys.{s.payload['id']}" for s in steps)
        canonical = [t for t in types if not t.startswith("genesys.")]
        assert sorted(canonical) == sorted(
            ["agent.state_changed"] * 7
            + ["call.started"] * 2 + ["call.queued"] * 2 + ["call.transferred"] * 2
            + ["call.abandoned"] + ["call.ended"] * 2 + ["device.status_changed"] * 2
        )
        login = next(c for c in harness.recorder.calls
                     if c.params["type"] == "genesys.EventAgentLogin")
        assert login.params["subject"] in ("5001", "5002")
        assert login.params["tenant"] == TENANT
        # offsets committed up to the end of every partition, and not past it
        await wait_until(lambda: source.counts["commits"] > 0, timeout=20)
    for kind in (AGENT_STATE, CALL_THREAD):
        assert await kafka.committed(options["group_id"], kind) == {
            p: end for p, end in (await kafka.end_offsets(kind)).items() if end > 0
        }


async def test_poison_records_are_dead_lettered_and_the_partition_goes_on(
    kafka: Any, genesys_source: SourceFactory
) -> None:
    key = f"{TENANT}:a1"
    good = agent_step(1).payload
    records: list[tuple[Any, str]] = [
        (good | {"seq": 0}, "ok"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        ({"AgentID": "a1"}, "no_event_name"),
        ({"id": "<script>"}, "no_event_name"),
        (None, "empty_value"),
        (good | {"seq": 1}, "ok"),
    ]
    for value, _ in records:
        await kafka.send(AGENT_STATE, key, value, partition=0)
    options = kafka.options()
    async with genesys_source(options) as run:
        source = run.source
        await wait_until(lambda: source.records == len(records), timeout=20)
        await wait_until(lambda: source.committed.get(_tp(kafka, AGENT_STATE, 0)) == len(records),
                         timeout=20)
    assert [e.data["seq"] for e in run.events if e.type == "genesys.EventAgentReady"] == [0, 1]
    assert source.ctx.refusals.counts == {"invalid_json": 2, "not_an_object": 1,
                                          "no_event_name": 2, "empty_value": 1}
    letters = source.ctx.refusals.dead_letters.read()
    assert [(d["reason"], d["topic"], d["partition"], d["offset"]) for d in letters] == [
        (reason, kafka.topic(AGENT_STATE), 0, offset)
        for offset, (_, reason) in enumerate(records) if reason != "ok"
    ]
    assert letters[0]["message"] == "{not json" and letters[0]["key"] == key
    assert "'id' is missing" in letters[3]["detail"]
    assert await kafka.committed(options["group_id"], AGENT_STATE) == {0: len(records)}


async def test_a_deeply_nested_record_is_a_dead_letter_on_the_metrics_and_committed(
    kafka: Any, tmp_path: Path, genesys_source: SourceFactory, ccbus_bus: BusFactory
) -> None:
    """Valid JSON nested 100,000 levels, then a good record: through a real bus."""
    poison = b"[" * 100_000 + b"]" * 100_000
    await kafka.send(AGENT_STATE, f"{TENANT}:a1", poison, partition=0)
    await kafka.send(AGENT_STATE, f"{TENANT}:a1", agent_step(1).payload, partition=0)
    options = kafka.options()
    tp = _tp(kafka, AGENT_STATE, 0)
    async with genesys_bus(ccbus_bus, options) as harness:
        source = harness.source()
        await wait_until(lambda: "genesys.EventAgentReady" in harness.recorder.types(), timeout=20)
        # the poison committed past
        await wait_until(lambda: source.committed.get(tp) == 2, timeout=20)
        runtime = harness.bus.sources["gen"]
        # not restarted: the same source, never reconnecting, no failed attempt
        assert harness.source() is source and harness.state() == "connected"
        assert runtime.reconnects == 0 and harness.counter("source_reconnects", source="gen") == 0
        assert source.counts["failures"] == 0
        # a dead letter with its reason, counted for /metrics
        letters = source.ctx.refusals.dead_letters.read()
        assert [(d["reason"], d["offset"]) for d in letters] == [("invalid_json", 0)]
        assert "nested too deeply" in letters[0]["detail"] and letters[0]["truncated"]
        assert harness.bad_input("invalid_json") == 1
        assert source.emitted == 2  # the good record's native and canonical events
    assert await kafka.committed(options["group_id"], AGENT_STATE) == {0: 2}
    # acknowledged, so not redelivered: the group's next member reads only what is new
    await kafka.send(AGENT_STATE, f"{TENANT}:a1", agent_step(2).payload, partition=0)
    async with genesys_source(options, where=tmp_path / "again") as run:
        await wait_until(lambda: run.source.committed.get(tp) == 3, timeout=20)
    assert run.source.records == 1 and not run.source.ctx.refusals.counts
    assert [e.data["seq"] for e in run.events if e.type == "genesys.EventAgentReady"] == [2]


async def test_a_refused_record_read_again_after_a_crash_is_not_dead_lettered_twice(
    kafka: Any, monkeypatch: pytest.MonkeyPatch, genesys_source: SourceFactory
) -> None:
    """As after a ``kill -9``: nothing committed, the recorded marks on disk; read again."""
    from ccbus_genesys.source import GenesysSource

    await kafka.send(AGENT_STATE, f"{TENANT}:a1", b"{not json", partition=0)
    await kafka.send(AGENT_STATE, f"{TENANT}:a1", agent_step(1).payload, partition=0)
    options = kafka.options()

    async def never_commit(self: GenesysSource, partitions: Any) -> None:
        return None  # the process dies before any commit reaches the group

    with monkeypatch.context() as patch:
        patch.setattr(GenesysSource, "_commit", never_commit)
        async with genesys_source(options) as first:
            await wait_until(lambda: first.source.records == 2, timeout=20)
    assert first.source.ctx.refusals.counts == {"invalid_json": 1}
    assert len(first.events) == 2  # the good record's native and canonical events
    assert await kafka.committed(options["group_id"], AGENT_STATE) == {}

    async with genesys_source(options) as again:
        await wait_until(lambda: again.source.committed.get(_tp(kafka, AGENT_STATE, 0)) == 2,
                         timeout=20)
    # both were dealt with before the "crash": mapped again, nothing emitted or refused again
    assert again.source.counts["already_recorded"] == 2
    assert not again.events and not again.source.ctx.refusals.counts
    assert len(again.source.ctx.refusals.dead_letters.read()) == 1


async def test_a_mapping_failure_refuses_the_record_only(
    kafka: Any, monkeypatch: pytest.MonkeyPatch, genesys_source: SourceFactory
) -> None:
    """A bug in the mapping for one payload: that record is a dead letter, the next flows."""
    from ccbus_genesys.mapping import Mapper

    real_map = Mapper.map

    def buggy_map(self: Mapper, name: str, doc: dict[str, Any], *args: Any) -> Any:
        if doc.get("seq") == 0:
            raise KeyError("AgentID")
        return real_map(self, name, doc, *args)

    monkeypatch.setattr(Mapper, "map", buggy_map)
    for n in range(2):
        await kafka.send(AGENT_STATE, f"{TENANT}:a1", agent_step(n).payload, partition=0)
    async with genesys_source(kafka.options()) as run:
        await wait_until(lambda: run.source.committed.get(_tp(kafka, AGENT_STATE, 0)) == 2,
                         timeout=20)
    assert run.source.ctx.refusals.counts == {"unreadable": 1}
    [letter] = run.source.ctx.refusals.dead_letters.read()
    assert letter["offset"] == 0 and letter["detail"] == "KeyError: 'AgentID'"
    assert [e.data["seq"] for e in run.events if e.type == "genesys.EventAgentReady"] == [1]
    assert run.source.counts["failures"] == 0


async def test_unknown_names_and_bad_keys_pass_through_counted(
    kafka: Any, caplog: pytest.LogCaptureFixture, genesys_source: SourceFactory
) -> None:
    await kafka.send(CALL_THREAD, f"{TENANT}:c1", {"id": "EventUserEvent", "ThisDN": "7001"})
    await kafka.send(AGENT_STATE, "no-colon-here", {"id": "EventAgentReady", "AgentID": "9"})
    await kafka.send(AGENT_STATE, None, {"id": "EventAgentLogout", "AgentID": "8"})
    async with genesys_source(kafka.options()) as run:
        await wait_until(lambda: run.source.records == 3, timeout=20)
    by_type = {e.type: e for e in run.events}
    unknown = by_type["genesys.EventUserEvent"]
    assert unknown.subject == "c1" and unknown.extensions["tenant"] == TENANT
    assert run.source.unknown == {"EventUserEvent": 1}
    assert "unknown event 'EventUserEvent'" in caplog.text
    ready = by_type["genesys.EventAgentReady"]
    assert ready.subject == "no-colon-here" and "tenant" not in ready.extensions
    assert ready.extensions["kafkakey"] == "no-colon-here"
    # the canonical event still comes, keyed by the raw key
    assert by_type["agent.state_changed"].data["agentId"] in ("no-colon-here", "8")
    logout = by_type["genesys.EventAgentLogout"]
    assert logout.subject is None
    assert run.source.counts["bad_keys"] == 2
    assert "has key 'no-colon-here', not {tenant_id}:{id}" in caplog.text


async def test_tenant_filter(kafka: Any, genesys_source: SourceFactory) -> None:
    for n in range(6):
        tenant = "tenant-a" if n % 2 else "tenant-b"
        await kafka.send(AGENT_STATE, f"{tenant}:a{n}", agent_step(n).payload)
    async with genesys_source(kafka.options(tenants=["tenant-a"])) as run:
        await wait_until(lambda: run.source.records == 6, timeout=20)
    natives = [e for e in run.events if e.type.startswith("genesys.")]
    assert sorted(e.data["seq"] for e in natives) == [1, 3, 5]
    assert {e.extensions["tenant"] for e in run.events} == {"tenant-a"}
    assert run.source.counts["filtered"] == 3


async def test_cancelled_mid_batch_then_restarted_skips_nothing(
    kafka: Any, genesys_source: SourceFactory
) -> None:
    """The source dies while an event's actions are being recorded: that record is read again."""
    total, stuck_at = 40, 17
    for n in range(total):
        await kafka.send(AGENT_STATE, f"{TENANT}:a1", agent_step(n).payload, partition=0)
    options = kafka.options(max_poll_records=10)
    recorded: list[int] = []
    reached = anyio.Event()

    async def slow_recording(event: Event) -> None:
        if event.type != "genesys.EventAgentReady":
            return
        if event.data["seq"] == stuck_at:
            reached.set()
            await anyio.sleep_forever()  # "recording" never finishes: then the task dies
        recorded.append(event.data["seq"])

    async with genesys_source(options, emit=slow_recording):
        with anyio.fail_after(20):
            await reached.wait()
    # cancelled mid-batch (records 10..19 were one poll): only 0..16 may be committed
    assert recorded == list(range(stuck_at))
    # the way out commits exactly what was recorded: not the record in flight, nor its batch
    assert await kafka.committed(options["group_id"], AGENT_STATE) == {0: stuck_at}

    async with genesys_source(options) as run:
        await wait_until(lambda: run.source.committed.get(_tp(kafka, AGENT_STATE, 0)) == total,
                         timeout=20)
    again = [e.data["seq"] for e in run.events if e.type == "genesys.EventAgentReady"]
    assert again[0] == stuck_at  # it starts at the record that was not recorded
    assert sorted(set(recorded) | set(again)) == list(range(total))


async def test_a_rebalance_commits_what_is_recorded_and_loses_nothing(
    kafka: Any, tmp_path: Path, genesys_source: SourceFactory
) -> None:
    """A second consumer joins mid-stream and leaves again; every record arrives."""
    total = 600  # at least: records keep coming until the second consumer has its share
    options = kafka.options(max_poll_records=20)
    seen_a: list[int] = []
    seen_b: list[int] = []

    def recorder(into: list[int]) -> Any:
        async def emit(event: Event) -> None:
            if event.type.startswith("genesys."):
                into.append(event.data["seq"])
                await anyio.sleep(0.001)  # slow enough that the rebalance lands mid-stream
        return emit

    produced = 0
    b_has_its_share = anyio.Event()
    producing_done = anyio.Event()

    async def produce() -> None:
        # Past ``total``, a trickle until the rebalance has landed and the second
        # consumer has read 50 records: a fast first consumer may otherwise have read
        # everything before the group settles (seen with the real broker).
        nonlocal produced
        while produced < total or not b_has_its_share.is_set():
            await kafka.send(AGENT_STATE, f"{TENANT}:a{produced % 7}",
                             agent_step(produced).payload)
            produced += 1
            if produced >= total:
                await anyio.sleep(0.005)
        producing_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        async with genesys_source(options, emit=recorder(seen_a),
                                  where=tmp_path / "a") as a:
            await wait_until(lambda: len(seen_a) >= 100, timeout=20)
            async with genesys_source(options, emit=recorder(seen_b),
                                      where=tmp_path / "b") as b:
                await wait_until(lambda: b.source.owned and len(seen_b) >= 50, timeout=30)
                b_has_its_share.set()
                assert a.source.counts["revocations"] >= 1
                # six partitions (two topics of three), each owned by exactly one of them
                assert not a.source.owned & b.source.owned
                assert len(a.source.owned) + len(b.source.owned) == 6
            # b left: a takes every partition again and finishes
            await producing_done.wait()
            await wait_until(lambda: sum(len(seen) for seen in (seen_a, seen_b)) >= produced
                             and len(a.source.owned) == 6, timeout=30)
            ends = await kafka.end_offsets(AGENT_STATE)
            expected = {p: e for p, e in ends.items() if e}
            with anyio.fail_after(30):
                while await kafka.committed(options["group_id"], AGENT_STATE) != expected:  # noqa: ASYNC110 - polling the broker
                    await anyio.sleep(0.1)
    assert sorted(set(seen_a) | set(seen_b)) == list(range(produced))
    assert sum(ends.values()) == produced
    # the revocation commits went through: nothing refused, nothing failed
    assert a.source.counts["commit_errors"] == 0
    assert a.source.counts["commit_failed_rebalance"] == 0


async def test_broker_gone_and_back(
    test_broker: Any, caplog: pytest.LogCaptureFixture, genesys_source: SourceFactory
) -> None:
    broker = test_broker.broker
    assert broker is not None
    await test_broker.send(AGENT_STATE, f"{TENANT}:a1", agent_step(0).payload)
    async with genesys_source(test_broker.options()) as run:
        await wait_until(lambda: run.source.records == 1, timeout=20)
        await broker.stop()  # every connection dropped, nothing listening
        await anyio.sleep(1.0)
        await broker.start()  # same port, same data
        await test_broker.send(AGENT_STATE, f"{TENANT}:a1", agent_step(1).payload)
        await wait_until(lambda: run.source.records >= 2, timeout=30)
    seqs = [e.data["seq"] for e in run.events if e.type == "genesys.EventAgentReady"]
    assert sorted(set(seqs)) == [0, 1]


def _tp(kafka: Any, kind: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(kafka.topic(kind), partition)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()
