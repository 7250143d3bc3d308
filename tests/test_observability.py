"""Health, readiness, Prometheus metrics and rule traces of a running bus, over real HTTP.

The metrics text is parsed with ``prometheus_client``'s own parser (the
reference implementation of the format), and ``ccbus traces`` runs as a
real process against the bus's listener.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_bus import FailTwice

from ccbus import Event, Options, SourceSpec, hookimpl
from ccbus.testing import running_bus

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Scripted:
    """Source ``scripted``: its states follow what the test sends to ``states``."""

    def __init__(self) -> None:
        self.states, self._states = anyio.create_memory_object_stream[str](10)

    @hookimpl
    def register_sources(self) -> list[SourceSpec]:
        states = self._states

        class Source:
            def __init__(self, ctx: Any) -> None:
                self.ctx = ctx

            async def run(self) -> None:
                async for state in states:
                    self.ctx.set_state(state)

        return [SourceSpec(name="scripted", options=Options, factory=Source)]


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), as prometheus_client parses it."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_readyz_metrics_and_traces_over_http(tmp_path: Path) -> None:
    rules = """
        rules:
          - name: big-calls
            on: call.*
            if: amount > 10
            do: [record: "{amount}"]
          - name: broken
            on: call.ended
            if: missing_field > 1
            do: [record: never]
    """
    plugin = Scripted()
    async with running_bus(
        tmp_path,
        sources={"flaky": {"plugin": "fail-twice"}, "pbx": {"plugin": "scripted"}},
        rules=rules,
        plugins=[FailTwice(), plugin],
        listen="127.0.0.1:0",
        outbox=True,
        delivery={"backoff_initial": 0.01, "backoff_cap": 0.02},
        config={"traces": 3},
    ) as harness, httpx.AsyncClient(base_url=harness.url) as client:
        bus, base = harness.bus, harness.url
        assert (await client.get("/healthz")).json() == {"status": "alive"}

        await plugin.states.send("connecting")
        await harness.wait_until(lambda: bus.sources["pbx"].state == "connecting")
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "pbx" in ready.json()["not_ready"]
        assert ready.json()["sources"]["pbx"]["state"] == "connecting"

        await plugin.states.send("reconnecting")
        await plugin.states.send("degraded")
        # the fail-twice source is restarted twice by the bus, then finishes
        await harness.wait_until(lambda: bus.sources["flaky"].state == "finished", timeout=30)
        await harness.wait_until(lambda: bus.sources["pbx"].state == "degraded")
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded" and ready.json()["degraded"] == ["pbx"]
        await plugin.states.send("connected")
        await harness.wait_until(lambda: bus.sources["pbx"].state == "connected")
        assert (await client.get("/readyz")).json()["status"] == "ready"

        for n, amount in enumerate([5, 20, 30, 40, 50]):
            await bus.publish(Event(type="call.ended", source="pbx", id=f"c{n}",
                                    data={"amount": amount}))
        await harness.recorder.wait_count(4)
        await harness.wait_until(lambda: bus.counters.get("actions", action="record", outcome="ok") == 4)
        # delivered calls leave the outbox in batches, a moment after delivery
        await harness.wait_until(lambda: bus.delivery_store.pending_count() == 0, timeout=10)

        text = (await client.get("/metrics")).text
        m = metrics(text)
        assert m[("ccbus_events_in_total", (("source", "pbx"), ("type", "call.ended")))] == 5
        assert m[("ccbus_rule_matches_total", (("rule", "big-calls"),))] == 4
        assert m[("ccbus_rule_errors_total", (("kind", "missing_field"), ("rule", "broken")))] == 5
        assert m[("ccbus_actions_total", (("action", "record"), ("outcome", "ok")))] == 4
        assert m[("ccbus_source_reconnects_total", (("source", "pbx"),))] == 1
        assert m[("ccbus_source_reconnects_total", (("source", "flaky"),))] == 2
        assert m[("ccbus_source_state", (("source", "pbx"), ("state", "connected")))] == 1
        assert m[("ccbus_source_ready", (("source", "pbx"),))] == 1
        assert m[("ccbus_outbox_depth", ())] == 0
        assert m[("ccbus_dead_letters", ())] == 0
        assert m[("ccbus_event_to_action_seconds_count", (("action", "record"),))] == 4
        assert m[("ccbus_event_to_action_seconds_bucket", (("action", "record"), ("le", "+Inf")))] == 4
        assert m[("ccbus_http_responses_total", (("status", "503"),))] == 1

        # traces: the last 3 runs of each rule, with condition, verdict, calls and outcomes
        doc = (await client.get("/traces/big-calls")).json()
        assert [r["event"]["id"] for r in doc["runs"]] == ["c2", "c3", "c4"]
        assert all(r["condition"] is True and r["verdict"] == "fired" for r in doc["runs"])
        [call] = doc["runs"][-1]["actions"]
        assert call["action"] == "record" and call["params"] == {"value": 50}
        assert call["outcome"] == "ok" and call["key"].endswith("/c4:big-calls:0")
        broken = (await client.get("/traces/broken")).json()["runs"][-1]
        assert broken["condition"].startswith("error: ") and broken["verdict"] == "no match"
        assert (await client.get("/traces/nope")).status_code == 404

        # ... and the same from the command line, a separate process
        printed = await anyio.run_process(
            [str(Path(sys.executable).parent / "ccbus"), "traces", "big-calls", "--url", base])
        out = printed.stdout.decode()
        assert "call.ended id=c4" in out and "verdict: fired" in out
        assert '-> record {"value": 50}: ok' in out
        status = await anyio.run_process(
            [str(Path(sys.executable).parent / "ccbus"), "status", "--url", base], check=False)
        assert status.returncode == 0, status.stderr
        assert "pbx (scripted): connected, 1 reconnect(s)" in status.stdout.decode()


async def test_trace_limit_zero_records_nothing(tmp_path: Path) -> None:
    async with running_bus(tmp_path, rules="rules: [{name: r, on: a, do: [record: x]}]",
                           config={"traces": 0}) as harness:
        await harness.publish("a")
        await harness.recorder.wait_count(1)
    assert harness.bus.engine.tracer is None
    assert harness.bus.traces.runs("r") is None
