"""Fixtures of the ccbus-enreach tests: short timings, what most tests subscribe to, and
``enreach_bus``: a real bus (``ccbus.testing``'s ``ccbus_bus``) with one ``enreach``
source ``rte`` and a rule recording its events.

Every peer is real: the simulator serves HTTP, SignalR negotiate and the
WebSocket hub on loopback (Hypercorn); the source uses httpx and signalrcore
against it; the bus routes through a rule file.  Timings are shrunk through
options, never by patching.  Everything shared is a fixture here: the test
modules import nothing from each other or from this directory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import ccbus_enreach
import pytest
from ccbus_enreach.scenarios import ANNA, BERT, CALLBACKS, SALES

from ccbus.testing import BusHarness, Recorder

#: Short timings for every test: recovery takes milliseconds, not minutes.
FAST: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_cap": 0.3,
    "connect_timeout": 5,
    "invoke_timeout": 5,
}

#: What most tests subscribe to: SUBSCRIPTION_COUNT (entity, event) pairs.
SUBSCRIPTIONS: dict[str, Any] = {
    "users": {ANNA: ["UserStatus", "UserCallInArrived", "UserCallInDisconnected"],
              BERT: ["UserAvailability"]},
    "queues": {SALES: ["QueueStatus"]},
    "call_lists": {CALLBACKS: ["CallbackChanged"]},
}
SUBSCRIPTION_COUNT = 6

#: The rule ``enreach_bus`` records with unless given others.
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


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def subscriptions() -> dict[str, Any]:
    """What most tests subscribe to (a fresh copy): ``subscription_count`` pairs."""
    return copy.deepcopy(SUBSCRIPTIONS)


@pytest.fixture
def subscription_count() -> int:
    """How many (entity, event) subscriptions ``subscriptions`` holds."""
    return SUBSCRIPTION_COUNT


@pytest.fixture
def ccbus_recorder() -> Recorder:
    """``ccbus_bus``'s recorder: the action ``record`` with what the rules render (type, id,
    subject), read as ``call.params["type"]``..."""
    return Recorder(params=("type", "id", "subject"))


@pytest.fixture
def enreach_bus(
    ccbus_bus: Callable[..., AbstractAsyncContextManager[BusHarness]],
) -> Callable[..., AbstractAsyncContextManager[BusHarness]]:
    """``async with enreach_bus(options, listen=None, rules=RULES) as bus``: a running bus
    whose source ``rte`` is an ``enreach`` source with :data:`FAST` and ``options``."""

    def start(
        options: dict[str, Any], *, listen: str | None = None, rules: str = RULES
    ) -> AbstractAsyncContextManager[BusHarness]:
        return ccbus_bus(
            sources={"rte": {"plugin": "enreach", "options": {**FAST, **options}}},
            rules=rules,
            plugins=[ccbus_enreach],
            listen=listen,
        )

    return start
