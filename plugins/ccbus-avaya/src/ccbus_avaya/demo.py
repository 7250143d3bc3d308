"""``ccbus demo``'s live Avaya source: the real plugin against its simulator, on loopback.

The demo enters :func:`demo_simulator` before the bus starts: it starts an
:class:`~ccbus_avaya.simulator.AvayaSimulator` on a free port, queues the
contact-center scenario to start as soon as the source has authenticated,
and hands the demo the options that point the ``avaya-live`` source at it.
Everything the source does is its production path: token, subscription
REST call, WebSocket, authentication, pings, validation and mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ccbus import DemoSource

from .scenarios import contact_center
from .simulator import AvayaSimulator

__all__ = ["demo_source", "demo_simulator"]


@asynccontextmanager
async def demo_simulator() -> AsyncIterator[dict[str, Any]]:
    async with AvayaSimulator() as simulator:
        simulator.play_when_connected(contact_center())
        yield simulator.source_options()


def demo_source() -> DemoSource:
    return DemoSource(
        name="avaya-live",
        plugin="avaya",
        # the simulator's credentials and URL come from demo_simulator()
        options={"backoff_initial": 0.2, "backoff_cap": 2.0},
        simulator=demo_simulator,
    )
