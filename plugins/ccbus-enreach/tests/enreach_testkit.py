"""Shared test parts: a real bus with the ``enreach`` source and a recording rule, and the
RTE simulator it talks to.

Imported by name (``from enreach_testkit import ...``): ``conftest.py`` puts this
directory on ``sys.path``; a module named ``conftest`` would clash with the core's
when the whole repository's suite runs in importlib mode.

Every peer is real: the simulator serves HTTP, SignalR negotiate and the
WebSocket hub on loopback (Hypercorn); the source uses httpx and signalrcore
against it; the bus routes through a rule file.  Timings are shrunk through
options, never by patching.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import ccbus_enreach
import pytest
import yaml
from ccbus_enreach.scenarios import ANNA, BERT, CALLBACKS, SALES

from ccbus import ActionSpec, Options, hookimpl
from ccbus.config.file import load_config
from ccbus.plugins import PluginHost
from ccbus.runtime.bus import Bus

#: Short timings for every test: recovery takes milliseconds, not minutes.
FAST: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_cap": 0.3,
    "connect_timeout": 5,
    "invoke_timeout": 5,
}

#: What most tests subscribe to.
SUBSCRIPTIONS: dict[str, Any] = {
    "users": {ANNA: ["UserStatus", "UserCallInArrived", "UserCallInDisconnected"],
              BERT: ["UserAvailability"]},
    "queues": {SALES: ["QueueStatus"]},
    "call_lists": {CALLBACKS: ["CallbackChanged"]},
}
SUBSCRIPTION_COUNT = 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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

        async def run(params: Params, ctx: Any) -> None:
            recorder.calls.append(params.model_dump())

        return [ActionSpec(name="record", params=Params, run=run)]

    def types(self) -> list[str]:
        return [c["type"] for c in self.calls]


RULES = """
rules:
  - name: everything-enreach
    on: ["enreach.*", "agent.state_changed", "call.*", "queue.status"]
    do:
      - record:
          type: "{event.type}"
          id: "{event.id}"
          subject: "{event.subject or '-'}"
"""


class BusHarness:
    """A real :class:`Bus` with one ``enreach`` source ``rte`` and a recording rule."""

    def __init__(self, bus: Bus, recorder: Recorder, tmp_path: Path) -> None:
        self.bus = bus
        self.recorder = recorder
        self.tmp_path = tmp_path

    @property
    def source(self) -> Any:
        return self.bus.sources["rte"].source

    @property
    def state(self) -> str:
        return self.bus.sources["rte"].state

    def bad_input(self) -> dict[str, float]:
        """``ccbus_source_bad_input_total{source="rte",reason}`` as the bus counts it, by reason."""
        return {
            labels["reason"]: value
            for name, labels, value in self.bus.counters.snapshot()
            if name == "source_bad_input" and labels.get("source") == "rte"
        }

    async def wait_for(self, predicate: Callable[[], bool], within: float = 20.0) -> None:
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - polling the bus's own counters
                await anyio.sleep(0.01)


@asynccontextmanager
async def running_bus(
    tmp_path: Path,
    options: dict[str, Any],
    *,
    listen: str | None = None,
    rules: str = RULES,
) -> AsyncIterator[BusHarness]:
    """Run a bus whose source ``rte`` is an ``enreach`` source with ``options``."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "record.yaml").write_text(textwrap.dedent(rules))
    config = {
        "sources": {"rte": {"plugin": "enreach", "options": {**FAST, **options}}},
        "rules": ["rules"],
        "state_dir": "state",
        "http": {"listen": listen} if listen else {"enabled": False},
        "delivery": {"outbox": False},
    }
    (tmp_path / "ccbus.yaml").write_text(yaml.safe_dump(config))
    recorder = Recorder()
    host = PluginHost(autoload=False, extra=[ccbus_enreach, recorder])
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
