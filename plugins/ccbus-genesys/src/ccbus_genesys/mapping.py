"""From one Kafka record's JSON payload to ccbus events: the native one, then canonical ones.

The Voice Microservices document names the topics, their keys and the events
on each, but not the payload layout.  What this module assumes, and why:

* The event name is the payload field ``event_field`` (default ``id``):
  Genesys's published sample is ``{"id": EventAgentLogin, AgentID, ThisDN,
  AgentWorkMode, Extensions: {}}``.
* The other fields carry T-Library attribute names without the
  ``Attribute`` prefix, as in that sample: ``ThisDN``, ``OtherDN``,
  ``ThisQueue``, ``ANI``, ``DNIS``, ``CallType``, ``AgentID``,
  ``AgentWorkMode``, ``Reasons``, ``ThirdPartyDNRole``.  A missing field
  only leaves the matching canonical field out.
* The time is ``time.TimeinSecs`` + ``time.TimeinuSecs`` when present (the
  T-Library event time), else any timestamp in ``time``, else the Kafka
  record's timestamp, else the receive time.

Native events: ``genesys.<name>``, ``id`` = ``<topic>-<partition>-<offset>``
(unique per record, and the same when a record is delivered again after a
restart, so the bus's duplicate window drops the repeat), ``subject`` = the
agent or call-thread id from the key, the tenant as extension ``tenant``,
``data`` = the payload as sent.

Canonical events follow the table in the plugin README.  The call lifecycle
needs memory (a call starts once, however many DNs it rings; it ends once,
however many legs are released), kept per call thread in a bounded LRU
table so memory stays flat whatever the traffic.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from ccbus import Event, parse_timestamp

from .catalogue import AGENT_STATE, ALL_EVENTS

__all__ = ["Key", "Mapper", "NativeRecord", "parse_key", "valid_event_name"]

VENDOR = "genesys"

#: Agent-state events -> canonical agent state (NotReady may become after_call_work).
AGENT_STATES = {
    "EventAgentLogin": "logged_in",
    "EventAgentLogout": "logged_out",
    "EventAgentReady": "available",
    "EventAgentNotReady": "not_ready",
}
#: AgentWorkMode values that mean after-call work (T-Library spells it both ways).
AFTER_CALL_WORK = frozenset({"AfterCallWork", "AgentAfterCallWork"})
DEVICE_STATUS = {"EventDNOutOfService": "down", "EventDNBackInService": "up"}

#: Call-thread events that may be a call's first sight: they start it (call.started).
STARTS = frozenset(
    {"EventRouteRequest", "EventRinging", "EventDialing", "EventQueued", "EventEstablished",
     "EventNetworkReached"}
)
#: ThirdPartyDNRole values of an EventReleased that ends only the transferring leg.
TRANSFER_LEG = frozenset({"TransferredTo", "ConferencedTo"})

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")


def valid_event_name(name: object) -> TypeGuard[str]:
    """A name fit to be part of an event type (letters, digits, ``_.-``; at most 100).
    The document's names are known to be (nearly every record has one of them)."""
    return isinstance(name, str) and (name in ALL_EVENTS or _NAME.match(name) is not None)


# Key and NativeRecord are made for every record: not frozen, whose __init__ costs
# three times as much (object.__setattr__ per field); nothing changes them anyway.
@dataclass(slots=True)
class Key:
    """A record key ``{tenant_id}:{id}``; ``ok`` is False when it did not parse."""

    tenant: str | None
    id: str | None
    raw: str | None
    ok: bool


def parse_key(key: bytes | None) -> Key:
    """Split ``{tenant_id}:{agent_id}`` / ``{tenant_id}:{callthread_id}`` at the first colon."""
    if key is None:
        return Key(None, None, None, False)
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return Key(None, None, key.decode("utf-8", "replace"), False)
    tenant, colon, ident = text.partition(":")
    if not colon or not tenant or not ident:
        return Key(None, None, text, False)
    return Key(tenant, ident, text, True)


@dataclass(slots=True)
class NativeRecord:
    """Where a payload came from: what the mapper needs of the Kafka record."""

    topic: str
    kind: str
    partition: int
    offset: int
    timestamp: int | None
    key: Key


@dataclass(slots=True)
class Call:
    """What the mapper remembers of one call thread."""

    started: datetime | None = None
    queued: datetime | None = None
    caller: str | None = None
    called: str | None = None
    queue: str | None = None
    agent: str | None = None
    answered: bool = False
    ended: bool = False


@dataclass(slots=True)
class Mapped:
    events: list[Event] = field(default_factory=list)
    known: bool = True


class Mapper:
    """Maps the payloads of one source instance; keeps per-call-thread and per-DN state."""

    def __init__(self, source: str, *, max_calls: int = 10_000) -> None:
        self.source = source
        self.max_calls = max_calls
        self.calls: OrderedDict[str, Call] = OrderedDict()
        self.devices: OrderedDict[str, str] = OrderedDict()

    # -- native -----------------------------------------------------------------------

    def map(self, name: str, doc: dict[str, Any], where: NativeRecord,
            received: datetime) -> Mapped:
        """The events for one payload whose event name is ``name``: the native one first."""
        moment = event_time(doc, where.timestamp) or received
        key = where.key
        extensions: dict[str, Any] = {
            "kafkatopic": where.topic,
            "kafkapartition": where.partition,
            "kafkaoffset": where.offset,
        }
        if key.tenant is not None:
            extensions["tenant"] = key.tenant
        if not key.ok and key.raw is not None:
            extensions["kafkakey"] = key.raw
        subject = key.id if key.ok else key.raw
        native = Event(
            type=f"{VENDOR}.{name}",
            source=self.source,
            data=doc,
            id=f"{where.topic}-{where.partition}-{where.offset}",
            subject=subject,
            time=moment,
            vendor=VENDOR,
            receivedat=received,
            extensions=extensions,
        )
        out = Mapped(events=[native], known=name in ALL_EVENTS)
        if where.kind == AGENT_STATE:
            canonical = self._agent(name, doc, subject)
        else:
            canonical = self._call(name, doc, subject, moment)
        for number, (kind, data) in enumerate(canonical, start=1):
            data["nativeType"] = native.type
            out.events.append(
                Event(
                    type=kind,
                    source=self.source,
                    data=data,
                    id=f"{native.id}:canonical" + (f":{number}" if number > 1 else ""),
                    subject=str(data.get(_KEY_FIELD[kind])),
                    time=moment,
                    vendor=VENDOR,
                    receivedat=received,
                    extensions=dict(extensions),
                )
            )
        return out

    # -- canonical: agents and DNs ----------------------------------------------------------

    def _agent(self, name: str, doc: dict[str, Any], subject: str | None) -> list[Canonical]:
        if name in AGENT_STATES:
            agent = subject or _text(doc.get("AgentID"))
            if agent is None:
                return []
            state = AGENT_STATES[name]
            if state == "not_ready" and doc.get("AgentWorkMode") in AFTER_CALL_WORK:
                state = "after_call_work"
            data: dict[str, Any] = {"agentId": agent, "state": state, "nativeState": name}
            reason = _reason(doc.get("Reasons"))
            if reason is not None:
                data["reason"] = reason
            return [("agent.state_changed", data)]
        if name in DEVICE_STATUS:
            device = _text(doc.get("ThisDN")) or subject
            if device is None:
                return []
            status = DEVICE_STATUS[name]
            data = {"deviceId": device, "status": status, "deviceType": "dn"}
            previous = self.devices.pop(device, None)
            if previous is not None:
                data["previousStatus"] = previous
            self.devices[device] = status
            while len(self.devices) > self.max_calls:
                self.devices.popitem(last=False)
            return [("device.status_changed", data)]
        return []

    # -- canonical: calls --------------------------------------------------------------------

    def _call(self, name: str, doc: dict[str, Any], subject: str | None,
              moment: datetime) -> list[Canonical]:
        call_id = subject or _text(doc.get("CallThreadID")) or _text(doc.get("ConnID"))
        if call_id is None:
            return []
        call = self.calls.get(call_id)
        out: list[Canonical] = []
        if call is None:
            call = Call()
            self.calls[call_id] = call
            while len(self.calls) > self.max_calls:
                self.calls.popitem(last=False)
            if name in STARTS:
                out.append(("call.started", self._started(call, call_id, doc, moment)))
        else:
            self.calls.move_to_end(call_id)
        call.caller = call.caller or _text(doc.get("ANI"))
        call.called = call.called or _text(doc.get("DNIS"))
        agent = _text(doc.get("AgentID"))
        if name == "EventQueued":
            call.queued = moment
            call.queue = _text(doc.get("ThisQueue")) or _text(doc.get("ThisDN"))
            out.append(("call.queued", _drop_none(
                {"callId": call_id, "queue": call.queue, "caller": call.caller})))
        elif name == "EventEstablished":
            call.answered = True
            call.agent = agent or call.agent
        elif name == "EventDiverted":
            out.append(("call.transferred", _drop_none({
                "callId": call_id,
                "target": _text(doc.get("OtherDN")),
                "queue": _text(doc.get("ThisQueue")) or call.queue,
                "agent": call.agent,
                "transferType": "diverted",
            })))
        elif name == "EventPartyChanged":
            out.append(("call.transferred", _drop_none({
                "callId": call_id,
                "target": _text(doc.get("ThisDN")),
                "queue": _text(doc.get("ThisQueue")) or call.queue,
                "agent": call.agent,
                "transferType": "transfer",
            })))
            call.agent = agent or call.agent
        elif name == "EventAbandoned" and not call.ended:
            call.ended = True
            waited_since = call.queued or call.started
            out.append(("call.abandoned", _drop_none({
                "callId": call_id,
                "caller": call.caller,
                "queue": _text(doc.get("ThisQueue")) or call.queue,
                "waitSeconds": _seconds(waited_since, moment),
            })))
            out.append(("call.ended", self._ended(call, call_id, moment, "abandoned")))
        elif name == "EventReleased" and not call.ended:
            if doc.get("ThirdPartyDNRole") not in TRANSFER_LEG:
                call.ended = True
                result = "completed" if call.answered else "unanswered"
                out.append(("call.ended", self._ended(call, call_id, moment, result)))
        return out

    def _started(self, call: Call, call_id: str, doc: dict[str, Any],
                 moment: datetime) -> dict[str, Any]:
        call.started = moment
        direction = str(doc.get("CallType", "")).lower()
        return _drop_none({
            "callId": call_id,
            "caller": _text(doc.get("ANI")),
            "called": _text(doc.get("DNIS")),
            "channel": "voice",
            "direction": direction if direction in ("inbound", "outbound") else None,
        })

    def _ended(self, call: Call, call_id: str, moment: datetime, result: str) -> dict[str, Any]:
        return _drop_none({
            "callId": call_id,
            "caller": call.caller,
            "called": call.called,
            "agent": call.agent,
            "durationSeconds": _seconds(call.started, moment),
            "result": result,
        })


#: A canonical event before it is an Event: its type and its data.
Canonical = tuple[str, dict[str, Any]]

_KEY_FIELD = {
    "agent.state_changed": "agentId",
    "device.status_changed": "deviceId",
    "call.started": "callId",
    "call.queued": "callId",
    "call.transferred": "callId",
    "call.abandoned": "callId",
    "call.ended": "callId",
}


def event_time(doc: dict[str, Any], kafka_timestamp: int | None) -> datetime | None:
    """The payload's T-Library time, else any timestamp in ``time``, else the record's."""
    stamp = doc.get("time")
    if isinstance(stamp, dict):
        seconds = stamp.get("TimeinSecs")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            moment = parse_timestamp(seconds, unit="s")
            micros = stamp.get("TimeinuSecs")
            if moment is not None and isinstance(micros, int) and 0 <= micros < 1_000_000:
                moment = moment.replace(microsecond=micros)  # whole seconds before this
            if moment is not None:
                return moment
    elif stamp is not None:
        moment = parse_timestamp(stamp)
        if moment is not None:
            return moment
    if kafka_timestamp is not None and kafka_timestamp >= 0:
        return parse_timestamp(kafka_timestamp, unit="ms")
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return str(value)


def _reason(reasons: Any) -> str | None:
    if isinstance(reasons, dict):
        code = reasons.get("ReasonCode")
        if code is None and len(reasons) == 1:
            code = next(iter(reasons.values()))
        return _text(code)
    return _text(reasons)


def _seconds(since: datetime | None, until: datetime) -> float | None:
    if since is None:
        return None
    return round(max(0.0, (until - since).total_seconds()), 3)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
