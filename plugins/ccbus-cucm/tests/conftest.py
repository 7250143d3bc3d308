"""Fixtures of the cucm tests: a real bus with a ``cucm`` source and rules that call every
command (on ccbus's own harness, :mod:`ccbus.testing`), the Connector emulator, the real peers.

``cucm_bus``
    ``async with cucm_bus(options, delivery=None) as h``: ``ccbus_bus`` with one ``cucm``
    source ``cucm``, the SQLite outbox, and :func:`rules_text`: publishing
    ``test.<action>`` (``await h.publish("test.cucm.login", agent="1001")``) runs that
    command; every CUCM event is recorded (:class:`CucmRecorder`: ``h.recorder.of(type)``,
    ``h.recorder.results(command)``); ``h.counter("actions", action=..., outcome=...)``
    counts the commands' outcomes.
``options_for``, ``emulator``
    source options on a broker with this test's own topics and fast timings, and a
    running CUCM Connector emulator.

Every peer is real: the ActiveMQ broker (``activemq`` / ``activemq_factory``)
and the Java JMS peer (``jms_peer``) are made of ``ccbus_peers.activemq``; the
emulator and the source speak STOMP to that broker.  Each test uses its own
connector queue and client topic (the session broker is shared).  Timings
are shrunk through options, never by patching.  Nothing here is imported by the
test modules: they ask for fixtures by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import ccbus_cucm
import pytest
import yaml
from ccbus_cucm.protocol import COMMANDS
from ccbus_cucm.simulator import CucmEmulator
from ccbus_peers.activemq import (
    ActiveMQBroker,
    unique_name,
)
from ccbus_stomp import StompOptions

from ccbus.testing import BusHarness, Recorder

#: Broker timings for tests: recovery in fractions of a second.
FAST_BROKER: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.5,
                               "connect_timeout": 10, "heartbeat_send": 2,
                               "heartbeat_receive": 2}
#: Delivery for tests: the outbox, quick retries, four attempts (``delivery=`` overrides).
DELIVERY: dict[str, Any] = {"backoff_initial": 0.1, "backoff_cap": 0.5, "attempts": 4}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CucmRecorder(Recorder):
    """The action ``record``, with the commands' results (``cucm.CommandResult`` events)."""

    def results(self, command: str | None = None) -> list[dict[str, Any]]:
        """The data of each recorded CommandResult (of ``command`` if given), in order."""
        return [c.event.data for c in self.of("cucm.CommandResult")
                if command is None or c.event.data["command"] == command]

    async def wait_results(self, command: str, n: int = 1,
                           timeout: float = 30.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Wait until ``n`` results of ``command`` were recorded; all of them (record actions
        run concurrently, after the event's other actions were queued: never assume they ran)."""
        await self.wait_count(n, lambda c: c.event.type == "cucm.CommandResult"
                              and c.event.data["command"] == command, timeout=timeout)
        return self.results(command)


def rules_text() -> str:
    """One rule per command (``on: test.<action>``) and one recording everything."""
    rules: list[dict[str, Any]] = [{
        "name": "record-everything",
        "on": ["cucm.*", "agent.state_changed", "call.*", "device.status_changed",
               "system.alert"],
        "do": [{"record": None}],
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


@pytest.fixture
def cucm_bus(
    ccbus_bus: Callable[..., AbstractAsyncContextManager[BusHarness]],
) -> Callable[..., AbstractAsyncContextManager[BusHarness]]:
    """``async with cucm_bus(options, delivery=None) as h``: a running bus whose source
    ``cucm`` has ``options``, with the outbox, :func:`rules_text` and a fresh
    :class:`CucmRecorder` (two buses in one test record apart)."""

    def start(
        options: dict[str, Any], *, delivery: dict[str, Any] | None = None
    ) -> AbstractAsyncContextManager[BusHarness]:
        return ccbus_bus(
            sources={"cucm": {"plugin": "cucm", "options": options}},
            rules=rules_text(),
            plugins=[ccbus_cucm],
            recorder=CucmRecorder(),
            outbox=True,
            delivery={**DELIVERY, **(delivery or {})},
        )

    return start


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
    options = StompOptions.model_validate({"url": broker.stomp_url, **FAST_BROKER})
    async with CucmEmulator(options, connector_queue=queue_name, **kwargs) as emulator:
        await emulator.wait_connected(60)
        yield emulator


@pytest.fixture
def emulator() -> Callable[..., Any]:
    """``async with emulator(broker, queue, pattern=...) as emu``: a running CUCM emulator."""
    return emulator_on


# activemq, activemq_factory and jms_peer come from ccbus_peers' pytest plugin.
