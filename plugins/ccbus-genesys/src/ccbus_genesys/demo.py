"""``ccbus demo``'s live Genesys source: the real plugin against its simulator, on loopback.

The demo enters :func:`demo_simulator` before the bus starts: it starts a
:class:`~ccbus_genesys.simulator.GenesysSimulator` with its own Kafka test
broker, plays the contact-center scenario into the topics in the
background, and hands the demo the options that point the ``genesys-live``
source at that broker.  The source does what it does in production: joins
a consumer group, fetches, maps, emits and commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ccbus import DemoSource

from .scenarios import contact_center
from .simulator import GenesysSimulator

__all__ = ["demo_simulator", "demo_source"]


@asynccontextmanager
async def demo_simulator() -> AsyncIterator[dict[str, Any]]:
    async with GenesysSimulator() as simulator, anyio.create_task_group() as tg:
        # the source starts at the earliest offset, so nothing is missed while it joins
        tg.start_soon(simulator.play, contact_center())
        yield {**simulator.source_options(), "group_id": "ccbus-demo"}
        tg.cancel_scope.cancel()


def demo_source() -> DemoSource:
    return DemoSource(
        name="genesys-live",
        plugin="genesys",
        # short group timings: the demo's consumer joins and leaves in a moment
        options={"heartbeat_interval": 0.5, "session_timeout": 5, "backoff_initial": 0.2,
                 "backoff_cap": 2.0},
        simulator=demo_simulator,
    )
