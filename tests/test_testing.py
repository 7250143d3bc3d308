"""``ccbus.testing``: the harness plugin authors test with, on a real bus with built-in sources.

No mocks: the bus runs, the ``replay`` source reads files, the ``webhook``
source answers HTTP over loopback, and a :class:`Recorder` is the action.  The
fixtures are requested by name, as a plugin's suite would: they come from the
``pytest11`` entry point, not from a conftest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import httpx
import pytest
from support import write

from ccbus import Event, PermanentActionError
from ccbus.testing import BusHarness, Collected, Recorder, collecting_source, running_bus

pytestmark = pytest.mark.anyio

BusFactory = Callable[..., AbstractAsyncContextManager[BusHarness]]
SourceFactory = Callable[..., AbstractAsyncContextManager[Collected]]

EVENTS = """
    {"type": "call.started", "id": "c1", "data": {"callId": "c1"}}
    {"type": "call.ended", "id": "c1-end", "data": {"callId": "c1", "seconds": 42}}
    not json at all
    {"type": "agent.state_changed", "data": {"agentId": "ada", "state": "ready"}}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_replay_through_the_bus_records_every_event_by_default(
    tmp_path: Path, ccbus_bus: BusFactory, ccbus_recorder: Recorder
) -> None:
    write(tmp_path / "events.jsonl", EVENTS)
    async with ccbus_bus(sources={"rec": {"plugin": "replay",
                                          "options": {"path": "events.jsonl"}}}) as bus:
        assert bus.recorder is ccbus_recorder
        ended = await bus.collected.wait_for(lambda e: e.type == "call.ended", timeout=10)
        await bus.sources_finished()
        calls = await bus.recorder.wait_count(3)
        assert ended.data["seconds"] == 42 and bus.state() == "finished"
        assert bus.bad_input("bad_line") == 1
        assert bus.counter("events_in", source="rec", type="call.ended") == 1
        assert bus.source().bad_lines == 1
    assert bus.collected.types() == ["call.started", "call.ended", "agent.state_changed"]
    assert ccbus_recorder.types() == bus.collected.types()
    assert [c.event for c in calls] == bus.collected.events
    assert {c.rule for c in calls} == {"record-everything"}
    assert calls[1].key.endswith("/c1-end:record-everything:0") and calls[1].attempt == 1


async def test_webhook_over_http_with_inline_rules_and_bad_input(tmp_path: Path) -> None:
    rules = """
        rules:
          - name: long-calls
            on: call.ended
            if: duration > 30
            do: [record: "{callId}"]
    """
    async with running_bus(
        tmp_path,
        sources={"crm": {"plugin": "webhook", "options": {"token": "t0ken-t0ken"}}},
        rules=rules,
        listen="127.0.0.1:0",
    ) as bus:
        headers = {"Authorization": "Bearer t0ken-t0ken"}
        async with httpx.AsyncClient(base_url=bus.url, headers=headers) as client:
            ok = await client.post("/events/crm", json=[
                {"type": "call.ended", "data": {"callId": "short", "duration": 5}},
                {"type": "call.ended", "data": {"callId": "long", "duration": 50}},
            ])
            garbage = await client.post("/events/crm", content=b"{not json")
        [call] = await bus.recorder.wait_count(1)
        await bus.collected.wait_count(2, lambda e: e.type == "call.ended")
        assert bus.state("crm") == "listening"
    assert ok.status_code == 202 and garbage.status_code == 400
    assert call.value == "long" and call.params == {"value": "long"}
    assert call.event.source == "crm" and call.rule == "long-calls"
    assert bus.bad_input("invalid_json") == 1 and bus.bad_input("invalid_json", "crm") == 1


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "memory"])
async def test_a_recorder_that_fails_twice_is_retried_under_one_key(
    tmp_path: Path, outbox: bool
) -> None:
    recorder = Recorder(params=("type", "agent"), fail=2)
    rules = [{"name": "ready", "on": "agent.state_changed",
              "do": [{"record": {"type": "{event.type}", "agent": "{agentId}"}}]}]
    async with running_bus(tmp_path, rules=rules, recorder=recorder, outbox=outbox) as bus:
        sent = await bus.publish("agent.state_changed", agentId="ada")
        [call] = await recorder.wait_count(1)
        await bus.wait_until(lambda: bus.counter("actions", action="record", outcome="ok") == 1)
    assert call.params == {"type": "agent.state_changed", "agent": "ada"}
    assert call.event.id == sent.id and call.attempt == 3 and call.error == ""  # a retry reads the outbox
    assert [a.attempt for a in recorder.attempts] == [1, 2, 3]
    assert "failing as told (1 of 2)" in recorder.attempts[0].error
    assert {a.key for a in recorder.attempts} == {call.key}
    assert bus.counter("actions", action="record", outcome="retry") == 2
    assert (tmp_path / "state" / "delivery.sqlite3").exists() == outbox


@pytest.mark.parametrize("outbox", [True, False], ids=["outbox", "memory"])
async def test_a_permanent_failure_is_a_dead_letter(tmp_path: Path, outbox: bool) -> None:
    recorder = Recorder("crm.update", fail=1, error=PermanentActionError("404 no such ticket"))
    async with running_bus(tmp_path, rules="rules: [{name: r, on: t.go, do: ['crm.update': x]}]",
                           recorder=recorder, outbox=outbox) as bus:
        await bus.publish(Event(type="t.go", source="test", id="e1"))
        await bus.wait_until(lambda: bus.dead_letters(), what="a dead letter")
        [letter] = bus.dead_letters()
    assert letter.action == "crm.update" and "404 no such ticket" in letter.reason
    assert letter.key == recorder.attempts[0].key and recorder.calls == []


async def test_a_bus_restarted_in_the_same_directory_keeps_rule_state(tmp_path: Path) -> None:
    """``persist_state``: a ``for`` timer armed by the first bus fires in the second."""
    rules = """
        rules:
          - name: held
            on: s.state
            if: up == False
            for: {per: host, duration: 1s}
            do: [record: "{host} down"]
    """
    recorder = Recorder()
    async with running_bus(tmp_path, rules=rules, recorder=recorder, persist_state=True) as bus:
        await bus.publish("s.state", host="h1", up=False)
    assert recorder.calls == []
    async with running_bus(tmp_path, rules=rules, recorder=recorder, persist_state=True) as bus:
        [call] = await recorder.wait_count(1, timeout=10)
    assert call.value == "h1 down"
    assert [e.data for e in bus.collected.events] == [{"host": "h1", "up": False}]  # restored


async def test_a_failed_wait_says_what_arrived(tmp_path: Path) -> None:
    async with running_bus(tmp_path) as bus:
        await bus.publish("call.started", callId="c1")
        with pytest.raises(AssertionError) as failed:
            await bus.collected.wait_for(lambda e: e.type == "call.ended", timeout=0.2)
        assert "waiting for 1 matching event(s): got 0 of 1 in all" in str(failed.value)
        assert "call.started(id=" in str(failed.value)
        with pytest.raises(AssertionError) as failed:
            await bus.recorder.wait_count(2, timeout=0.2)
        assert "got 1 of 1 in all; the latest: call.started {'value': None}" in str(failed.value)
        with pytest.raises(AssertionError) as failed:
            await bus.wait_until(lambda: False, timeout=0.2, what="nothing")
        assert "waiting for nothing; sources: none; 1 event(s)" in str(failed.value)
        assert "1 record call(s), 0 failed" in str(failed.value)


async def test_emitted_events_are_collected_too(tmp_path: Path) -> None:
    rules = {"rules": [
        {"name": "relay", "on": "a", "do": [{"emit": {"type": "b", "data": {"n": "{n}"}}}]},
        {"name": "rec", "on": "b", "do": [{"record": "{n}"}]},
    ]}
    async with running_bus(tmp_path, rules=rules) as bus:
        await bus.publish("a", n=7)
        [call] = await bus.recorder.wait_count(1)
    assert bus.collected.types() == ["a", "b"] and call.value == 7


async def test_collecting_source_runs_one_source_without_a_bus(
    tmp_path: Path, ccbus_source: SourceFactory
) -> None:
    write(tmp_path / "events.jsonl", EVENTS)
    async with ccbus_source("replay", {"path": "events.jsonl"}, name="rec") as got:
        events = await got.wait_count(3)
    assert [e.type for e in events] == ["call.started", "call.ended", "agent.state_changed"]
    assert got.of("call.ended")[0].source == "rec"
    assert got.bad_input == {"bad_line": 1} and got.states[0] == "replaying"
    assert got.source.replayed == 3
    assert got.context is not None and got.context.state_dir == tmp_path / "state/sources/rec"


async def test_collecting_source_awaits_the_tests_emit_first(tmp_path: Path) -> None:
    write(tmp_path / "events.jsonl", EVENTS)
    seen: list[int] = []

    async def slow(event: Event) -> None:
        seen.append(len(got.events))  # not collected yet while this runs
        await anyio.sleep(0.01)

    async with collecting_source(tmp_path, "replay", {"path": "events.jsonl"},
                                 emit=slow) as got:
        await got.wait_count(3)
    assert seen == [0, 1, 2]


async def test_rules_or_plugins_that_do_not_load_fail_the_test_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rules did not load: .*test.yaml:1.*nope"):
        async with running_bus(tmp_path, rules="rules: [{name: r, on: a, do: [nope: x]}]"):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="plugins did not load: .*record"):
        async with running_bus(tmp_path, plugins=[Recorder()]):  # a second `record` action
            pass  # pragma: no cover


def test_nothing_the_cli_imports_imports_the_harness_or_pytest() -> None:
    code = ("import sys, ccbus.cli.app, ccbus.runtime.bus; "
            "print(json.dumps(sorted(m for m in sys.modules if m in "
            "('ccbus.testing', 'pytest', '_pytest'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out) == []


def test_the_harness_imports_without_pytest() -> None:
    code = ("import sys; sys.modules['pytest'] = None; import ccbus.testing as t; "
            "assert not t.HAVE_PYTEST and not hasattr(t, 'ccbus_bus'); print(t.__all__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "running_bus" in out
