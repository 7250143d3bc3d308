"""Shared test parts: the vendor document's payloads, a real bus with a recording rule,
and a source whose ``emit`` collects.

Every peer is real: the simulator serves HTTP and WebSockets on loopback, the
source uses httpx and websockets against it, and the bus routes through a
rule file.  Timings are shrunk through the source's options (backoff, ping,
renewal), never by patching.
"""

from __future__ import annotations

import copy
import json
import logging
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import ccbus_avaya
import pytest
import yaml
from ccbus_avaya.options import AvayaOptions
from ccbus_avaya.protocol import BODY_EVENTS
from ccbus_avaya.simulator import AvayaSimulator

from ccbus import ActionSpec, Event, Options, SourceContext, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

FIXTURES = Path(__file__).parent / "fixtures"

#: Short timings for every test: recovery takes milliseconds, not minutes.
FAST: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_cap": 0.2,
    "misconfigured_retry": 0.4,
    "auth_timeout": 2,
    "connect_timeout": 2,
    "pong_timeout": 0.3,
}


@pytest.fixture
def fast() -> dict[str, Any]:
    """Source options for tests: short backoff, retry and timeouts."""
    return dict(FAST)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def doc_notification(event: str) -> dict[str, Any]:
    """The vendor document's example notification for ``event`` (a fresh copy)."""
    return copy.deepcopy(json.loads((FIXTURES / f"{event}.json").read_text()))


@pytest.fixture
def notification() -> Callable[[str], dict[str, Any]]:
    return doc_notification


@pytest.fixture
def all_doc_notifications() -> dict[str, dict[str, Any]]:
    return {name: doc_notification(name) for name in BODY_EVENTS}


class Recorder:
    """A plugin with the action ``record``: it keeps what the rule rendered, in order."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        recorder = self

        class Params(Options):
            type: str
            id: str
            subject: str = ""
            n: Any = None

        async def run(params: Params, ctx: Any) -> None:
            recorder.calls.append(params.model_dump())

        return [ActionSpec(name="record", params=Params, run=run)]

    def types(self) -> list[str]:
        return [c["type"] for c in self.calls]

    def numbers(self) -> list[Any]:
        return [c["n"] for c in self.calls if c["n"] is not None]


RULES = """
rules:
  - name: everything-avaya
    on: ["avaya.*", "agent.state_changed", "call.*", "system.alert"]
    do:
      - record:
          type: "{event.type}"
          id: "{event.id}"
          subject: "{coalesce(event.subject, '')}"
          n: "{get(event.data, 'body.profileId', None)}"
"""


class BusHarness:
    """A real :class:`Bus` with one ``avaya`` source and a rule recording every event."""

    def __init__(self, bus: Bus, recorder: Recorder, tmp_path: Path) -> None:
        self.bus = bus
        self.recorder = recorder
        self.tmp_path = tmp_path

    @property
    def source(self) -> Any:
        return self.bus.sources["av"].source

    @property
    def state(self) -> str:
        return self.bus.sources["av"].state

    def bad_input(self, reason: str) -> float:
        """``ccbus_source_bad_input_total{source="av",reason=...}`` as the bus counts it."""
        return self.bus.counters.get("source_bad_input", source="av", reason=reason)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polling the bus's own counters
                await anyio.sleep(0.01)


@asynccontextmanager
async def running_bus(
    tmp_path: Path, options: dict[str, Any], *, listen: str | None = None
) -> AsyncIterator[BusHarness]:
    """Run a bus whose source ``av`` is an ``avaya`` source with ``options``."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "record.yaml").write_text(textwrap.dedent(RULES))
    config = {
        "sources": {"av": {"plugin": "avaya", "options": options}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"listen": listen} if listen else {"enabled": False},
        "delivery": {"outbox": False},
    }
    (tmp_path / "ccbus.yaml").write_text(yaml.safe_dump(config))
    recorder = Recorder()
    host = PluginHost(autoload=False, extra=[ccbus_avaya, recorder])
    bus = Bus(load_config(tmp_path / "ccbus.yaml"), host, persist_state=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        try:
            yield BusHarness(bus, recorder, tmp_path)
        finally:
            bus.stop()


@pytest.fixture
def bus_with() -> Callable[..., Any]:
    return running_bus


class Collected:
    """A source run with a :class:`SourceContext` whose ``emit`` appends to ``events``."""

    def __init__(self, source: Any, events: list[Event], states: list[str]) -> None:
        self.source = source
        self.events = events
        self.states = states

    def types(self) -> list[str]:
        return [e.type for e in self.events]


@asynccontextmanager
async def collecting_source(tmp_path: Path, options: dict[str, Any]) -> AsyncIterator[Collected]:
    from ccbus_avaya import create_source

    events: list[Event] = []
    states: list[str] = []

    async def emit(event: Event) -> None:
        events.append(event)

    ctx = SourceContext(
        name="av",
        options=AvayaOptions.model_validate(options),
        emit=emit,
        log=logging.getLogger("ccbus.source.av"),
        state_dir=tmp_path / "state",
        set_state=states.append,
    )
    source = create_source(ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        try:
            yield Collected(source, events, states)
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def collect() -> Callable[..., Any]:
    return collecting_source


@pytest.fixture
def simulator() -> Callable[..., AvayaSimulator]:
    """``simulator(**kwargs)``: an :class:`AvayaSimulator` to use with ``async with``."""
    return AvayaSimulator


def agent_state(n: int, state: str = "READY") -> dict[str, Any]:
    """A valid AgentState body numbered ``n`` (its profileId carries the number)."""
    return {
        "event": "AgentState",
        "agentId": f"agent-{n}",
        "profileId": str(n),
        "state": state,
        "id": str(uuid.uuid4()),
    }


@pytest.fixture
def agent_body() -> Callable[..., dict[str, Any]]:
    return agent_state
