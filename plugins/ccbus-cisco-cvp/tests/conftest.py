"""Fixtures of the cisco-cvp tests: the document's payloads, the real peers, and a
``cisco-cvp`` source on ccbus's own harness (:mod:`ccbus.testing`).

``cvp_bus``
    a real bus (``ccbus_bus``) whose one source ``cvp`` is a ``cisco-cvp`` source,
    with :data:`RULES` recording every CVP event: ``h.recorder.of(type)`` holds the
    calls, ``call.value`` the call's callGuid / callId (or an alert's message).
``cvp_source``
    ``ccbus_source`` for a ``cisco-cvp`` source ``cvp``, entered once it listens.

Every peer is real: the broker is ActiveMQ (``activemq``, ``activemq_factory``,
made of ``ccbus_peers.activemq``), CVP's side is the Java JMS peer (``jms_peer``)
or the simulator over STOMP, syslog comes from util-linux's ``logger``.  Nothing
here is imported by the test modules: they ask for fixtures by name.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import ccbus_cisco_cvp
import pytest
from ccbus_cisco_cvp.scenarios import Item, call_flow, system_events

from ccbus import Event
from ccbus.testing import BusHarness, Collected, Recorder, collecting_source


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def document_payloads() -> dict[str, dict[str, Any]]:
    """One valid payload per channel key, as the document shapes them."""
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


#: What ``cvp_bus`` records: every CVP event, the call's value its callGuid or callId
#: (or the alert's message); type, id and subject are read from ``call.event``.
RULES = """
rules:
  - name: everything-cvp
    on: ["cvp.*", "call.*", "system.alert", "device.status_changed"]
    do:
      - record: >-
          {coalesce(get(event.data, 'callGuid'), get(event.data, 'callId'),
          get(event.data, 'message'))}
"""


@pytest.fixture
def cvp_bus(
    ccbus_bus: Callable[..., AbstractAsyncContextManager[BusHarness]],
) -> Callable[..., AbstractAsyncContextManager[BusHarness]]:
    """``async with cvp_bus(options, delivery=None) as h``: a running bus whose source ``cvp``
    is a ``cisco-cvp`` source with ``options`` (the outbox in memory unless ``delivery``
    says otherwise), and :data:`RULES` recording its events with a fresh recorder."""

    def start(
        options: dict[str, Any], *, delivery: dict[str, Any] | None = None
    ) -> AbstractAsyncContextManager[BusHarness]:
        return ccbus_bus(
            sources={"cvp": {"plugin": "cisco-cvp", "options": options}},
            rules=RULES,
            plugins=[ccbus_cisco_cvp],
            recorder=Recorder(),
            delivery=delivery,
        )

    return start


@pytest.fixture
def cvp_source(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Collected]]:
    """``async with cvp_source(options, emit=None, tmp_path=None) as c``: a ``cisco-cvp``
    source ``cvp`` run alone (``ccbus.testing.collecting_source``), entered once its
    listeners are bound and its subscriptions made; ``emit`` is awaited for each event."""
    default = tmp_path

    @asynccontextmanager
    async def run(
        options: dict[str, Any], *, emit: Callable[[Event], Awaitable[None]] | None = None,
        tmp_path: Path | None = None,
    ) -> AsyncIterator[Collected]:
        async with collecting_source(tmp_path or default, "cisco-cvp", options,
                                     plugins=[ccbus_cisco_cvp], name="cvp", emit=emit) as c:
            with anyio.fail_after(30):
                await c.source.listening.wait()
            yield c

    return run


# activemq, activemq_factory and jms_peer come from ccbus_peers' pytest plugin.
