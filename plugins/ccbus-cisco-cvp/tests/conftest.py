"""Shared test parts: a real bus with a recording rule and a ``cisco-cvp`` source, a source
whose ``emit`` collects, and the document's payloads.

Every peer is real: the broker is ActiveMQ (``activemq`` fixture, made of
``ccbus_peers.activemq``), CVP's side is the Java JMS peer (``jms_peer``) or the
simulator over STOMP, syslog comes from util-linux's ``logger``.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import ccbus_cisco_cvp
import pytest
import yaml
from ccbus_cisco_cvp.options import CvpOptions
from ccbus_cisco_cvp.scenarios import Item, call_flow, system_events
from ccbus_peers.activemq import (
    ActiveMQBroker,
    BrokerFactory,
    JmsPeer,
    open_jms_peer,
    require_activemq,
    shared_broker,
)

from ccbus import ActionSpec, Event, Options, SourceContext, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

#: Short timings: recovery in fractions of a second.
FAST_BROKER: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.5,
                               "connect_timeout": 10}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the real peers (ccbus_peers.activemq): a private ActiveMQ broker, a Java JMS peer ----


@pytest.fixture(scope="session")
def activemq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveMQBroker]:
    """The session's private ActiveMQ broker (stomp, stomp+ssl, OpenWire), shared by plugins."""
    require_activemq()
    with shared_broker(lambda: tmp_path_factory.mktemp("activemq")) as broker:
        yield broker


@pytest.fixture
def activemq_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """``activemq_factory(users=..., tls=...)``: a started private broker, for this test only."""
    require_activemq()
    with BrokerFactory(lambda: tmp_path_factory.mktemp("activemq-private")) as factory:
        yield factory


@pytest.fixture
def jms_peer() -> Callable[..., AbstractAsyncContextManager[JmsPeer]]:
    """``async with jms_peer(broker) as peer``: a Java JMS peer on ``broker``'s OpenWire port."""
    require_activemq()
    return open_jms_peer



def document_payloads() -> dict[str, dict[str, Any]]:
    """One valid payload per channel key, as the document shapes them."""
    import random

    rng = random.Random(7)
    start = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
    items: list[Item] = []
    for outcome in ("agent", "abandoned", "error"):
        items += call_flow(rng, start, outcome)
    items += system_events(rng, start)
    payloads: dict[str, dict[str, Any]] = {}
    for key, payload in items:
        payloads.setdefault(key, payload)
    return payloads


@pytest.fixture
def payloads() -> dict[str, dict[str, Any]]:
    return document_payloads()


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
            key: Any = None

        async def run(params: Params, ctx: Any) -> None:
            recorder.calls.append(params.model_dump())

        return [ActionSpec(name="record", params=Params, run=run)]

    def types(self) -> list[str]:
        return [c["type"] for c in self.calls]

    def keys(self, type_: str) -> list[Any]:
        return [c["key"] for c in self.calls if c["type"] == type_]


RULES = """
rules:
  - name: everything-cvp
    on: ["cvp.*", "call.*", "system.alert", "device.status_changed"]
    do:
      - record:
          type: "{event.type}"
          id: "{event.id}"
          subject: "{coalesce(event.subject, '')}"
          key: >-
            {coalesce(get(event.data, 'callGuid'), get(event.data, 'callId'),
            get(event.data, 'message'))}
"""


class BusHarness:
    def __init__(self, bus: Bus, recorder: Recorder, tmp_path: Path) -> None:
        self.bus = bus
        self.recorder = recorder
        self.tmp_path = tmp_path

    @property
    def source(self) -> Any:
        return self.bus.sources["cvp"].source

    async def wait_for(self, predicate: Callable[[], bool], within: float = 30.0) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polling the bus's own counters
                await anyio.sleep(0.02)


@asynccontextmanager
async def running_bus(tmp_path: Path, options: dict[str, Any], *,
                      delivery: dict[str, Any] | None = None) -> AsyncIterator[BusHarness]:
    """Run a bus whose source ``cvp`` is a ``cisco-cvp`` source with ``options``
    (and ``delivery`` options: the outbox is in memory unless they say otherwise)."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "record.yaml").write_text(textwrap.dedent(RULES))
    config = {
        "sources": {"cvp": {"plugin": "cisco-cvp", "options": options}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": False, **(delivery or {})},
    }
    (tmp_path / "ccbus.yaml").write_text(yaml.safe_dump(config))
    recorder = Recorder()
    host = PluginHost(autoload=False, extra=[ccbus_cisco_cvp, recorder])
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
    def __init__(self, source: Any, events: list[Event], states: list[str]) -> None:
        self.source = source
        self.events = events
        self.states = states

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 30.0) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polling what the source collected
                await anyio.sleep(0.02)


@asynccontextmanager
async def collecting_source(
    tmp_path: Path, options: dict[str, Any], *, emit: Any = None
) -> AsyncIterator[Collected]:
    """A ``cisco-cvp`` source run directly; ``emit`` (optional) is awaited for each event."""
    from ccbus_cisco_cvp import create_source

    events: list[Event] = []
    states: list[str] = []

    async def collect(event: Event) -> None:
        if emit is not None:
            await emit(event)
        events.append(event)

    ctx = SourceContext(
        name="cvp",
        options=CvpOptions.model_validate(options),
        emit=collect,
        log=logging.getLogger("ccbus.source.cvp"),
        state_dir=tmp_path / "state",
        set_state=states.append,
    )
    source = create_source(ctx)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        with anyio.fail_after(30):
            await source.listening.wait()
        try:
            yield Collected(source, events, states)
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def collect() -> Callable[..., Any]:
    return collecting_source
