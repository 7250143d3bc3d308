"""Fixtures of the ccbus-avaya tests: the vendor document's payloads, the simulator,
short timings, and ``avaya_bus``: a real bus (``ccbus.testing``'s ``ccbus_bus``) with
one ``avaya`` source ``av`` and a rule recording its events.

Every peer is real: the simulator serves HTTP and WebSockets on loopback, the
source uses httpx and websockets against it, and the bus routes through a
rule file.  Timings are shrunk through the source's options (backoff, ping,
renewal), never by patching.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import ccbus_avaya
import pytest
from ccbus_avaya.protocol import BODY_EVENTS
from ccbus_avaya.simulator import AvayaSimulator

from ccbus.testing import BusHarness, Recorder

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


class AvayaRecorder(Recorder):
    """The action ``record`` with what :data:`RULES` renders: type, id, subject and ``n``."""

    def __init__(self) -> None:
        super().__init__(params=("type", "id", "subject", "n"))

    def numbers(self) -> list[Any]:
        """Each recorded body's ``profileId`` (what :func:`agent_state` numbers), in order."""
        return [c.params["n"] for c in self.calls if c.params["n"] is not None]


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


@pytest.fixture
def ccbus_recorder() -> AvayaRecorder:
    """``ccbus_bus``'s recorder: an :class:`AvayaRecorder` (``bus.recorder.numbers()``)."""
    return AvayaRecorder()


@pytest.fixture
def avaya_bus(
    ccbus_bus: Callable[..., AbstractAsyncContextManager[BusHarness]],
) -> Callable[..., AbstractAsyncContextManager[BusHarness]]:
    """``async with avaya_bus(options, listen=None) as h``: a running bus whose source ``av``
    is an ``avaya`` source with ``options``, and :data:`RULES` recording its events."""

    def start(
        options: dict[str, Any], *, listen: str | None = None
    ) -> AbstractAsyncContextManager[BusHarness]:
        return ccbus_bus(
            sources={"av": {"plugin": "avaya", "options": options}},
            rules=RULES,
            plugins=[ccbus_avaya],
            listen=listen,
        )

    return start


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
