"""Shared test parts: a real bus with a ``cucm`` source, rules that call every command, and
the emulator.

Every peer is real: the ActiveMQ broker (``activemq`` / ``activemq_factory``)
and the Java JMS peer (``jms_peer``) are made of ``ccbus_peers.activemq``; the
emulator and the source speak STOMP to that broker.  Each test uses its own
connector queue and client topic (the session broker is shared).  Timings
are shrunk through options, never by patching.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import ccbus_cucm
import pytest
import yaml
from ccbus_cucm.protocol import COMMANDS
from ccbus_cucm.simulator import CucmEmulator
from ccbus_peers.activemq import (
    ActiveMQBroker,
    BrokerFactory,
    JmsPeer,
    open_jms_peer,
    require_activemq,
    shared_broker,
    unique_name,
)

from ccbus import ActionSpec, Event, Options, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

#: Broker timings for tests: recovery in fractions of a second.
FAST_BROKER: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.5,
                               "connect_timeout": 10, "heartbeat_send": 2,
                               "heartbeat_receive": 2}


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



class Recorder:
    """A plugin with the action ``record``: it keeps every event the rule saw, in order."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def register_actions(self) -> list[ActionSpec]:
        recorder = self

        class Params(Options):
            type: str
            id: str
            subject: Any = None
            data: Any = None

        async def run(params: Params, ctx: Any) -> None:
            recorder.calls.append(params.model_dump())

        return [ActionSpec(name="record", params=Params, run=run, side_effects=False)]

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["type"] == type_]

    def results(self, command: str | None = None) -> list[dict[str, Any]]:
        return [c["data"] for c in self.of("cucm.CommandResult")
                if command is None or c["data"]["command"] == command]


def rules_text() -> str:
    """One rule per command (``on: test.<action>``) and one recording everything."""
    rules: list[dict[str, Any]] = [{
        "name": "record-everything",
        "on": ["cucm.*", "agent.state_changed", "call.*", "device.status_changed",
               "system.alert"],
        "do": [{"record": {"type": "{event.type}", "id": "{event.id}",
                           "subject": "{event.subject}", "data": "{event.data}"}}],
    }]
    for spec in COMMANDS:
        params = {arg: f"{{get(event.data, '{arg}', '')}}" for arg in ("agent", *spec.args)}
        rules.append({"name": f"do-{spec.action}", "on": f"test.{spec.action}",
                      "do": [{spec.action: params}]})
    rules.append({  # the answer to one command feeds the next: `previous`
        "name": "dial-then-hold", "on": "test.dial_then_hold",
        "do": [{"cucm.make_call": {"agent": "{agent}",
                                   "number": "{get(event.data, 'number', '')}"}},
               {"cucm.hold_call": {"agent": "{agent}",
                                   "connection_id": "{previous.connectionId}"}}],
    })
    return yaml.safe_dump({"rules": rules}, sort_keys=False)


class Harness:
    """A running :class:`Bus` with one ``cucm`` source called ``cucm``."""

    def __init__(self, bus: Bus, recorder: Recorder, tmp_path: Path) -> None:
        self.bus = bus
        self.recorder = recorder
        self.tmp_path = tmp_path

    @property
    def source(self) -> Any:
        return self.bus.sources["cucm"].source

    @property
    def state(self) -> str:
        return self.bus.sources["cucm"].state

    async def wait_for(self, predicate: Callable[[], bool], within: float = 30.0) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polling the bus's own records
                await anyio.sleep(0.02)

    async def recorded(self, type_: str, n: int = 1, within: float = 30.0
                       ) -> list[dict[str, Any]]:
        """Wait until ``n`` events of ``type_`` were recorded (record actions run concurrently,
        after the event's other actions were queued: never assume they already ran)."""
        await self.wait_for(lambda: len(self.recorder.of(type_)) >= n, within)
        return self.recorder.of(type_)

    async def results(self, command: str, n: int = 1) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.recorder.results(command)) >= n)
        return self.recorder.results(command)

    async def command(self, action: str, **data: Any) -> Event:
        """Trigger ``action`` through its rule, as a vendor event would."""
        event = Event(type=f"test.{action}", source="test", data=data)
        await self.bus.publish(event)
        return event

    def outcomes(self, action: str) -> dict[str, float]:
        return {o: self.bus.counters.get("actions", action=action, outcome=o)
                for o in ("ok", "retry", "dead_letter")}

    def dead_letters(self) -> list[Any]:
        return list(self.bus.dispatcher.store.dead_letters())

    def bad_input(self, reason: str) -> float:
        return self.bus.counters.get("source_bad_input", source="cucm", reason=reason)


@asynccontextmanager
async def running_bus(tmp_path: Path, options: dict[str, Any], *,
                      delivery: dict[str, Any] | None = None) -> AsyncIterator[Harness]:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "cucm.yaml").write_text(textwrap.dedent(rules_text()))
    config = {
        "sources": {"cucm": {"plugin": "cucm", "options": options}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"enabled": False},
        "delivery": {"outbox": True, "backoff_initial": 0.1, "backoff_cap": 0.5,
                     "attempts": 4, **(delivery or {})},
    }
    (tmp_path / "ccbus.yaml").write_text(yaml.safe_dump(config))
    recorder = Recorder()
    host = PluginHost(autoload=False, extra=[ccbus_cucm, recorder])
    bus = Bus(load_config(tmp_path / "ccbus.yaml"), host, persist_state=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.run(watch_rules=False))
        await bus.started.wait()
        try:
            yield Harness(bus, recorder, tmp_path)
        finally:
            bus.stop()


@pytest.fixture
def bus_with() -> Callable[..., Any]:
    return running_bus


def source_options(broker: ActiveMQBroker, queue_name: str, **extra: Any) -> dict[str, Any]:
    """Options for a ``cucm`` source on ``broker``, with its own client topic, fast timings."""
    return {
        "broker": {"url": broker.stomp_url, **FAST_BROKER},
        "connector_queue": queue_name,
        "client_topic": unique_name("ccbus.cucm.client"),
        "hello_interval": 0.5,
        "keepalive_interval": 2,
        "command_ttl": 5,
        "answer_timeout": 5,
        **extra,
    }


@pytest.fixture
def options_for() -> Callable[..., dict[str, Any]]:
    return source_options


@asynccontextmanager
async def emulator_on(broker: ActiveMQBroker, queue_name: str, **kwargs: Any
                      ) -> AsyncIterator[CucmEmulator]:
    from ccbus_stomp import StompOptions

    options = StompOptions.model_validate({"url": broker.stomp_url, **FAST_BROKER})
    async with CucmEmulator(options, connector_queue=queue_name, **kwargs) as emulator:
        await emulator.wait_connected(60)
        yield emulator


@pytest.fixture
def emulator() -> Callable[..., Any]:
    """``async with emulator(broker, queue, pattern=...) as emu``: a running CUCM emulator."""
    return emulator_on
