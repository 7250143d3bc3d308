"""Realistic Voice Microservices sequences for the simulator, the demo, tests and benchmark.

A scenario is a list of :class:`Step`: which topic, which key, which payload,
and how long after the previous step.  Payloads follow the layout the
plugin assumes (see :mod:`ccbus_genesys.mapping`): the event name in
``id``, T-Library attribute names, the T-Library time in ``time``.

``contact_center()`` plays a short morning: two agents log in and get ready,
one call is answered, transferred to the other agent and released; another
caller gives up in the queue; a DN goes out of service and comes back; an
agent goes to lunch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .catalogue import AGENT_STATE, CALL_THREAD

__all__ = ["SCENARIOS", "TENANT", "Step", "agent_flaps", "agent_step", "contact_center"]

TENANT = "9350e2fc-a1dd-4c65-8d40-1f75a2e080dd"
SERVER = "voice-sip-0"


@dataclass(slots=True)
class Step:
    kind: str  # AGENT_STATE or CALL_THREAD
    key: str
    payload: dict[str, Any]
    #: seconds after the previous step
    after: float = 0.0


def _now() -> dict[str, int]:
    now = time.time()
    return {"TimeinSecs": int(now), "TimeinuSecs": int((now % 1) * 1_000_000)}


class _Agent:
    def __init__(self, tenant: str, agent_id: str, dn: str, queue: str) -> None:
        self.tenant, self.agent_id, self.dn, self.queue = tenant, agent_id, dn, queue

    def step(self, name: str, after: float = 0.0, **fields: Any) -> Step:
        payload: dict[str, Any] = {
            "id": name, "Server": SERVER, "ThisDN": self.dn, "ThisQueue": self.queue,
            "AgentID": self.agent_id, "CustomerID": self.tenant, **fields,
        }
        return Step(AGENT_STATE, f"{self.tenant}:{self.agent_id}", payload, after)


class _Call:
    def __init__(self, tenant: str, number: int, ani: str, dnis: str = "8005550123") -> None:
        self.tenant = tenant
        self.thread = str(uuid.uuid4())
        self.conn_id = f"007d02c8{number:08x}"
        self.call_id = 18000 + number
        self.ani, self.dnis = ani, dnis

    def step(self, name: str, this_dn: str, after: float = 0.0, **fields: Any) -> Step:
        payload: dict[str, Any] = {
            "id": name, "Server": SERVER, "CallID": self.call_id, "CallState": "Ok",
            "CallThreadID": self.thread, "CallType": "Inbound", "ConnID": self.conn_id,
            "ThisDN": this_dn, "ThisDNRole": "Destination", "ANI": self.ani, "DNIS": self.dnis,
            "CustomerID": self.tenant, **fields,
        }
        return Step(CALL_THREAD, f"{self.tenant}:{self.thread}", payload, after)


def contact_center(tenant: str = TENANT) -> list[Step]:
    """About 5 seconds of a small contact center (see the module docstring)."""
    anna = _Agent(tenant, "5001", "7001", "8100")
    ben = _Agent(tenant, "5002", "7002", "8100")
    answered = _Call(tenant, 1, "4155550199")
    gave_up = _Call(tenant, 2, "6505550134")
    rp, queue = "8000", "8100"
    return [
        anna.step("EventAgentLogin", AgentWorkMode="ManualIn", Extensions={}),
        ben.step("EventAgentLogin", 0.1, AgentWorkMode="ManualIn", Extensions={}),
        anna.step("EventAgentReady", 0.2, AgentWorkMode="ManualIn"),
        ben.step("EventAgentReady", 0.1, AgentWorkMode="ManualIn"),
        answered.step("EventRouteRequest", rp, 0.3, UserData={"IVR_Intent": "billing"}),
        answered.step("EventQueued", queue, 0.2, ThisQueue=queue),
        answered.step("EventDiverted", queue, 0.3, ThisQueue=queue, OtherDN="7001"),
        answered.step("EventRinging", "7001", 0.05, ThisQueue=queue, AgentID="5001"),
        answered.step("EventEstablished", "7001", 0.4, ThisQueue=queue, AgentID="5001",
                      OtherDN=answered.ani, OtherDNRole="Origination"),
        gave_up.step("EventRouteRequest", rp, 0.2),
        gave_up.step("EventQueued", queue, 0.1, ThisQueue=queue),
        gave_up.step("EventAbandoned", queue, 0.8, ThisQueue=queue),
        answered.step("EventHeld", "7001", 0.2, AgentID="5001"),
        answered.step("EventPartyChanged", "7002", 0.3, ThisQueue=queue, AgentID="5002",
                      OtherDN=answered.ani, PreviousConnID="007d02c8ffffffff"),
        answered.step("EventReleased", "7001", 0.05, AgentID="5001", ThirdPartyDN="7002",
                      ThirdPartyDNRole="TransferredTo"),
        anna.step("EventAgentNotReady", 0.05, AgentWorkMode="AfterCallWork"),
        anna.step("EventDNOutOfService", 0.3),
        anna.step("EventDNBackInService", 0.4),
        anna.step("EventAgentNotReady", 0.2, AgentWorkMode="AuxWork",
                  Reasons={"ReasonCode": "Lunch"}),
        answered.step("EventReleased", "7002", 0.4, AgentID="5002",
                      OtherDN=answered.ani, OtherDNRole="Origination"),
        ben.step("EventAgentReady", 0.1, AgentWorkMode="ManualIn"),
    ]


def agent_flaps(count: int, tenant: str = TENANT, agents: int = 50) -> list[Step]:
    """``count`` Ready/NotReady events of ``agents`` agents, no pauses (load for benchmarks)."""
    pool = [_Agent(tenant, str(6000 + n), str(7100 + n), "8100") for n in range(agents)]
    steps = []
    for n in range(count):
        name = "EventAgentReady" if (n // agents) % 2 == 0 else "EventAgentNotReady"
        steps.append(pool[n % agents].step(name, AgentWorkMode="ManualIn", seq=n))
    return steps


def agent_step(n: int, name: str = "EventAgentReady", tenant: str = TENANT) -> Step:
    """An agent-state record numbered ``n`` (in ``seq``), for agent ``a<n % 7>`` (tests)."""
    payload = {"id": name, "AgentID": f"a{n % 7}", "ThisDN": f"70{n % 7}",
               "AgentWorkMode": "ManualIn", "seq": n}
    return Step(AGENT_STATE, f"{tenant}:a{n % 7}", payload)


SCENARIOS: dict[str, Callable[[], list[Step]]] = {"contact-center": contact_center}


def stamp(step: Step) -> dict[str, Any]:
    """The step's payload with the T-Library time of now."""
    return {**step.payload, "time": _now()}
