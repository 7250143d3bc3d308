"""``ccbus demo``'s live Enreach source: the real plugin against its simulator, on loopback.

The demo enters :func:`demo_simulator` before the bus starts: it starts an
:class:`~ccbus_enreach.simulator.RteSimulator` on a free port, arranges for
the contact-center scenario to play (faster than real time, so a round fits
the demo's few live seconds) as soon as the source has subscribed, and hands
the demo the options that point the ``enreach-live`` source at it.
Everything the source does is its production path: REST token call,
negotiate, WebSocket, SignalR handshake, Subscribe with result checks,
MessageReceived, mapping to native and canonical events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ccbus import DemoSource

from .scenarios import ANNA, BERT, CALLBACKS, CARLA, SALES, SUPPORT, contact_center
from .simulator import RteSimulator

__all__ = ["DEMO_SUBSCRIPTIONS", "demo_simulator", "demo_source"]

USER_EVENTS = [
    "UserStatus",
    "UserAvailability",
    "UserCallInArrived",
    "UserCallInComing",
    "UserCallInUserConnected",
    "UserCallInDisconnected",
    "UserCallInOverflow",
    "UserCallOutGoing",
    "UserCallOutDisconnected",
    "UserWrapUpStarted",
]
DEMO_SUBSCRIPTIONS: dict[str, Any] = {
    "users": {user: USER_EVENTS for user in (ANNA, BERT, CARLA)},
    "queues": {SALES: ["QueueStatus"], SUPPORT: ["QueueStatus"]},
    "call_lists": {CALLBACKS: ["CallbackChanged"]},
}


@asynccontextmanager
async def demo_simulator() -> AsyncIterator[dict[str, Any]]:
    async with RteSimulator() as simulator:
        simulator.play_forever(contact_center, every=2.0, speed=2.5)
        yield simulator.source_options()


def demo_source() -> DemoSource:
    return DemoSource(
        name="enreach-live",
        plugin="enreach",
        # the simulator's URL and credentials come from demo_simulator()
        options={"subscriptions": DEMO_SUBSCRIPTIONS, "backoff_initial": 0.2, "backoff_cap": 2.0},
        simulator=demo_simulator,
    )
