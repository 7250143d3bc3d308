"""The event envelope every source produces and every rule reads.

Attribute names follow CloudEvents 1.0 so an event can leave the bus (a
webhook, a log line, a file) in a format other tools already read:

``id``, ``source``, ``type``, ``time``, ``subject``, ``data``, plus the
extensions ``vendor`` and ``receivedat`` and whatever a plugin adds in
``extensions``.

``type`` is ``<vendor>.<native name>`` for vendor events (``cvp.call.ended``,
``genesys.EventAbandoned``) and a bare canonical name (``call.ended``) for the
canonical events listed in :data:`CANONICAL_EVENTS`, which vendor plugins emit
in addition to the native ones so that one rule can serve every vendor.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "CANONICAL_EVENTS",
    "CanonicalEvent",
    "Event",
    "EventField",
    "parse_timestamp",
]


def _new_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class Event:
    """One event on the bus.

    ``time`` is the vendor's timestamp when it could be parsed and is
    plausible, else the receive time (see :func:`parse_timestamp`); the raw
    value is never lost because ``data`` keeps the vendor payload untouched.
    """

    type: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    subject: str | None = None
    time: datetime = field(default_factory=_utcnow)
    vendor: str = "ccbus"
    receivedat: datetime = field(default_factory=_utcnow)
    extensions: dict[str, Any] = field(default_factory=dict)

    def to_cloudevent(self) -> dict[str, Any]:
        """The structured-mode CloudEvents JSON document for this event."""
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": _isoformat(self.time),
            "datacontenttype": "application/json",
            "vendor": self.vendor,
            "receivedat": _isoformat(self.receivedat),
            "data": self.data,
        }
        if self.subject is not None:
            doc["subject"] = self.subject
        for key, value in self.extensions.items():
            doc.setdefault(key, value)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, default_source: str) -> Event:
        """Build an event from a CloudEvents-like dict (a replay line, an inbound webhook).

        Only ``type`` is required. Unknown top-level keys become extensions,
        so nothing a sender put in the document is dropped.
        """
        if not isinstance(doc, dict):
            raise ValueError(f"an event must be a JSON object, not {type(doc).__name__}")
        event_type = doc.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("an event needs a non-empty string 'type'")
        data = doc.get("data", {})
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"'data' must be a JSON object, not {type(data).__name__}")
        received = _utcnow()
        known = {
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "subject",
            "data",
            "datacontenttype",
            "vendor",
            "receivedat",
        }
        subject = doc.get("subject")
        return cls(
            type=event_type,
            source=str(doc.get("source") or default_source),
            data=data,
            id=str(doc["id"]) if doc.get("id") not in (None, "") else _new_id(),
            subject=str(subject) if subject is not None else None,
            time=parse_timestamp(doc.get("time")) or received,
            vendor=str(doc.get("vendor") or event_type.split(".", 1)[0]),
            receivedat=received,
            extensions={k: v for k, v in doc.items() if k not in known},
        )


def _isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------
# Timestamps

#: Anything before this is a placeholder (``0001-01-01T00:00:00``), not a time.
_EARLIEST_PLAUSIBLE = datetime(1971, 1, 1, tzinfo=UTC)
#: Anything after this is a sentinel (Java's Long.MAX_VALUE millis), not a time.
_LATEST_PLAUSIBLE = datetime(2400, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_SECONDS = int((_EARLIEST_PLAUSIBLE - _EPOCH).total_seconds())
_LATEST_SECONDS = int((_LATEST_PLAUSIBLE - _EPOCH).total_seconds())
#: Below 2**31 s (2038), a double holds seconds to 0.24 µs, so ``ms / 1000`` rounds back
#: to the exact millisecond; later milliseconds take the exact integer path.
_FLOAT_EXACT_MS = 2**31 * 1000
_EARLIEST_MS = _EARLIEST_SECONDS * 1000
_ISO_FRACTION = re.compile(r"(\.\d+)")
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


def parse_timestamp(value: Any, *, unit: str = "auto") -> datetime | None:
    """Parse a vendor timestamp into an aware UTC datetime, or ``None`` for "unknown".

    Vendor documents show every one of these, and none may stop the bus:

    * ISO 8601 with ``Z``, an offset or no zone (taken as UTC), with any
      number of fraction digits (.NET sends seven; Python takes six);
    * ``0001-01-01T00:00:00`` (.NET's ``DateTime.MinValue``) meaning "not set";
    * epoch milliseconds as a number or numeric string, including
      ``9223372036854776000`` (Java's ``Long.MAX_VALUE`` as a JSON double)
      meaning "never";
    * epoch seconds, when ``unit="s"`` (``"auto"`` takes numbers below 10**11
      as seconds and larger ones as milliseconds).

    Returns ``None`` rather than raising for anything unparseable or outside
    1971..2400, so the caller can fall back to the receive time.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC) if _plausible(moment) else None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _NUMERIC.match(text):
            if len(text) > 40:  # no time has that many digits (and int() refuses > 4300)
                return None
            return _from_number(float(text) if "." in text else int(text), unit)
        return _from_iso(text)
    if isinstance(value, int | float):
        return _from_number(value, unit)
    return None


def _from_number(number: float, unit: str) -> datetime | None:
    if isinstance(number, float) and not math.isfinite(number):
        return None
    if unit == "auto":
        unit = "s" if abs(number) < 10**11 else "ms"
    if type(number) is int:  # the usual cases first: whole seconds or milliseconds of now
        if unit == "s" and _EARLIEST_SECONDS <= number <= _LATEST_SECONDS:
            return datetime.fromtimestamp(number, UTC)
        if unit == "ms" and _EARLIEST_MS <= number < _FLOAT_EXACT_MS:
            return datetime.fromtimestamp(number / 1000, UTC)
    try:
        if isinstance(number, int):  # exact: no detour through float for big millis
            whole, part = divmod(number, 1000) if unit == "ms" else (number, 0)
            moment = _EPOCH + timedelta(seconds=whole, milliseconds=part)
        else:
            moment = _EPOCH + timedelta(seconds=number / 1000 if unit == "ms" else number)
    except (OverflowError, ValueError):  # Long.MAX_VALUE and beyond: "never", not a time
        return None
    return moment if _plausible(moment) else None


def _from_iso(text: str) -> datetime | None:
    try:
        # Python 3.11+ reads the usual forms whole (``Z``, offsets, .NET's seven
        # fraction digits) in well under a microsecond: the path of nearly every event
        moment = datetime.fromisoformat(text)
    except ValueError:
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # normalise the fraction to six digits for what the fast path refused
        text = _ISO_FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], text, count=1)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC) if _plausible(moment) else None


def _plausible(moment: datetime) -> bool:
    try:
        return _EARLIEST_PLAUSIBLE <= moment <= _LATEST_PLAUSIBLE
    except TypeError:
        return False


# --------------------------------------------------------------------------
# Canonical events: documented here, once.


@dataclass(frozen=True, slots=True)
class EventField:
    """One field of a canonical event's ``data``."""

    name: str
    type: str
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """A vendor-neutral event type; ``subject`` is always the ``key`` field."""

    type: str
    description: str
    key: str
    fields: tuple[EventField, ...]


def _f(name: str, type_: str, description: str, required: bool = False) -> EventField:
    return EventField(name, type_, description, required)


_CALL_ID = _f("callId", "str", "The vendor's call (or engagement/thread) id.", True)
_CALLER = _f("caller", "str", "Calling number (ANI) or address.")
_CALLED = _f("called", "str", "Called number (DNIS) or address.")
_QUEUE = _f("queue", "str", "Queue, skill group or service the call is in.")
_AGENT = _f("agent", "str", "Agent id or extension handling the call.")
_CHANNEL = _f("channel", "str", "Media channel: voice, chat, email, ...; voice when unknown.")

CANONICAL_EVENTS: dict[str, CanonicalEvent] = {
    e.type: e
    for e in (
        CanonicalEvent(
            "call.started",
            "A call (engagement) arrived or was placed.",
            "callId",
            (_CALL_ID, _CALLER, _CALLED, _CHANNEL, _f("direction", "str", "inbound or outbound.")),
        ),
        CanonicalEvent(
            "call.queued",
            "A call entered a queue to wait for an agent.",
            "callId",
            (
                _CALL_ID,
                _QUEUE,
                _CALLER,
                _f("position", "int", "Position in queue, when the vendor says."),
            ),
        ),
        CanonicalEvent(
            "call.transferred",
            "A call moved to another agent, queue, number or application.",
            "callId",
            (
                _CALL_ID,
                _f("target", "str", "Where the call went."),
                _QUEUE,
                _AGENT,
                _f("transferType", "str", "blind, consult, overflow, ... as the vendor says."),
            ),
        ),
        CanonicalEvent(
            "call.abandoned",
            "The caller hung up before being answered.",
            "callId",
            (_CALL_ID, _CALLER, _QUEUE, _f("waitSeconds", "float", "How long the caller waited.")),
        ),
        CanonicalEvent(
            "call.ended",
            "A call ended, whatever its outcome.",
            "callId",
            (
                _CALL_ID,
                _CALLER,
                _CALLED,
                _AGENT,
                _f("durationSeconds", "float", "Total call duration."),
                _f(
                    "result",
                    "str",
                    "completed, abandoned, transferred, failed or the vendor's own.",
                ),
            ),
        ),
        CanonicalEvent(
            "agent.state_changed",
            "An agent's availability changed.",
            "agentId",
            (
                _f("agentId", "str", "The vendor's agent (user) id.", True),
                _f(
                    "state",
                    "str",
                    "available, busy, not_ready, after_call_work, logged_in, logged_out, unknown.",
                    True,
                ),
                _f("nativeState", "str", "The vendor's own state name."),
                _f("reason", "str", "Not-ready or logout reason, when given."),
            ),
        ),
        CanonicalEvent(
            "queue.status",
            "A snapshot of a queue's load.",
            "queueId",
            (
                _f("queueId", "str", "The vendor's queue id.", True),
                _f("name", "str", "Queue name."),
                _f("waiting", "int", "Calls waiting."),
                _f("agentsAvailable", "int", "Agents ready to take a call."),
                _f("longestWaitSeconds", "float", "Longest current wait."),
            ),
        ),
        CanonicalEvent(
            "system.alert",
            "Something in the platform needs attention.",
            "component",
            (
                _f("component", "str", "Host, service or component raising the alert.", True),
                _f("severity", "str", "critical, major, minor, warning or info.", True),
                _f("message", "str", "Human-readable description."),
                _f("metric", "str", "Threshold alerts: the metric."),
                _f("value", "float", "Threshold alerts: the current value."),
                _f("threshold", "float", "Threshold alerts: the limit crossed."),
            ),
        ),
        CanonicalEvent(
            "device.status_changed",
            "A device (gateway, server, phone) changed state.",
            "deviceId",
            (
                _f("deviceId", "str", "Device name or id.", True),
                _f("status", "str", "up, down, degraded or unknown (the only values).", True),
                _f("previousStatus", "str", "The status before (same values), when known."),
                _f("nativeStatus", "str", "The vendor's own name of the new status."),
                _f("deviceType", "str", "Gateway, server, phone, ... as the vendor says."),
            ),
        ),
    )
}
