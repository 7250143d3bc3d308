"""The running bus with real parts: HTTP over loopback, files, signals, restarts."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from support import write

from ccbus import Event, Options, SourceSpec, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus
from ccbus.testing import BusHarness, Recorder, running_bus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FailTwice:
    """A test plugin: source `fail-twice` fails twice, then emits; lifecycle hooks noted."""

    def __init__(self) -> None:
        self.runs = 0
        self.lifecycle: list[str] = []

    @hookimpl
    def startup(self, bus: Bus) -> None:
        self.lifecycle.append(f"startup with {len(bus.engine.index.rules)} rules")

    @hookimpl
    async def shutdown(self, bus: Bus) -> None:
        await anyio.lowlevel.checkpoint()
        self.lifecycle.append("shutdown")

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        plugin = self

        class Flaky:
            def __init__(self, ctx: Any) -> None:
                self.ctx = ctx

            async def run(self) -> None:
                plugin.runs += 1
                if plugin.runs <= 2:
                    raise ConnectionError(f"broker away (attempt {plugin.runs})")
                await self.ctx.emit(Event(type="flaky.up", source=self.ctx.name))

        return [SourceSpec(name="fail-twice", options=Options, factory=Flaky)]


async def test_webhook_source_with_hmac_over_real_http(tmp_path: Path) -> None:
    async with running_bus(
        tmp_path,
        sources={"crm": {"plugin": "webhook", "options": {"hmac_secret": "s3cret-s3cret"}}},
        rules="""
            rules:
              - name: got-it
                on: crm.*
                do: [record: "{ticket}"]
        """,
        listen="127.0.0.1:0",
    ) as bus:
        url = f"{bus.url}/events/crm"
        body = json.dumps(
            [
                {"type": "crm.TicketOpened", "data": {"ticket": "T-1"}},
                {"type": "crm.TicketOpened", "data": {"ticket": "T-2"}},
            ]
        ).encode()
        stamp = str(int(time.time()))
        good = (
            "sha256="
            + hmac.new(b"s3cret-s3cret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        async with httpx.AsyncClient() as client:
            ok = await client.post(
                url, content=body, headers={"X-Ccbus-Timestamp": stamp, "X-Ccbus-Signature": good}
            )
            forged = await client.post(
                url,
                content=body.replace(b"T-1", b"T-9"),
                headers={"X-Ccbus-Timestamp": stamp, "X-Ccbus-Signature": good},
            )
            old = str(int(time.time()) - 3600)
            replayed = await client.post(
                url,
                content=body,
                headers={
                    "X-Ccbus-Timestamp": old,
                    "X-Ccbus-Signature": "sha256="
                    + hmac.new(
                        b"s3cret-s3cret", old.encode() + b"." + body, hashlib.sha256
                    ).hexdigest(),
                },
            )
            garbage = await client.post(
                url,
                content=b"{not json",
                headers={
                    "X-Ccbus-Timestamp": stamp,
                    "X-Ccbus-Signature": "sha256="
                    + hmac.new(
                        b"s3cret-s3cret", stamp.encode() + b".{not json", hashlib.sha256
                    ).hexdigest(),
                },
            )
            health = await client.get(f"{bus.url}/health")
        await bus.recorder.wait_count(2)
    assert ok.status_code == 202 and ok.json() == {"accepted": 2}
    assert forged.status_code == 401 and replayed.status_code == 401
    assert garbage.status_code == 400 and "invalid JSON" in garbage.json()["error"]
    assert health.json()["sources"]["crm"]["state"] == "listening"
    assert bus.recorder.values() == ["T-1", "T-2"]
    assert bus.bad_input("unauthorized") == 2 and bus.bad_input("invalid_json") == 1


async def test_replay_skips_malformed_lines_with_file_and_line(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    events = write(
        tmp_path / "events.jsonl",
        """
        {"type": "x.A", "data": {"n": 1}}
        {"type": "x.A", "data": {"n": 2}
        ["not", "an", "event"]
        {"type": "x.A", "data": {"n": 3}}
    """,
    )
    async with running_bus(
        tmp_path,
        sources={"rec": {"plugin": "replay", "options": {"path": events.name}}},
        rules="rules: [{name: r, on: x.A, do: [record: '{n}']}]",
    ) as bus:
        await bus.sources_finished()
        await bus.recorder.wait_count(2)
    assert bus.recorder.values() == [1, 3]
    assert bus.source().bad_lines == 2
    assert bus.bad_input("bad_line") == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{events}:2: invalid JSON" in m for m in messages)
    assert any(f"{events}:3: not an event" in m for m in messages)


async def test_failing_source_is_restarted_with_backoff(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("ccbus.sources.backoff.Backoff.next_delay", lambda self: 0.01)
    plugin = FailTwice()
    async with running_bus(
        tmp_path,
        sources={"flaky": {"plugin": "fail-twice"}},
        rules="rules: [{name: r, on: flaky.up, do: [record: up]}]",
        plugins=[plugin],
    ) as bus:
        await bus.sources_finished()
        await bus.recorder.wait_count(1)
        assert plugin.lifecycle == ["startup with 1 rules"]
    assert plugin.lifecycle == ["startup with 1 rules", "shutdown"]
    assert plugin.runs == 3 and bus.bus.sources["flaky"].restarts == 2
    assert "broker away (attempt 2)" in bus.bus.sources["flaky"].last_error
    assert bus.recorder.values() == ["up"]


async def test_for_timer_fires_in_real_time_and_survives_restart(tmp_path: Path) -> None:
    rules = """
        rules:
          - name: held
            on: s.state
            if: up == False
            for: {per: host, duration: 1.5s}
            do: [record: "{host} down"]
    """
    recorder = Recorder()
    async with running_bus(tmp_path, rules=rules, recorder=recorder, persist_state=True) as first:
        await first.publish(Event(type="s.state", source="t", data={"host": "h1", "up": False}))
    # stopped ("crashed") long before the timer is due
    assert recorder.calls == []

    async with running_bus(tmp_path, rules=rules, recorder=recorder, persist_state=True):
        await recorder.wait_count(1, timeout=5)
    assert recorder.calls[0].value == "h1 down"


async def test_rule_file_change_hot_reloads_and_broken_edit_keeps_old_rules(
    tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO)
    async with running_bus(
        tmp_path, rules="rules: [{name: r, on: a, do: [record: one]}]\n", watch_rules=True
    ) as harness:
        bus, rules = harness.bus, harness.rules_file
        await anyio.sleep(0.3)  # let the watcher start
        await bus.publish(Event(type="a", source="t"))
        rules.write_text("rules: [{name: r, on: a, do: [record: two]}]\n")
        await harness.wait_until(
            lambda: "two" in bus.engine.index.rules[0].actions[0].params.source
        )
        await bus.publish(Event(type="a", source="t"))
        rules.write_text("rules: [{name: r, on: a, do: [record: three]}\n")  # broken YAML
        await harness.wait_until(
            lambda: any("keeping its previous" in r.getMessage() for r in caplog.records)
        )
        await bus.publish(Event(type="a", source="t"))
        await harness.recorder.wait_count(3)
    assert harness.recorder.values() == ["one", "two", "two"]
    assert any("changed: r" in r.getMessage() for r in caplog.records)


async def test_sighup_reloads_and_sigterm_drains(tmp_path: Path) -> None:
    recorder = Recorder()
    async with running_bus(tmp_path, rules="rules: [{name: r, on: a, do: [record: one]}]\n",
                           recorder=recorder, handle_signals=True) as harness:
        bus = harness.bus
        harness.rules_file.write_text("rules: [{name: r, on: a, do: [record: two]}]\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await harness.wait_until(
            lambda: "two" in bus.engine.index.rules[0].actions[0].params.source
        )
        for _ in range(50):
            await bus.publish(Event(type="a", source="t"))
        os.kill(os.getpid(), signal.SIGTERM)  # the bus stops itself; the block waits for it
    assert len(recorder.calls) == 50  # queued actions ran before the bus stopped
    assert len({c.key for c in recorder.calls}) == 50


async def test_an_action_that_raises_is_counted_not_fatal(tmp_path: Path) -> None:
    rules = """
        rules:
          - name: bad-then-good
            on: a
            do: [emit: {type: b}, log: "{event.type}"]
          - name: b
            on: b
            do: [record: "{1 / 0}", record: fine]
    """
    async with running_bus(tmp_path, rules=rules) as harness:
        bus = harness.bus
        await bus.publish(Event(type="a", source="t"))
        await harness.recorder.wait_count(1)
    assert harness.recorder.values() == ["fine"]
    assert bus.engine.stats["b"].errors == 1
    assert "ZeroDivisionError" in bus.engine.stats["b"].last_error


@pytest.mark.parametrize(
    "delivery",
    [{"outbox": True}, {"outbox": True, "synchronous": "full"}, {"outbox": False}],
    ids=["outbox", "outbox-synchronous-full", "memory"],
)
async def test_reloads_while_events_flow_never_drop_or_double_an_event(
    tmp_path: Path, delivery: dict[str, Any]
) -> None:
    """Rules are swapped between two events, never during one: N in, N calls out.

    With every kind of outbox: a busy loop (the reloads) must not make the
    dispatcher run a call twice either.
    """
    total, reloads_wanted = 400, 25
    conditions = ("n >= 0", "n > -1")  # both true: each reload swaps in a different rule

    def rules(version: int) -> str:
        return f"rules: [{{name: r, on: a, if: '{conditions[version % 2]}', do: [record: '{{n}}']}}]\n"

    recorder = Recorder()
    published = anyio.Event()
    sources: list[str] = []

    async def publish_all(bus: Bus) -> None:
        for n in range(total):
            await bus.publish(Event(type="a", source="t", data={"n": n}))
            await anyio.lowlevel.checkpoint()  # let the reloader in between any two events
        published.set()

    async def reload_meanwhile(harness: BusHarness) -> None:
        bus = harness.bus
        version = 0
        while not published.is_set():
            version += 1
            harness.rules_file.write_text(rules(version))
            bus.load_rules()
            sources.append(bus.engine.index.rules[0].condition.source)
            await anyio.lowlevel.checkpoint()

    async with running_bus(tmp_path, rules=rules(0), recorder=recorder,
                           delivery=delivery) as harness:
        bus = harness.bus
        async with anyio.create_task_group() as flow:
            flow.start_soon(reload_meanwhile, harness)
            flow.start_soon(publish_all, bus)
        await recorder.wait_count(total, timeout=20)
        await anyio.sleep(0.2)  # a doubled call would arrive now
    assert len(sources) >= reloads_wanted and set(sources) == set(conditions)
    assert bus.counters.total("rule_reloads") >= reloads_wanted + 1
    values = sorted(int(c.value) for c in recorder.calls)
    doubled = sorted({v for v in values if values.count(v) > 1})
    dropped = sorted(set(range(total)) - set(values))
    assert values == list(range(total)), f"doubled: {doubled}; dropped: {dropped}"
    assert len({c.key for c in recorder.calls}) == total


async def test_replay_at_speed_1_keeps_real_gaps_unless_max_pause_caps_them(
    tmp_path: Path,
) -> None:
    write(tmp_path / "rules" / "r.yaml", "rules: [{name: r, on: x.A, do: [record: '{n}']}]\n")

    async def replay(gap: str, options: str) -> tuple[float, Any]:
        """Replay two events ``gap`` apart; the time it took and the replay source."""
        write(tmp_path / "events.jsonl", f"""
            {{"type": "x.A", "time": "2024-05-01T08:00:00Z", "data": {{"n": 1}}}}
            {{"type": "x.A", "time": "2024-05-01T{gap}Z", "data": {{"n": 2}}}}
        """)
        recorder = Recorder()
        config = write(tmp_path / "ccbus.yaml", f"""
            http: {{enabled: false}}
            sources:
              rec: {{plugin: replay, options: {{path: events.jsonl, {options}}}}}
        """)
        # not running_bus: this is the path `ccbus replay` takes, until the sources finish
        bus = Bus(load_config(config), PluginHost(autoload=False, extra=[recorder]),
                  persist_state=False)
        started = time.monotonic()
        await bus.run(until_sources_finish=True, watch_rules=False)
        assert recorder.values() == [1, 2]
        return time.monotonic() - started, bus.sources["rec"].source

    took, source = await replay("08:00:00.6", "speed: 1")
    assert took >= 0.6  # the recorded gap, in real time
    hour = timedelta(hours=1)
    assert source.pause(hour) == 3600.0  # `speed: 1` is real time: no hidden cap
    assert source.pause(-hour) == 0.0  # out-of-order times do not wait

    took, source = await replay("09:00:00", "speed: 1, max_pause: 0.2s")
    assert 0.2 <= took < 10  # an hour's gap, cut to 0.2 s (10: a loaded machine's slack)
    assert source.pause(hour) == 0.2 and source.pause(timedelta(seconds=0.1)) == 0.1


async def test_run_tunes_the_interpreter_for_throughput_and_restores_it(tmp_path: Path) -> None:
    """Thread switch interval and GC thresholds are the bus's while it runs (see
    SWITCH_INTERVAL, GC_THRESHOLDS), and whatever they were before once it stops."""
    import gc
    import sys

    from ccbus.runtime.bus import GC_THRESHOLDS, SWITCH_INTERVAL

    gc_before, switch_before = gc.get_threshold(), sys.getswitchinterval()
    assert gc_before != GC_THRESHOLDS and switch_before != SWITCH_INTERVAL
    async with running_bus(tmp_path):
        during = gc.get_threshold(), sys.getswitchinterval()
    assert during == (GC_THRESHOLDS, SWITCH_INTERVAL)
    assert (gc.get_threshold(), sys.getswitchinterval()) == (gc_before, switch_before)
